"""Reference outputs of the real super-gradients 3.7.1 YOLO-NAS, for the nasjax tests.

Runs only in the separate super-gradients environment (see /work/shared/oracle/README.md), never in
the project's own environment; the files it writes (`tests/reference/*.npz`, `*.keys.txt`) are
committed so that the test suite needs neither torch nor super-gradients.

How to run (from the repository root):

    CRASH_HANDLER=FALSE SUPER_GRADIENTS_LOG_DIR=$(mktemp -d) \
        /work/oracle_venv/bin/python tests/reference/make_reference.py [--variants yolo_nas_s ...] \
        [--whole-model-dir DIR]

What it does, per variant in `sampling.CASES`:

a. For each form in `sampling.FORMS` ("training" as built; "partial" / "full" = `partial_fusion()` /
   `full_fusion()` on every QARepVGGBlock): writes the state-dict listing
   `<variant>.<form>.keys.txt` (`key<TAB>shape<TAB>dtype`, checked against the shared listings when
   /work/shared is present), loads `deterministic_state_dict(keys, WEIGHT_SEED)` strictly, and for
   each case saves `<variant>_<case>_<form>.npz` with outputs and sampled intermediates.
b. For each form in `sampling.FUSED_FROM_TRAINING`: fuses the model that holds the *training-form*
   deterministic weights with super-gradients' own fusion and saves
   `<variant>_<case>_training_fused_<form>.npz` (outputs only).

npz contents (float arrays float32 unless noted; NHWC / (B, N, ...) layouts):
  input_shape (B,H,W,3) int64; input_sum float64; weight_seed;
  boxes (B,N,4) xyxy pixels; scores_max (B,N); scores_argmax (B,N) int64;
  anchor_index = arange(0, N, anchor_stride(N)); cls_logits (B,n,80) (scores are their sigmoid),
  reg_distri (B,n,68) at those anchors;
  anchor_points (N,2), stride_tensor (N,1), anchors (N,4), num_anchors_list (3,) int64;
  direct forms only: feat/<name> = sample_feature(NHWC feature), featmean/<name> = per-channel mean
  over (B,H,W) (float64) for the names in FEATURE_MODULES.

`--whole-model-dir DIR` additionally writes `DIR/<variant>_whole_training.pt` (torch.save of the whole
training-form nn.Module with the deterministic weights, the same kind of file as Ultralytics'
yolo_nas_s.pt) and `DIR/<variant>_state_dict_training.pt`. Keep those out of the repository.
"""
from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SHARED_LISTINGS = Path("/work/shared/reference/state_dicts")
# Shared listing file suffix per form.
LISTING_SUFFIX = {"training": "training", "partial": "partially_fused", "full": "fully_fused"}


# Pure-numpy helpers shared with the tests, and tv_cpu_shim (before torchvision / super_gradients).
from oracle_env import deterministic_weights as dw, sampling  # noqa: E402
import torch  # noqa: E402
from super_gradients.modules.qarepvgg_block import QARepVGGBlock  # noqa: E402
from super_gradients.training import models  # noqa: E402

# Reference feature name -> super-gradients module whose forward output is captured.
# neck1/neck2 (YoloNASUpStage) return (x_inter, out); heads.headK (YoloNASDFLHead) return
# (reg_pred map, cls_pred map) — see dfl_heads.py YoloNASDFLHead.forward.
FEATURE_MODULES = {
    "backbone.stem": ("stem",),
    "backbone.stage1": ("stage1",),
    "backbone.stage2": ("stage2",),
    "backbone.stage3": ("stage3",),
    "backbone.stage4": ("stage4",),
    "backbone.context_module": ("context_module",),
    "neck.neck1": ("neck1_inter", "neck1_out"),
    "neck.neck2": ("neck2_inter", "neck2_out"),
    "neck.neck3": ("neck3",),
    "neck.neck4": ("neck4",),
    "heads.head1": ("head1_reg", "head1_cls"),
    "heads.head2": ("head2_reg", "head2_cls"),
    "heads.head3": ("head3_reg", "head3_cls"),
}


def build(variant: str) -> torch.nn.Module:
    return models.get(variant, num_classes=80).eval()


def fuse(model: torch.nn.Module, form: str) -> torch.nn.Module:
    """Bring every QARepVGGBlock into `form` with super-gradients' own methods (in place)."""
    if form == "training":
        return model
    blocks = [m for m in model.modules() if isinstance(m, QARepVGGBlock)]
    assert blocks, "no QARepVGGBlock found"
    for block in blocks:
        if form == "partial":
            block.partial_fusion()
        elif form == "full":
            block.full_fusion()  # runs partial_fusion() itself first when needed
        else:
            raise ValueError(form)
    for block in blocks:
        assert block.partially_fused == (form == "partial") and block.fully_fused == (form == "full")
    return model.eval()


def listing(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [
        (k, tuple(int(s) for s in v.shape), str(v.dtype).replace("torch.", ""))
        for k, v in model.state_dict().items()
    ]


def format_listing(rows) -> str:
    return "".join(f"{k}\t{shape}\t{dtype}\n" for k, shape, dtype in rows)


def write_and_check_listing(variant: str, form: str, rows) -> None:
    text = format_listing(rows)
    (HERE / f"{variant}.{form}.keys.txt").write_text(text)
    shared = SHARED_LISTINGS / f"{variant}.{LISTING_SUFFIX[form]}.txt"
    if shared.exists():
        assert shared.read_text() == text, f"state-dict listing of {variant}/{form} differs from {shared}"
        print(f"  {variant}.{form}: {len(rows)} keys, matches {shared.name}")
    else:
        warnings.warn(f"{shared} not found; listing of {variant}/{form} not cross-checked")


def load_deterministic(model: torch.nn.Module, rows, seed: int) -> None:
    arrays = dw.deterministic_state_dict({k: shape for k, shape, _ in rows}, seed=seed)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    model.load_state_dict(state, strict=True)
    model.eval()


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def run_case(model: torch.nn.Module, case: dict, intermediates: bool) -> dict[str, np.ndarray]:
    images = dw.seeded_images(**case)  # NHWC float32
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    captured: dict[str, torch.Tensor] = {}
    handles = []
    if intermediates:
        named = dict(model.named_modules())
        for module_name, feat_names in FEATURE_MODULES.items():
            def hook(_m, _inp, out, feat_names=feat_names):
                outs = out if isinstance(out, (tuple, list)) else (out,)
                assert len(outs) == len(feat_names), (feat_names, len(outs))
                for n, o in zip(feat_names, outs):
                    captured[n] = o.detach().clone()

            handles.append(named[module_name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            (pred_bboxes, pred_scores), raw = model(x)
    finally:
        for h in handles:
            h.remove()
    cls_logits, reg_distri, anchors, anchor_points, num_anchors_list, stride_tensor = raw

    boxes = pred_bboxes.numpy().astype(np.float32)
    scores = pred_scores.numpy().astype(np.float32)
    n = scores.shape[1]
    idx = np.arange(0, n, sampling.anchor_stride(n))
    out = {
        "input_shape": np.asarray(images.shape, dtype=np.int64),
        "input_sum": np.float64(images.sum(dtype=np.float64)),
        "weight_seed": np.int64(sampling.WEIGHT_SEED),
        "boxes": boxes,
        "scores_max": scores.max(axis=-1),
        "scores_argmax": scores.argmax(axis=-1).astype(np.int64),
        "anchor_index": idx.astype(np.int64),
        "cls_logits": cls_logits.numpy().astype(np.float32)[:, idx],
        "reg_distri": reg_distri.numpy().astype(np.float32)[:, idx],
        "anchor_points": anchor_points.numpy().astype(np.float32),
        "stride_tensor": stride_tensor.numpy().astype(np.float32),
        "anchors": anchors.numpy().astype(np.float32),
        "num_anchors_list": np.asarray([int(v) for v in num_anchors_list], dtype=np.int64),
    }
    assert out["num_anchors_list"].sum() == n and boxes.shape == (images.shape[0], n, 4)
    if intermediates:
        for feat_names in FEATURE_MODULES.values():
            for name in feat_names:
                f = nhwc(captured[name])
                out[f"feat/{name}"] = np.ascontiguousarray(sampling.sample_feature(f))
                out[f"featmean/{name}"] = f.astype(np.float64).mean(axis=(0, 1, 2))
    return out


def summarize(tag: str, out: dict) -> None:
    s = out["scores_max"]
    print(
        f"    {tag}: N={s.shape[1]} scores_max [{s.min():.4g}, {s.max():.4g}] "
        f">0.25: {int((s > 0.25).sum())} boxes [{out['boxes'].min():.1f}, {out['boxes'].max():.1f}]"
    )


def max_diff(a: dict, b: dict) -> str:
    keys = ("boxes", "scores_max", "cls_logits", "reg_distri")
    return " ".join(f"{k} {np.abs(a[k].astype(np.float64) - b[k]).max():.2e}" for k in keys)


def make_variant(variant: str, whole_model_dir: Path | None) -> None:
    print(f"== {variant}")
    cases = sampling.CASES[variant]
    direct: dict[tuple[str, str], dict] = {}
    training_model = None
    for form in sampling.FORMS:
        model = fuse(build(variant), form)
        rows = listing(model)
        write_and_check_listing(variant, form, rows)
        load_deterministic(model, rows, sampling.WEIGHT_SEED)
        for case_name, case in cases:
            out = run_case(model, case, intermediates=True)
            np.savez_compressed(HERE / f"{variant}_{case_name}_{form}.npz", **out)
            direct[(case_name, form)] = out
            summarize(f"{case_name}/{form}", out)
        if form == "training":
            training_model = model
        else:
            del model

    if whole_model_dir is not None:
        whole_model_dir.mkdir(parents=True, exist_ok=True)
        torch.save(training_model, whole_model_dir / f"{variant}_whole_training.pt")
        torch.save(training_model.state_dict(), whole_model_dir / f"{variant}_state_dict_training.pt")
        if variant == "yolo_nas_s":
            # What `models.get(..., pretrained_weights="coco")` attaches and the Ultralytics .pt carries:
            # class names, 636/640/114 processing and NMS defaults (read back by converters.weight_file).
            from super_gradients.training.processing.processing import default_yolo_nas_coco_processing_params

            with_processing = copy.deepcopy(training_model)
            with_processing.set_dataset_processing_params(**default_yolo_nas_coco_processing_params())
            torch.save(with_processing, whole_model_dir / f"{variant}_whole_coco_processing.pt")
        print(f"  saved whole model and state dict to {whole_model_dir}")

    for form in sampling.FUSED_FROM_TRAINING:
        model = fuse(copy.deepcopy(training_model), form)
        for case_name, case in cases:
            out = run_case(model, case, intermediates=False)
            np.savez_compressed(HERE / f"{variant}_{case_name}_training_fused_{form}.npz", **out)
            summarize(f"{case_name}/training_fused_{form}", out)
            print(f"      vs training: {max_diff(out, direct[(case_name, 'training')])}")
        del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(sampling.CASES), choices=list(sampling.CASES))
    parser.add_argument("--whole-model-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for variant in args.variants:
        make_variant(variant, args.whole_model_dir)
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    print(f"total size of {HERE}: {total / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
