"""Real weight files written with torch, for the reader tests and the conversion benchmark.

torch is used only by the tests, to write files; the reader under test never imports it. Whole-model pickles need the
classes of super-gradients, which is not installed here: `fake_super_gradients()` registers stand-in
`torch.nn.Module` classes under the real module paths in `sys.modules` for the duration of a
`with` block, so that `torch.save(model)` writes the same globals as the real library does
(`super_gradients.training.models.detection_models.yolo_nas.yolo_nas_variants.YoloNAS_S`, ...).
`stand_in_model` then builds a module tree whose `state_dict()` has exactly the given reference keys,
plus what a real model carries besides: non-persistent `id_tensor` / `proj_conv` buffers, the head's
plain `grid` tensors, class names, the image processor and the NMS defaults.
"""
from __future__ import annotations

import contextlib
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import numpy as np
import safetensors.torch
import torch
from torch import nn

from nasjax.weights.coco import COCO_CLASS_NAMES

SG = "super_gradients"
YOLO_NAS = f"{SG}.training.models.detection_models.yolo_nas"
PROCESSING = f"{SG}.training.processing.processing"
# Stand-in nn.Module classes: (module path, class name), as docs/file_formats.md#whole-model lists them.
MODULE_CLASSES = [
    (f"{YOLO_NAS}.yolo_nas_variants", "YoloNAS_S"),
    (f"{YOLO_NAS}.yolo_nas_variants", "YoloNAS_M"),
    (f"{YOLO_NAS}.yolo_nas_variants", "YoloNAS_L"),
    (f"{SG}.modules.detection_modules", "NStageBackbone"),
    (f"{YOLO_NAS}.yolo_stages", "YoloNASStem"),
    (f"{YOLO_NAS}.yolo_stages", "YoloNASStage"),
    (f"{YOLO_NAS}.yolo_stages", "YoloNASCSPLayer"),
    (f"{YOLO_NAS}.yolo_stages", "YoloNASBottleneck"),
    (f"{YOLO_NAS}.yolo_stages", "YoloNASUpStage"),
    (f"{YOLO_NAS}.yolo_stages", "YoloNASDownStage"),
    (f"{YOLO_NAS}.yolo_stages", "SequentialWithIntermediates"),
    (f"{SG}.modules.skip_connections", "Residual"),
    (f"{SG}.modules.qarepvgg_block", "QARepVGGBlock"),
    (f"{SG}.modules.conv_bn_relu_block", "ConvBNReLU"),
    (f"{SG}.modules.conv_bn_act_block", "Conv"),
    (f"{SG}.training.models.detection_models.csp_darknet53", "SPP"),
    (f"{YOLO_NAS}.panneck", "YoloNASPANNeckWithC2"),
    (f"{YOLO_NAS}.dfl_heads", "NDFLHeads"),
    (f"{YOLO_NAS}.dfl_heads", "YoloNASDFLHead"),
]
PROCESSING_CLASSES = [
    "ComposeProcessing", "DetectionLongestMaxSizeRescale", "DetectionCenterPadding", "StandardizeImage", "ImagePermute",
]  # fmt: skip
ROOT_CLASS = {"yolo_nas_s": "YoloNAS_S", "yolo_nas_m": "YoloNAS_M", "yolo_nas_l": "YoloNAS_L"}
# What super-gradients' default_yolo_nas_coco_processing_params() attaches (docs/preprocessing.md#processing-params).
COCO_PROCESSING = [
    ("DetectionLongestMaxSizeRescale", {"output_shape": (636, 636)}),
    ("DetectionCenterPadding", {"output_shape": (640, 640), "pad_value": 114}),
    ("StandardizeImage", {"max_value": 255.0}),
    ("ImagePermute", {"permutation": (2, 0, 1)}),
]
COCO_NMS = {"iou": 0.7, "conf": 0.25}
# Detector attributes super-gradients 3.7.1 has and the Ultralytics files (pickled by <= 3.1.2) lack.
NEWER_SG_ATTRIBUTES = {
    "_default_nms_top_k": 1024,
    "_default_max_predictions": 300,
    "_default_multi_label_per_box": True,
    "_default_class_agnostic_nms": False,
}
QAREPVGG_CHILDREN = {"branch_3x3", "branch_1x1", "post_bn", "rbr_reparam"}


def _processing_init(self, **params):
    self.__dict__.update(params)


@contextlib.contextmanager
def fake_super_gradients():
    """Stand-in super-gradients classes under their real module paths; yields {class name: class}."""
    modules: dict[str, types.ModuleType] = {}

    def module(name: str) -> types.ModuleType:
        if name not in modules:
            modules[name] = types.ModuleType(name)
            if "." in name:
                parent, _, child = name.rpartition(".")
                setattr(module(parent), child, modules[name])
        return modules[name]

    classes: dict[str, type] = {}
    for path, name in MODULE_CLASSES:
        classes[name] = type(name, (nn.Module,), {"__module__": path})
        setattr(module(path), name, classes[name])
    for name in PROCESSING_CLASSES:
        classes[name] = type(name, (), {"__module__": PROCESSING, "__init__": _processing_init})
        setattr(module(PROCESSING), name, classes[name])
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield classes
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def coco_image_processor(classes: dict[str, type]):
    return classes["ComposeProcessing"](processings=[classes[name](**params) for name, params in COCO_PROCESSING])


def _container_class(path: str, children: list[str], classes: dict[str, type]) -> type:
    """The super-gradients class that sits at `path` in a YOLO-NAS module tree."""
    last = path.rsplit(".", 1)[-1]
    if QAREPVGG_CHILDREN & set(children):
        return classes["QARepVGGBlock"]
    if children and all(c.isdigit() for c in children):
        return nn.ModuleList
    if last == "seq":
        return nn.Sequential
    by_path = {"backbone": "NStageBackbone", "backbone.stem": "YoloNASStem", "backbone.context_module": "SPP",
               "neck": "YoloNASPANNeckWithC2", "neck.neck1": "YoloNASUpStage", "neck.neck2": "YoloNASUpStage",
               "neck.neck3": "YoloNASDownStage", "neck.neck4": "YoloNASDownStage", "heads": "NDFLHeads"}  # fmt: skip
    if path in by_path:
        return classes[by_path[path]]
    parent = path.rpartition(".")[0]
    if parent == "backbone" and last.startswith("stage"):
        return classes["YoloNASStage"]
    if parent == "heads":
        return classes["YoloNASDFLHead"]
    if last == "blocks":
        return classes["YoloNASCSPLayer"]
    if parent.endswith(".bottlenecks"):
        return classes["YoloNASBottleneck"]
    if "seq" in children:
        return classes["ConvBNReLU"]
    return classes["Conv"]


def _leaf_module(path: str, leaves: Mapping[str, np.ndarray]) -> nn.Module | None:
    """torch's own BatchNorm2d / Conv2d / ConvTranspose2d where the tensors say that is what it is."""
    weight = leaves.get("weight")
    # On the meta device: no random initialisation; `load_state_dict(assign=True)` puts the real tensors in.
    if "running_mean" in leaves:
        return nn.BatchNorm2d(weight.shape[0], device="meta")
    if weight is not None and weight.ndim == 4 and set(leaves) <= {"weight", "bias"}:
        kernel, bias = weight.shape[2:], "bias" in leaves
        if path.endswith("upsample"):
            return nn.ConvTranspose2d(weight.shape[0], weight.shape[1], kernel, stride=2, bias=bias, device="meta")
        return nn.Conv2d(weight.shape[1], weight.shape[0], kernel, bias=bias, device="meta")
    return None


def stand_in_model(
    classes: dict[str, type],
    variant: str,
    state_dict: Mapping[str, np.ndarray],
    form: str,
    *,
    newer_sg: bool = True,
) -> nn.Module:
    """A module tree whose `state_dict()` is `state_dict` (reference names, any form), dressed like a
    super-gradients detector. `newer_sg=False` leaves out the attributes that super-gradients <= 3.1
    did not have (3.7.1 NMS fields, QARepVGG fusion flags), as in the Ultralytics files."""
    children: dict[str, list[str]] = {"": []}
    leaves: dict[str, dict[str, np.ndarray]] = {"": {}}
    for name, array in state_dict.items():
        parts = name.split(".")
        for depth in range(len(parts) - 1):
            parent, child = ".".join(parts[:depth]), ".".join(parts[: depth + 1])
            if child not in children:
                children[child], leaves[child] = [], {}
                children[parent].append(parts[depth])
        leaves[".".join(parts[:-1])][parts[-1]] = array

    def build(path: str) -> nn.Module:
        module = None if children[path] else _leaf_module(path, leaves[path])
        if module is None:
            module = classes[ROOT_CLASS[variant]]() if path == "" else _container_class(path, children[path], classes)()
            for leaf, array in leaves[path].items():
                module.register_parameter(leaf, nn.Parameter(torch.empty(np.shape(array), device="meta")))
        for child in children[path]:
            module.add_module(child, build(f"{path}.{child}" if path else child))
        return module

    model = build("")
    model.load_state_dict(torch_state_dict(state_dict), strict=True, assign=True)
    _dress(model, classes, form, newer_sg)
    return model.eval()


def _dress(model: nn.Module, classes, form: str, newer_sg: bool) -> None:
    """The non-state-dict parts of a super-gradients detector, with the COCO processing params."""
    for module in model.modules():
        if isinstance(module, classes["QARepVGGBlock"]):
            if form == "training":
                out_channels, in_channels = module.branch_3x3.conv.weight.shape[:2]
                if out_channels == in_channels:  # blocks with an identity branch, as super-gradients builds them
                    module.register_buffer("id_tensor", torch.zeros(in_channels, in_channels, 3, 3), persistent=False)
            if newer_sg:
                module.partially_fused = form == "partial"
                module.fully_fused = form == "full"
    heads = model.heads
    heads.register_buffer("proj_conv", torch.linspace(0, 16, 17).reshape(1, 17, 1, 1), persistent=False)
    heads.fpn_strides, heads.reg_max, heads.grid_cell_offset = (8, 16, 32), 16, 0.5
    for name in ("head1", "head2", "head3"):
        getattr(heads, name).grid = torch.zeros(1)  # a plain tensor attribute, not a buffer
    model._class_names = COCO_CLASS_NAMES
    model._image_processor = coco_image_processor(classes)
    model._default_nms_iou, model._default_nms_conf = COCO_NMS["iou"], COCO_NMS["conf"]
    if newer_sg:
        for name, value in NEWER_SG_ATTRIBUTES.items():
            setattr(model, name, value)


def save_whole_model(path: Path, variant: str, state_dict: Mapping[str, np.ndarray], form: str, **options) -> Path:
    """`torch.save(model)` of a stand-in super-gradients detector (see `stand_in_model`)."""
    with fake_super_gradients() as classes:
        torch.save(stand_in_model(classes, variant, state_dict, form, **options), path)
    return path


def load_whole_model_with_torch(path: Path) -> nn.Module:
    """`torch.load(weights_only=False)` of a whole-model file, the stand-in classes standing in for
    super-gradients (what a user with super-gradients installed would run)."""
    with fake_super_gradients():
        return torch.load(path, weights_only=False)


def torch_state_dict(state_dict: Mapping[str, np.ndarray], prefix: str = "") -> OrderedDict:
    """Tensors sharing memory with the arrays (copied only when an array is read-only)."""
    arrays = ((k, np.asarray(v, order="C")) for k, v in state_dict.items())  # keeps 0-d arrays 0-d
    return OrderedDict((prefix + k, torch.from_numpy(v if v.flags.writeable else v.copy())) for k, v in arrays)


def save_state_dict(path: Path, state_dict: Mapping[str, np.ndarray], prefix: str = "") -> Path:
    """`torch.save(model.state_dict())`; `prefix="module."` gives what DataParallel models save."""
    torch.save(torch_state_dict(state_dict, prefix), path)
    return path


def save_checkpoint(
    path: Path,
    net: Mapping[str, np.ndarray],
    ema_net: Mapping[str, np.ndarray] | None = None,
    prefix: str = "",
    processing_params: bool = False,
) -> Path:
    """A super-gradients Trainer checkpoint: `net`, optionally `ema_net`, and the usual extras."""
    checkpoint = {
        "net": torch_state_dict(net, prefix),
        "acc": torch.tensor(0.4751),
        "epoch": 299,
        "metrics": {"mAP@0.50:0.95": torch.tensor(0.4751)},
        "packages": {"torch": torch.__version__, "super-gradients": "3.7.1"},
        "optimizer_state_dict": {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.01}]},
    }
    if ema_net is not None:
        checkpoint["ema_net"] = torch_state_dict(ema_net, prefix)
    if processing_params:
        with fake_super_gradients() as classes:
            checkpoint["processing_params"] = {
                "class_names": list(COCO_CLASS_NAMES),
                "image_processor": coco_image_processor(classes),
                **COCO_NMS,
            }
            torch.save(checkpoint, path)
    else:
        torch.save(checkpoint, path)
    return path


def save_safetensors(path: Path, state_dict: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    safetensors.torch.save_file(dict(torch_state_dict(state_dict)), str(path), metadata=metadata)
    return path


def save_plain_pickle(path: Path) -> Path:
    """A bare protocol-2 pickle (no zip, no tensors) of the containers checkpoints use."""
    obj = OrderedDict(
        epoch=3, names=["a", "b"], shape=(1, 2), flags={True, False}, frozen=frozenset({1}), blob=b"\x00\x01", rate=0.5
    )
    path.write_bytes(pickle.dumps({"meta": obj, "nested": [obj, [obj]]}, protocol=2))
    return path


def tiny_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same keys with every tensor shrunk to one element per axis: a whole-model file with the full
    module structure of a real one in a few hundred kilobytes (for fuzzing)."""
    return {k: np.ones((1,) * np.ndim(v), dtype=np.asarray(v).dtype) for k, v in state_dict.items()}


def write_torch_zip(path: Path, data_pkl: bytes, storages: Mapping[str, bytes] = {}, prefix: str = "archive/",
                    byteorder: str | None = "little") -> Path:  # fmt: skip
    """A zip laid out like torch.save's (`<prefix>data.pkl`, `<prefix>data/<key>`, `<prefix>byteorder`)
    around a hand-made pickle, for files torch itself would never write."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}byteorder", byteorder)
        for key, data in storages.items():
            zf.writestr(f"{prefix}data/{key}", data)
        zf.writestr(f"{prefix}version", "3\n")
    return path
