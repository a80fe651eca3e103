"""Reference outputs of super-gradients 3.7.1 `predict()`, its pre-processing, its NMS callback, and
OpenCV's INTER_LINEAR resize, for tests/preprocessing_test.py, tests/nms_test.py and
tests/predict_test.py.

Runs only in the separate super-gradients environment (see /work/shared/oracle/README.md):

    CRASH_HANDLER=FALSE SUPER_GRADIENTS_LOG_DIR=$(mktemp -d) \
        /work/oracle_venv/bin/python tests/reference/make_predict_reference.py [--assets DIR]

and writes tests/reference/predict_weights_overrides.npz and tests/reference/predict_reference.npz
(both committed; a few hundred KB).

The weights. `deterministic_state_dict` (seed WEIGHT_SEED, training form) has random BatchNorm
statistics that do not normalise anything: the scores come out nearly constant and do not depend on
the input (the class logits of any image equal those of a plain grey one to within 1 % of their
spread), so float32 rounding reorders near-tied candidates and no strict comparison is possible.
`calibrate` fixes that, LSUV-like, by re-estimating every BatchNorm's running statistics from one
train-mode forward pass (momentum None: a plain average) over CALIBRATION_IMAGES (generated, none of
them a predict case), with targets:

* every BatchNorm normalises its input to mean BN_MEAN and standard deviation 1. Not mean 0: a random
  ReLU network whose activations are centred is chaotic — an image unlike the calibration batch
  (any real photograph) comes out with activations 10-40 times larger at the heads, so no single class
  bias gives a sane number of candidates for every image. With most ReLUs in their linear range the
  class logits of generated and real images have the same spread within ~10 %, and they depend on
  the input (they differ from those of a plain grey image by 94-99 % of their spread);
* the last BatchNorm of each head's class and box branches: mean 0, standard deviation CLS_BN_STD
  and REG_BN_STD, so that class logits spread over a few units (no saturated sigmoids) and DFL logits
  over a couple (float32 rounding of the network, ~2e-6 of the logits' scale, then moves boxes by
  ~2e-3 px; with one-hot-like DFL softmaxes it would be ~5x more);
* then the class-prediction biases are shifted by one constant so that CANDIDATES_PER_IMAGE
  (anchor, class) pairs per calibration image score above PREDICT_CONF: the predict cases get a few
  hundred candidates each, below nms_top_k = 1024 (torch.topk, which is not stable, is not called),
  with well separated scores.

The overrides file holds exactly the tensors that differ from deterministic_state_dict, keyed by
state-dict name, float32: every BatchNorm's running_mean / running_var and the three
cls_pred.bias. The tests rebuild the weights as deterministic_state_dict(...) updated with it.

predict_reference.npz keys:

resize/<h>x<w>_to_<h2>x<w2>: cv2.resize(noise_image(h, w, 0), INTER_LINEAR), or, for large outputs,
    its sha256 as a 0-d string array.
callback/<case>/{boxes, scores, params, out}: synthetic (N, 4) boxes and (N, C) scores with distinct
    scores (torch.topk and torch.sort are not stable, so ties would make the reference arbitrary);
    params = [conf, iou, top_k, max_det, multi_label, agnostic]; out = the (n, 6) rows
    [x1, y1, x2, y2, score, class] of PPYoloEPostPredictionCallback.
image/<name>/...: one predict() case (generated images always; real ones from --assets when present):
    rgb_sha256 — the RGB array super-gradients decoded (real images: from the file path);
    input_sha256 — its pre-processed (3, 640, 640) float32 network input; scale, pad (top, left,
    bottom, right), resized_shape;
    predict_{boxes, scores, classes} — `model.predict(source, conf=PREDICT_CONF, iou=PREDICT_IOU)`
    with the calibrated weights (training form; predict() fuses a copy);
    nms — the callback rows in network-input pixels, before super-gradients maps them back
    (checked here to map to predict_* exactly);
    nms_stable — the same callback with its two unstable torch calls made stable (`torch.topk` →
    stable sort, and batched_nms's final sort): what nasjax.nms reproduces exactly; `nms` differs
    from it only where scores tie exactly;
    unfused_predict_{boxes, scores, classes} — predict(..., fuse_model=False): how much
    super-gradients' own result moves with float32 rounding (partial fusion changes scores by ~2e-7);
    top_index, top_score, top_anchor, top_anchor_boxes — the raw (fused-model) outputs needed to
    redo the NMS: the highest-scoring (anchor * 80 + class) pairs (every pair above PREDICT_CONF and
    EXTRA_PAIRS more), and the boxes of their anchors; num_anchors.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUTPUT = HERE / "predict_reference.npz"
# How many (anchor, class) pairs below PREDICT_CONF are stored after all those above it.
EXTRA_PAIRS = 32
# Calibration targets (see the module docstring).
BN_MEAN = 1.0
CLS_BN_STD = 0.5
REG_BN_STD = 0.25
CANDIDATES_PER_IMAGE = 200
NMS_TOP_K = 1024


# Pure-numpy helpers shared with the tests, and tv_cpu_shim (before torchvision / super_gradients).
from oracle_env import deterministic_weights as dw, predict_cases as cases  # noqa: E402

OVERRIDES = HERE / cases.WEIGHT_OVERRIDES
import cv2  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from super_gradients.training import models  # noqa: E402
from super_gradients.training.models.detection_models.pp_yolo_e.post_prediction_callback import (  # noqa: E402
    PPYoloEPostPredictionCallback,
)
from super_gradients.training.processing.processing import default_yolo_nas_coco_processing_params  # noqa: E402
from super_gradients.training.utils.media.image import load_image  # noqa: E402
from super_gradients.training.utils.predict import DetectionPrediction  # noqa: E402


def resize_references(out: dict) -> None:
    for h, w, h2, w2 in cases.RESIZE_CASES + cases.RESIZE_CASES_LARGE:
        dst = cv2.resize(cases.noise_image(h, w, 0), (w2, h2), interpolation=cv2.INTER_LINEAR)
        key = f"resize/{h}x{w}_to_{h2}x{w2}"
        out[key] = dst if h2 * w2 <= cases.RESIZE_STORED_MAX_PIXELS else np.array(cases.sha256(dst))


def _distinct_scores(rng, n: int, c: int) -> np.ndarray:
    return ((rng.permutation(n * c) + 1) / (n * c + 1)).astype(np.float32).reshape(n, c)


def _boxes(rng, n: int, low: float = -100, high: float = 500, size: float = 60, duplicates: int = 0) -> np.ndarray:
    centre = rng.uniform(low, high, (n, 2))
    wh = rng.exponential(size, (n, 2)) + 0.5
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1).astype(np.float32)
    if duplicates:
        boxes[rng.integers(0, n, duplicates)] = boxes[rng.integers(0, n, duplicates)]
    return boxes


def _conf_for_count(scores: np.ndarray, count: int) -> float:
    """A float32 threshold with exactly `count` scores above it."""
    flat = np.sort(scores.ravel())[::-1]
    return float(np.float32((float(flat[count - 1]) + float(flat[count])) / 2))


def callback_references(out: dict) -> None:
    rng = np.random.default_rng(20240601)
    specs = []
    s = _distinct_scores(rng, 300, 4)
    specs.append(("trick_negative", _boxes(rng, 300), s, 0.75, 0.5, 1024, 300, True, False))
    s = _distinct_scores(rng, 400, 5)
    specs.append(("trick_1000", _boxes(rng, 400, duplicates=40), s, _conf_for_count(s, 1000), 0.3, 1024, 1024, True, False))
    specs.append(("vanilla_1001", _boxes(rng, 400, duplicates=40), s, _conf_for_count(s, 1001), 0.3, 1024, 1024, True, False))
    s = _distinct_scores(rng, 800, 4)
    specs.append(("topk_vanilla", _boxes(rng, 800, size=90), s, 0.1, 0.6, 1024, 1024, True, False))
    s = _distinct_scores(rng, 500, 6)
    s[17, 2] = np.float32(0.5)  # exactly at conf: kept by single-label's >=
    specs.append(("single_label", _boxes(rng, 500), s, 0.5, 0.5, 1024, 1024, False, False))
    s = _distinct_scores(rng, 400, 3)
    s[5, 1] = np.float32(0.5)  # exactly at conf: dropped by multi-label's >
    specs.append(("agnostic", _boxes(rng, 400), s, 0.5, 0.4, 1024, 1024, True, True))
    s = _distinct_scores(rng, 400, 2)
    specs.append(("duplicates_max_det", _boxes(rng, 400, 0, 200, 80, duplicates=150), s, 0.2, 0.7, 500, 50, True, False))
    for name, boxes, scores, conf, iou, top_k, max_det, multi_label, agnostic in specs:
        callback = PPYoloEPostPredictionCallback(
            score_threshold=conf, nms_threshold=iou, nms_top_k=top_k, max_predictions=max_det,
            multi_label_per_box=multi_label, class_agnostic_nms=agnostic,
        )
        rows = callback((torch.from_numpy(boxes[None]), torch.from_numpy(scores[None])))[0].numpy()
        p = f"callback/{name}/"
        out[p + "boxes"], out[p + "scores"], out[p + "out"] = boxes, scores, rows.astype(np.float32)
        out[p + "params"] = np.array([conf, iou, top_k, max_det, multi_label, agnostic], dtype=np.float64)
        print(f"  callback {name}: {len(rows)} kept")


def stable_callback(boxes: torch.Tensor, scores: torch.Tensor, conf: float, iou: float, top_k: int = 1024,
                    max_det: int = 300) -> np.ndarray:
    """PPYoloEPostPredictionCallback (multi-label, class-aware) for one image, with `torch.topk`
    replaced by a stable descending sort and batched_nms's final (unstable) sort made stable."""
    i, j = (scores > conf).nonzero(as_tuple=False).T
    boxes, scores, labels = boxes[i], scores[i, j], j
    if scores.numel() > top_k:
        top = torch.sort(scores, descending=True, stable=True).indices[:top_k]
        boxes, scores, labels = boxes[top], scores[top], labels[top]
    if boxes.numel() > 4000:  # batched_nms's per-class path
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for c in torch.unique(labels):
            members = torch.where(labels == c)[0]
            keep_mask[members[torchvision.ops.nms(boxes[members], scores[members], iou)]] = True
        keep = torch.where(keep_mask)[0]
        keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
    else:  # the coordinate trick: torchvision's nms order is already stable
        keep = torchvision.ops.batched_nms(boxes, scores, labels, iou)
    keep = keep[:max_det]
    return torch.cat([boxes[keep], scores[keep, None], labels[keep, None].float()], 1).numpy()


def build_model(overrides: dict[str, np.ndarray] | None = None) -> torch.nn.Module:
    """Training-form model with deterministic_state_dict(WEIGHT_SEED) updated with `overrides`."""
    model = models.get(cases.VARIANT, num_classes=80).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    arrays = dw.deterministic_state_dict(shapes, seed=cases.WEIGHT_SEED)
    assert not set(overrides or {}) - set(arrays), "override of a tensor the model does not have"
    arrays.update(overrides or {})
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, strict=True)
    model.set_dataset_processing_params(**default_yolo_nas_coco_processing_params())
    return model.eval()


def preprocess(image: np.ndarray) -> np.ndarray:
    processor = default_yolo_nas_coco_processing_params()["image_processor"]
    return processor.preprocess_image(image.copy())[0]


def calibration_batch() -> torch.Tensor:
    return torch.from_numpy(np.stack([preprocess(cases.pattern_image(*hws)) for hws in cases.CALIBRATION_IMAGES]))


def bn_targets(model: torch.nn.Module):
    """(name, BatchNorm2d, (target mean, target std)) of every BatchNorm, in forward order."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            if ".cls_convs." in name:
                yield name, module, (0.0, CLS_BN_STD)
            elif ".reg_convs." in name:
                yield name, module, (0.0, REG_BN_STD)
            else:
                yield name, module, (BN_MEAN, 1.0)


def class_logits(model: torch.nn.Module, batch: torch.Tensor) -> np.ndarray:
    """The class logits (cls_pred outputs, before the sigmoid) of every head: (B, 80, anchors)."""
    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _in, out: outputs.append(out))
             for name, m in model.named_modules() if name.endswith("cls_pred")]
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    return torch.cat([o.flatten(2) for o in outputs], 2).numpy()


def calibrate(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Calibrate `model` in place (see the module docstring); returns the tensors it changed."""
    batch = calibration_batch()
    targets = list(bn_targets(model))
    with torch.no_grad():
        affine = [(m.weight.clone(), m.bias.clone()) for _, m, _ in targets]
        for _, m, (mean, std) in targets:
            m.momentum = None  # cumulative average: after one batch, the batch statistics
            m.reset_running_stats()
            # Train mode outputs weight * (std * z + mean) + bias, z the batch-normalised input, so every
            # later layer is calibrated on what it will see in eval mode.
            m.bias.add_(mean * m.weight)
            m.weight.mul_(std)
        model.train()
        model(batch)
        model.eval()
        for (_, m, (mean, std)), (weight, bias) in zip(targets, affine):
            m.weight.copy_(weight)
            m.bias.copy_(bias)
            # Fold the targets into the statistics: (x - mean') / sqrt(var' + eps) = std * z + mean.
            sigma = torch.sqrt(m.running_var + m.eps)
            m.running_mean.sub_(mean * sigma / std)
            m.running_var.copy_(sigma.square() / std ** 2 - m.eps)
        # One shift for every class bias: CANDIDATES_PER_IMAGE pairs above PREDICT_CONF per image (on
        # average over the calibration batch).
        logits = np.sort(class_logits(model, batch).ravel())[::-1]
        n = CANDIDATES_PER_IMAGE * len(batch)
        threshold = np.log(cases.PREDICT_CONF / (1 - cases.PREDICT_CONF))
        shift = np.float32(threshold - (float(logits[n - 1]) + float(logits[n])) / 2)
        cls_biases = {}
        for name, m in model.named_modules():
            if name.endswith("cls_pred"):
                cls_biases[f"{name}.bias"] = m.bias.detach().numpy() + shift
                m.bias.copy_(torch.from_numpy(cls_biases[f"{name}.bias"]))
    print(f"  calibrated {len(targets)} BatchNorms on {len(batch)} images; class bias shifted by {shift:+.4f}")
    overrides = {}
    for name, m, _ in targets:
        overrides[f"{name}.running_mean"] = m.running_mean.numpy().astype(np.float32)
        overrides[f"{name}.running_var"] = m.running_var.numpy().astype(np.float32)
    overrides.update(cls_biases)
    return overrides


def predict_reference(model, fused, name: str, source, out: dict) -> None:
    image = load_image(source)  # what predict() decodes: PIL → RGB for paths, as given for arrays
    processor = default_yolo_nas_coco_processing_params()["image_processor"]
    x, metadata = processor.preprocess_image(image.copy())
    rescale, padding = metadata.metadata_lst[0], metadata.metadata_lst[1]
    with torch.no_grad():
        raw = fused(torch.from_numpy(x[None]))
    callback = PPYoloEPostPredictionCallback(
        score_threshold=cases.PREDICT_CONF, nms_threshold=cases.PREDICT_IOU, nms_top_k=1024, max_predictions=300,
    )
    nms = callback(raw)[0].numpy()
    nms_stable = stable_callback(raw[0][0][0], raw[0][1][0], cases.PREDICT_CONF, cases.PREDICT_IOU)
    unfused = model.predict(source, conf=cases.PREDICT_CONF, iou=cases.PREDICT_IOU, fuse_model=False).prediction

    result = model.predict(source, conf=cases.PREDICT_CONF, iou=cases.PREDICT_IOU).prediction
    mapped = processor.postprocess_predictions(
        DetectionPrediction(bboxes=nms[:, :4], confidence=nms[:, 4], labels=nms[:, 5].astype(int),
                            bbox_format="xyxy", image_shape=x.shape[1:]),
        metadata,
    )
    # predict() is exactly: this pre-processing, the fused model, this callback, this mapping back.
    assert np.array_equal(mapped.bboxes_xyxy, result.bboxes_xyxy), name
    assert np.array_equal(mapped.confidence, result.confidence), name

    boxes, scores = (t[0].numpy() for t in raw[0])
    flat = scores.ravel()
    candidates = int((flat > np.float32(cases.PREDICT_CONF)).sum())
    # Below nms_top_k, the callback does not call torch.topk (unstable among ties).
    assert candidates <= NMS_TOP_K, f"{name}: {candidates} candidates; recalibrate with fewer"
    order = np.argsort(-flat, kind="stable")[:candidates + EXTRA_PAIRS]
    anchors = np.unique(order // scores.shape[1])
    p = f"image/{name}/"
    out.update({
        p + "rgb_sha256": np.array(cases.sha256(image)),
        p + "rgb_shape": np.array(image.shape, np.int64),
        p + "input_sha256": np.array(cases.sha256(x)),
        p + "scale": np.float64(rescale.scale_factor_h),
        p + "pad": np.array([padding.padding_coordinates.top, padding.padding_coordinates.left,
                             padding.padding_coordinates.bottom, padding.padding_coordinates.right], np.int64),
        p + "predict_boxes": result.bboxes_xyxy.astype(np.float32),
        p + "predict_scores": result.confidence.astype(np.float32),
        p + "predict_classes": result.labels.astype(np.int64),
        p + "nms": nms.astype(np.float32),
        p + "nms_stable": nms_stable.astype(np.float32),
        p + "unfused_predict_boxes": unfused.bboxes_xyxy.astype(np.float32),
        p + "unfused_predict_scores": unfused.confidence.astype(np.float32),
        p + "unfused_predict_classes": unfused.labels.astype(np.int64),
        p + "top_index": order.astype(np.int64),
        p + "top_score": flat[order],
        p + "top_anchor": anchors.astype(np.int64),
        p + "top_anchor_boxes": boxes[anchors],
        p + "num_anchors": np.int64(boxes.shape[0]),
    })
    same = len(nms) == len(nms_stable) and np.array_equal(nms, nms_stable)
    survivors = stable_callback(raw[0][0][0], raw[0][1][0], cases.PREDICT_CONF, cases.PREDICT_IOU, max_det=NMS_TOP_K)
    cut = (f"max_det cuts {len(survivors)} survivors with a score gap of {survivors[299, 4] - survivors[300, 4]:.2e}"
           if len(survivors) > 300 else f"{len(survivors)} survive NMS")
    top = flat[order[:candidates]]
    gaps = -np.diff(top)
    kept = np.sort(result.confidence)[::-1]
    print(f"  {name}: {image.shape[1]}x{image.shape[0]} → {candidates} candidates (scores {top[0]:.4f}..{top[-1]:.4f}, "
          f"{int((gaps == 0).sum())} exact ties, smallest gap {gaps.min():.2e}), {len(result.confidence)} detections "
          f"({cut}; smallest relative gap {(-np.diff(kept) / kept[1:]).min():.2e}; "
          f"{'same as' if same else 'differ from'} the stable-tie variant)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=Path, default=Path("/work/shared/assets"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    out: dict = {}
    resize_references(out)
    callback_references(out)

    overrides = calibrate(build_model())
    np.savez_compressed(OVERRIDES, **overrides)
    print(f"wrote {OVERRIDES} ({len(overrides)} tensors, {OVERRIDES.stat().st_size / 1024:.0f} KiB)")
    model = build_model(overrides)  # what the tests rebuild: the deterministic weights plus the file
    fused = copy.deepcopy(model)
    fused.prep_model_for_conversion(input_size=(640, 640))  # what predict() does to its copy
    for name, height, width, seed in cases.GENERATED_IMAGES:
        predict_reference(model, fused, name, cases.pattern_image(height, width, seed), out)
    for name, relative in cases.REAL_IMAGES:
        path = args.assets / relative
        if path.exists():
            predict_reference(model, fused, name, str(path), out)
        else:
            print(f"  {name}: {path} absent, skipped")
    np.savez_compressed(OUTPUT, **out)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
