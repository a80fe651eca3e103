"""Any YOLO-NAS weight file → a reference state dict plus what the file says about the model.

    wf = read_weight_file("yolo_nas_s.pt")
    detector = nasjax.from_state_dict(wf.state_dict, wf.variant, class_names=wf.class_names)

Formats, told apart by content rather than by file name:

* `ultralytics_whole_model`: a pickled super-gradients `YoloNAS_S/M/L` module (Ultralytics'
  `yolo_nas_{s,m,l}.pt`, or any `torch.save(model)`); besides the tensors it carries the class names,
  the pre-processing pipeline and the NMS defaults;
* `sg_checkpoint`: a super-gradients checkpoint dict (`net`, or `ema_net` when present, plus `epoch`,
  `acc`, `processing_params`, ...);
* `state_dict`: `torch.save(model.state_dict())`;
* `safetensors`.

Pickled files go through `converters.torch_pickle`, which neither imports torch nor runs anything the
file names. All three QARepVGG forms are accepted; the form, class count and (when the file does not
name its class) the variant come from the tensors themselves.
"""
from __future__ import annotations

import hashlib
import itertools
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, which safetensors' numpy API needs)
import numpy as np
from nasjax.converters import torch_pickle
from nasjax.converters.limits import (
    MAX_NUM_CLASSES,
    PLAIN_MAX_ARRAY,
    PLAIN_MAX_DEPTH,
    PLAIN_MAX_ITEMS,
)
from nasjax.converters.torch_pickle import (
    StandIn,
    UnsafeFileError,
    WeightFileError,
    qualified_name,
)

SOURCE_FORMATS = ("ultralytics_whole_model", "sg_checkpoint", "state_dict", "safetensors")

# Root classes of pickled whole models (super_gradients...yolo_nas_variants.YoloNAS_S etc.).
_ROOT_CLASSES = {"YoloNAS_S": "yolo_nas_s", "YoloNAS_M": "yolo_nas_m", "YoloNAS_L": "yolo_nas_l"}
# CustomizableDetector attributes → metadata["nms"] keys; the last four exist only in newer
# super-gradients (3.7.1), the Ultralytics files (pickled by <= 3.1.2) lack them.
_NMS_ATTRIBUTES = {
    "_default_nms_iou": "iou",
    "_default_nms_conf": "conf",
    "_default_nms_top_k": "top_k",
    "_default_max_predictions": "max_predictions",
    "_default_multi_label_per_box": "multi_label_per_box",
    "_default_class_agnostic_nms": "class_agnostic_nms",
}
_HEAD_ATTRIBUTES = ("fpn_strides", "reg_max", "grid_cell_offset", "grid_cell_scale", "num_classes")
_QAREPVGG_FLAGS = ("partially_fused", "fully_fused")
_HASH_CHUNK_BYTES = 4 << 20
# The classification weights of the three heads: their first dimension is the class count.
_CLASS_TENSORS = tuple(f"heads.head{i}.cls_pred.{p}" for i in (1, 2, 3) for p in ("weight", "bias"))


@dataclass(frozen=True, eq=False)  # no field-wise ==: comparing dicts of arrays has no single truth value
class WeightFile:
    """A weight file's tensors and what it says about the model.

    state_dict: super-gradients tensor names → numpy arrays (PyTorch layouts), ready for
        `nasjax.from_state_dict`.
    form: 'training', 'partial' or 'full' (the QARepVGG form the tensors are in).
    variant: 'yolo_nas_s' / '_m' / '_l', from the pickled class or else from the tensor shapes.
    class_names: from the file when it has them (whole models, checkpoints with processing params).
    source_format: one of `SOURCE_FORMATS`.
    metadata: plain Python values, each key only when the file has it:
        'nms' ({'iou', 'conf'} and, from newer super-gradients, 'top_k', 'max_predictions',
        'multi_label_per_box', 'class_agnostic_nms'); 'processing' ([{'type': ..., params}, ...]);
        whole models: 'root_class', 'sg_model_name', 'head' ({'fpn_strides', 'reg_max', ...}),
        'qarepvgg_flags' ({block path: {'partially_fused', 'fully_fused'}});
        checkpoints: 'checkpoint' ({'weights_key', 'keys', 'epoch', 'acc', 'metrics', 'packages'}),
        'processing_params'; safetensors: 'safetensors_metadata'; 'stripped_prefix' ('module.').
    sha256: hex digest of the file's bytes, to compare with a published checksum.
    """

    state_dict: dict[str, np.ndarray] = field(repr=False)
    form: str
    variant: str
    num_classes: int
    class_names: list[str] | None
    source_format: str
    metadata: dict = field(repr=False)
    sha256: str


def read_weight_file(path) -> WeightFile:
    """Read a YOLO-NAS weight file of any supported format (see the module docstring).

    Raises `UnsafeFileError` when a pickle asks to run something outside the reader's allow-list, and
    `WeightFileError` for everything else that is wrong (unreadable, not a weight file, truncated,
    another model's weights); both are ValueErrors and name the file.
    """
    path = Path(path)
    size = torch_pickle.regular_file_size(path)  # a FIFO, a symlink loop, a directory: said as such
    if size == 0:
        raise WeightFileError(f"{path} is empty (0 bytes): the download or save did not complete; fetch it again")
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Hash while parsing: hashlib and file reads release the GIL, so on a machine with a spare
        # core the checksum costs no wall time (on a saturated one it adds ~0.9 s per GB).
        digest = pool.submit(_sha256, path)
        try:
            state_dict, source_format, root_variant, class_names, metadata = _read(path, size)
            _check_class_count(state_dict, class_names, path)
            form, variant, num_classes = _identify(state_dict, root_variant, metadata, path)
        except (WeightFileError, MemoryError):
            raise
        except Exception as error:  # the content is untrusted: any other failure means a malformed file
            raise WeightFileError(
                f"{path}: unexpected content ({type(error).__name__}: {str(error)[:200]}); "
                "the file is corrupt or not a YOLO-NAS weight file"
            ) from error
        sha256 = digest.result()
    return WeightFile(
        state_dict=state_dict,
        form=form,
        variant=variant,
        num_classes=num_classes,
        class_names=class_names,
        source_format=source_format,
        metadata=metadata,
        sha256=sha256,
    )


def _sha256(path: Path) -> str:
    # Large chunks: each one costs the parsing thread a GIL hand-over, so few are better.
    digest, buffer = hashlib.sha256(), bytearray(_HASH_CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while count := f.readinto(view):
            digest.update(view[:count])
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Formats


def _read(path: Path, size: int):
    """(state_dict, source_format, variant named by the file or None, class_names, metadata)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if zipfile.is_zipfile(path):
        return _interpret_pickle(torch_pickle.load(path), path)
    if _looks_like_safetensors(head, size):
        return _read_safetensors(path)
    problem = _recognise_other_format(head, size)
    if problem:
        raise WeightFileError(f"{path} is not a weight file: {problem}")
    try:  # a bare pickle (protocol 2+ starts with 0x80; older protocols with almost anything)
        obj = torch_pickle.load(path)
    except UnsafeFileError:
        raise
    except WeightFileError as error:
        if head[:1] == b"\x80":
            raise
        raise WeightFileError(
            f"{path} is not a weight file: unrecognised content ({size} bytes, starting {head[:16]!r}); "
            "expected a PyTorch .pt/.pth file (zip archive) or .safetensors"
        ) from error
    return _interpret_pickle(obj, path)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    header_length = int.from_bytes(head[:8], "little")
    return len(head) > 8 and head[8:9] == b"{" and 8 + header_length <= size


def _recognise_other_format(head: bytes, size: int) -> str | None:
    """What a file that is certainly not a weight file looks like, so the message says what to do."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:200]:
        return (
            f"it is an HTML page ({size} bytes), probably an error or login page saved instead of the "
            "weights; download the file again from a direct link"
        )
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file itself; run `git lfs pull` or download the file directly"
    if head.startswith(b"PK\x03\x04"):
        return f"it starts like a zip archive but has no end-of-archive record ({size} bytes): truncated; download it again"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed; decompress it first"
    if head[8:9] == b"{":  # a complete one was recognised before this
        return "it starts like a safetensors file but is shorter than its header says: truncated; download it again"
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file (e.g. Keras .h5), not a PyTorch or safetensors file"
    if text.startswith((b"{", b"[")):
        return "it is JSON text, not tensors"
    return None


def _read_safetensors(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header_metadata = f.metadata() or {}
            state_dict = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, TypeError, ValueError, OSError) as error:
        raise WeightFileError(f"{path}: not a readable safetensors file ({error}); download or save it again") from error
    state_dict, metadata = _strip_module_prefix(state_dict, path)
    metadata["safetensors_metadata"] = dict(header_metadata)
    return state_dict, "safetensors", None, None, metadata


def _interpret_pickle(obj: Any, path: Path):
    if isinstance(obj, StandIn) and "_modules" in obj.__dict__:
        return _whole_model(obj, path)
    if isinstance(obj, Mapping) and ("net" in obj or "ema_net" in obj):
        return _checkpoint(obj, path)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        state_dict, metadata = _strip_module_prefix(obj, path)
        return state_dict, "state_dict", None, None, metadata
    raise WeightFileError(
        f"{path} holds {_what(obj)}: not a YOLO-NAS model, not a checkpoint (no 'net' entry) and not a "
        "state dict (not all values are tensors)"
    )


def _what(obj: Any) -> str:
    if isinstance(obj, StandIn):
        return f"a pickled {qualified_name(obj)} object"
    if isinstance(obj, Mapping):
        keys = [_key_text(k) for k in itertools.islice(obj, 8)]
        return f"a dict with keys {keys}{' ...' if len(obj) > 8 else ''}"
    return f"a {type(obj).__name__}"


def _key_text(key: Any) -> str:
    """A key from the file as text for a message: bounded, whatever the file put there."""
    return torch_pickle._short(key, 200) if not isinstance(key, str) or len(key) > 200 else key


def _whole_model(model: StandIn, path: Path):
    root = qualified_name(model)
    state_dict = _tensor_dict(torch_pickle.module_state_dict(model), path)
    attributes = model.__dict__
    metadata: dict[str, Any] = {"root_class": root}
    if "_sg_model_name" in attributes:
        metadata["sg_model_name"] = _plain(attributes["_sg_model_name"])
    nms = {key: _plain(attributes[name]) for name, key in _NMS_ATTRIBUTES.items() if name in attributes}
    if nms:
        metadata["nms"] = nms
    processing = _processing_steps(attributes.get("_image_processor"))
    if processing is not None:
        metadata["processing"] = processing
    head = _child(model, "heads")
    if head is not None:
        metadata["head"] = {name: _plain(head.__dict__[name]) for name in _HEAD_ATTRIBUTES if name in head.__dict__}
    flags = _qarepvgg_flags(model)
    if flags:
        metadata["qarepvgg_flags"] = flags
    return state_dict, "ultralytics_whole_model", _ROOT_CLASSES.get(root.rsplit(".", 1)[-1]), _names(
        attributes.get("_class_names"), path
    ), metadata


def _checkpoint(checkpoint: Mapping, path: Path):
    weights_key = "ema_net" if checkpoint.get("ema_net") is not None else "net"
    weights = checkpoint.get(weights_key)
    if isinstance(weights, StandIn):  # a checkpoint may hold the module itself
        weights = torch_pickle.module_state_dict(weights)
    if not isinstance(weights, Mapping) or not weights:
        raise WeightFileError(f"{path}: checkpoint entry {weights_key!r} is {_what(weights)}, not a state dict")
    state_dict, metadata = _strip_module_prefix(_tensor_dict(weights, path), path)
    summary: dict[str, Any] = {"weights_key": weights_key, "keys": [_key_text(k) for k in checkpoint]}
    for key in ("epoch", "acc", "metrics", "packages"):
        if key in checkpoint:
            summary[key] = _plain(checkpoint[key])
    metadata["checkpoint"] = summary
    class_names = None
    params = checkpoint.get("processing_params")
    if isinstance(params, Mapping):
        metadata["processing_params"] = _plain(params)
        class_names = _names(params.get("class_names"), path)
        nms = {key: _plain(params[key]) for key in ("iou", "conf") if key in params}
        if nms:
            metadata["nms"] = nms
        processing = _processing_steps(params.get("image_processor"))
        if processing is not None:
            metadata["processing"] = processing
    return state_dict, "sg_checkpoint", None, class_names, metadata


def _tensor_dict(tensors: Mapping, path: Path) -> dict[str, np.ndarray]:
    bad = [_key_text(k) for k, v in tensors.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise WeightFileError(f"{path}: entries {bad[:5]} of its state dict are not tensors")
    return {str(k): v for k, v in tensors.items()}


def _strip_module_prefix(state_dict: Mapping, path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Drop a `module.` prefix (DataParallel / DDP) when every key has it, as super-gradients does."""
    state_dict = _tensor_dict(state_dict, path)
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}, {"stripped_prefix": "module."}
    return state_dict, {}


# ---------------------------------------------------------------------------------------------
# Pickled attributes → plain metadata


def _child(module: StandIn, name: str) -> StandIn | None:
    children = module.__dict__.get("_modules")
    child = children.get(name) if isinstance(children, Mapping) else None
    return child if isinstance(child, StandIn) else None


def _qarepvgg_flags(model: StandIn) -> dict[str, dict[str, bool]]:
    """{block path: {'partially_fused': .., 'fully_fused': ..}} for every QARepVGGBlock that has them."""
    flags: dict[str, dict[str, bool]] = {}
    stack = [("", model, 0)]
    visited = 0
    while stack and visited < PLAIN_MAX_ITEMS:
        prefix, module, depth = stack.pop()
        visited += 1
        attributes = module.__dict__
        if qualified_name(module).endswith(".QARepVGGBlock"):
            found = {f: bool(attributes[f]) for f in _QAREPVGG_FLAGS if isinstance(attributes.get(f), bool)}
            if found:
                flags[prefix.rstrip(".")] = found
        children = attributes.get("_modules")
        if isinstance(children, Mapping) and depth < PLAIN_MAX_DEPTH * 4:
            for name, child in reversed(list(children.items())):
                if isinstance(child, StandIn):
                    stack.append((f"{prefix}{name}.", child, depth + 1))
    return flags


def _processing_steps(processor: Any) -> list[dict] | None:
    """super-gradients' ComposeProcessing as [{'type': 'DetectionLongestMaxSizeRescale',
    'output_shape': (636, 636)}, ...]; None when there is no pickled processor."""
    if not isinstance(processor, StandIn):
        return None
    steps = processor.__dict__.get("processings")
    if not isinstance(steps, (list, tuple)):
        return [_plain(processor)]
    budget = [PLAIN_MAX_ITEMS]  # one budget for all steps: a crafted list could hold a million
    return [_plain(step, 0, budget) for step in steps[:PLAIN_MAX_ITEMS]]


def _names(value: Any, path: Path) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):  # {index: name}, as Ultralytics keeps them
        value = [value[k] for k in sorted(value)] if all(isinstance(k, int) for k in value) else None
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise WeightFileError(f"{path}: its class names are {_what(value)}, not a list of strings")
    return list(value)


def _plain(value: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """Pickled attribute → plain Python (stand-ins become {'type': short class name, **attributes}),
    bounded in depth and size; small arrays become lists, large ones a short description."""
    budget = [PLAIN_MAX_ITEMS] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or depth > PLAIN_MAX_DEPTH:
        return "..."
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.size <= PLAIN_MAX_ARRAY and value.dtype.kind in "biuf":
            return value.tolist()
        return f"array(shape={value.shape}, dtype={value.dtype})"
    # Containers are cut at the remaining budget: visiting the rest would only yield "...".
    if isinstance(value, StandIn):
        items = itertools.islice(value.__dict__.items(), budget[0] + 1)
        attributes = {str(k): _plain(v, depth + 1, budget) for k, v in items if not str(k).startswith("_")}
        return {"type": type(value).__qualname__, **attributes}
    if isinstance(value, Mapping):
        items = itertools.islice(value.items(), budget[0] + 1)
        return {str(k) if not isinstance(k, (int, float, bool)) else k: _plain(v, depth + 1, budget) for k, v in items}
    if isinstance(value, tuple):
        return tuple(_plain(v, depth + 1, budget) for v in itertools.islice(value, budget[0] + 1))
    if isinstance(value, (list, set, frozenset)):
        return [_plain(v, depth + 1, budget) for v in itertools.islice(value, budget[0] + 1)]
    return f"<{type(value).__name__}>"


# ---------------------------------------------------------------------------------------------
# Which model


def _check_class_count(state_dict: dict[str, np.ndarray], class_names: list[str] | None, path: Path) -> None:
    """The class count decides the size of the model built from the file: refuse an implausible one
    before anything is built (a broadcast tensor can declare 10 million classes in a few bytes)."""
    counts = {name: state_dict[name].shape[0] for name in _CLASS_TENSORS if name in state_dict and state_dict[name].ndim}
    if class_names is not None:
        counts["its class names"] = len(class_names)
    for name, count in counts.items():
        if count > MAX_NUM_CLASSES:
            raise WeightFileError(
                f"{path}: {name} declares {count:,} classes, more than any plausible detector (the reader's limit "
                f"is {MAX_NUM_CLASSES:,}); the file is corrupt or crafted"
            )


def _identify(state_dict: dict[str, np.ndarray], root_variant: str | None, metadata: dict, path: Path):
    """(form, variant, num_classes) from the tensors; a pickled root class names the variant.

    The only step that needs the model: its tensor-name listing (nasjax.model.state_dict), imported here
    so that parsing a file needs neither jax nor flax."""
    from nasjax.model.state_dict import (
        StateDictError,
        detect_form,
        detect_num_classes,
        detect_variant,
    )

    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    try:
        form = detect_form(shapes)
        num_classes = detect_num_classes(shapes)
        variant = root_variant or detect_variant(shapes, form)
    except StateDictError as error:
        raise WeightFileError(f"{path} does not hold YOLO-NAS S/M/L weights: {error}") from error
    flagged = {_flags_form(f) for f in metadata.get("qarepvgg_flags", {}).values()}
    if flagged and flagged != {form}:
        raise WeightFileError(
            f"{path}: its QARepVGG blocks say {'/'.join(sorted(flagged))} form but its tensors are in the "
            f"{form} form; the file is inconsistent (blocks fused by hand?); re-export it with super-gradients"
        )
    return form, variant, num_classes


def _flags_form(flags: dict[str, bool]) -> str:
    if flags.get("fully_fused"):
        return "full"
    if flags.get("partially_fused"):
        return "partial"
    return "training"


__all__ = ["SOURCE_FORMATS", "UnsafeFileError", "WeightFile", "WeightFileError", "read_weight_file"]
