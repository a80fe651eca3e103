"""Export times, TFLite latency and INT8 / float16 fidelity against the float32 JAX model.

    .venv/bin/python benchmarks/export.py [--imgsz 640] [--variant yolo_nas_s] [--images DIR]
        [--calib-images 64] [--eval-images 64] [--threads 2] [--runs 20] [--json OUT] [--keep DIR]

Exports float32, float16, INT8 with the decode tail on the host (the default) and INT8 with the tail
inside the quantized graph, all at batch 1, with deterministic random weights (seed 0). The images of
--images (default the COCO128 images in ../shared/assets) are split in two disjoint halves, sorted by
name: the second half calibrates the INT8 models (at most --calib-images), the first half
(at most --eval-images) measures them.

Latency: batch 1, one fixed pre-processed real image, the median of --runs calls after 3 warm-up calls.
TFLite: the LiteRT interpreter with --threads threads (`invoke` through the signature runner, plus
the host decode tail where there is one); JAX: the jitted forward (XLA uses every core).

Fidelity, per exported model against the float32 JAX forward on the same pre-processed images:
scores max / mean absolute error over all anchors and classes and over the (anchor, class) pairs the
float model scores above --conf; box mean absolute error (pixels) over all anchors and over the
anchors the float model detects; and after NMS (conf --conf, IoU 0.7) the
share of float detections matched by one of the model (IoU > 0.5, same class, greedy by score) and
the mean score difference of the matched pairs. With random weights the detections are meaningless as
detections; the figures measure how far quantization moves the outputs on real-image activations.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "assets" / "coco128" / "images"


def _median_ms(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) x (m, 4) xyxy → (n, m)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def _match(want, got) -> tuple[int, int, list[float]]:
    """(float detections, matched, |score differences| of the matches) for one image."""
    wb, ws, wc = want
    gb, gs, gc = got
    used = np.zeros(len(gb), bool)
    diffs = []
    iou = _iou(wb, gb) if len(wb) and len(gb) else np.zeros((len(wb), len(gb)))
    for i in np.argsort(-ws, kind="stable"):
        candidates = np.where((gc == wc[i]) & ~used & (iou[i] > 0.5))[0]
        if len(candidates):
            j = candidates[np.argmax(iou[i, candidates])]
            used[j] = True
            diffs.append(abs(float(gs[j]) - float(ws[i])))
    return len(wb), len(diffs), diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--variant", default="yolo_nas_s")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="write the exported files here (default: a temp dir)")
    args = parser.parse_args()

    import jax

    import nasjax
    from nasjax.export import runners as exported
    from nasjax.model import nms
    from nasjax.data import preprocessing
    from nasjax.model.core import jit_forward
    from nasjax.export import calibration_files, export, import_tf

    if not args.images.exists():
        sys.exit(f"{args.images} not found: pass --images DIR")
    files = sorted(calibration_files(args.images))  # a folder, searched recursively
    half = len(files) // 2
    eval_files, calib_files = files[:half][: args.eval_images], files[half:][: args.calib_images]
    tf = import_tf()
    detector = nasjax.build(args.variant)
    s = args.imgsz
    config = detector.preprocessing  # the weights' resize / pad numbers
    margin = config.input_size - config.resize_longest_side
    inputs = [preprocessing.preprocess(preprocessing.load_image(f), "centre_pad", s, config.pad_value,
                                       resize_margin=margin)[0] for f in eval_files]

    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="nasjax-bench-export-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = {
        "float32": dict(),
        "float16": dict(half=True),
        "int8 (host tail)": dict(int8=True, data=calib_files, int8_tail="host"),
        "int8 (graph tail)": dict(int8=True, data=calib_files, int8_tail="graph"),
    }
    report = {"imgsz": s, "variant": args.variant, "threads": args.threads, "calib_images": len(calib_files),
              "eval_images": len(eval_files), "images": str(args.images), "jax": jax.__version__,
              "tensorflow": tf.__version__, "cpus": os.cpu_count(), "models": {}}
    paths = {}
    start = time.perf_counter()
    export(detector, "saved_model", out_dir / "saved_model", imgsz=s)
    report["saved_model_export_s"] = time.perf_counter() - start
    for name, options in variants.items():
        start = time.perf_counter()
        tag = name.replace(" ", "_").replace("(", "").replace(")", "")
        paths[name] = export(detector, "tflite", out_dir / f"{args.variant}_{s}_{tag}.tflite", imgsz=s, **options)
        report["models"][name] = {"export_s": time.perf_counter() - start,
                                  "size_mb": paths[name].stat().st_size / 1e6}
        print(f"exported {name} in {report['models'][name]['export_s']:.1f} s", file=sys.stderr)

    # Latency.
    x_unit = preprocessing.to_unit_float(inputs[0][None])
    jax_ms = _median_ms(lambda: jit_forward(detector.graphdef, detector.variables, x_unit).boxes.block_until_ready(),
                        args.runs)
    report["jax_forward_ms"] = jax_ms
    runners = {name: exported.TFLiteDetector(p, num_threads=args.threads) for name, p in paths.items()}
    for name, runner in runners.items():
        x = runner._encode(inputs[0][None])
        graph_ms = _median_ms(lambda: runner._invoke(x), args.runs)
        outputs = runner._invoke(x)
        tail_ms = _median_ms(lambda: runner._decoded(outputs), args.runs) if runner.host_tail else 0.0
        report["models"][name].update(invoke_ms=graph_ms, host_tail_ms=tail_ms)

    # Fidelity against the float32 JAX model.
    iou32 = nms.iou_compare_threshold(0.7)

    def detections(boxes, scores):
        d = jax.device_get(nms.non_max_suppression(boxes[None], scores[None], np.float32(args.conf), iou32))
        n = int(d.count[0])
        return d.boxes[0, :n], d.scores[0, :n], d.classes[0, :n]

    float_outputs = []
    for image in inputs:
        out = jit_forward(detector.graphdef, detector.variables, preprocessing.to_unit_float(image[None]))
        boxes, scores = np.asarray(out.boxes[0]), np.asarray(out.scores[0])
        float_outputs.append((boxes, scores, detections(boxes, scores)))
    for name, runner in runners.items():
        stats = {"score_max": 0.0, "score_sum": 0.0, "score_n": 0, "box_sum": 0.0, "box_n": 0, "det_box_sum": 0.0,
                 "det_box_n": 0, "det_score_sum": 0.0, "det_score_n": 0, "float_dets": 0, "matched": 0, "diffs": []}
        for image, (want_boxes, want_scores, want_det) in zip(inputs, float_outputs):
            boxes, scores = runner._decoded(runner.outputs(runner._encode(image[None])))
            boxes, scores = boxes[0], scores[0]
            err = np.abs(scores - want_scores)
            stats["score_max"] = max(stats["score_max"], float(err.max()))
            stats["score_sum"] += float(err.sum())
            stats["score_n"] += err.size
            box_err = np.abs(boxes - want_boxes)
            stats["box_sum"] += float(box_err.sum())
            stats["box_n"] += box_err.size
            detected = np.unique(np.where(want_scores > args.conf)[0])
            positive = want_scores > args.conf
            stats["det_score_sum"] += float(err[positive].sum())
            stats["det_score_n"] += int(positive.sum())
            stats["det_box_sum"] += float(box_err[detected].sum())
            stats["det_box_n"] += box_err[detected].size
            n, matched, diffs = _match(want_det, detections(boxes, scores))
            stats["float_dets"] += n
            stats["matched"] += matched
            stats["diffs"] += diffs
        report["models"][name].update(
            score_max_abs_err=stats["score_max"],
            score_mean_abs_err=stats["score_sum"] / stats["score_n"],
            box_mean_abs_err_px=stats["box_sum"] / stats["box_n"],
            detected_score_mean_abs_err=stats["det_score_sum"] / max(stats["det_score_n"], 1),
            detected_box_mean_abs_err_px=stats["det_box_sum"] / max(stats["det_box_n"], 1),
            float_detections=stats["float_dets"],
            matched_share=stats["matched"] / max(stats["float_dets"], 1),
            matched_score_mean_abs_diff=float(np.mean(stats["diffs"])) if stats["diffs"] else float("nan"),
        )

    print(f"\nexport and TFLite, {args.variant} {s}x{s} batch 1, random weights; {len(calib_files)} calibration "
          f"and {len(eval_files)} evaluation images from {args.images}; TFLite {args.threads} threads, "
          f"{os.cpu_count()} CPUs; jax {jax.__version__}, tensorflow {tf.__version__}")
    report["load_average"] = os.getloadavg()
    print(f"SavedModel export {report['saved_model_export_s']:.1f} s; JAX jitted forward {jax_ms:.1f} ms; "
          f"load average {report['load_average'][0]:.1f} (other processes on the machine)")
    print(f"{'model':<18} {'export s':>8} {'MB':>6} {'invoke ms':>9} {'+tail ms':>8} {'score max':>9} "
          f"{'score mean':>10} {'det score':>9} {'box px':>7} {'det box px':>10} {'matched':>8} {'d score':>8}")
    for name, m in report["models"].items():
        print(f"{name:<18} {m['export_s']:>8.1f} {m['size_mb']:>6.1f} {m['invoke_ms']:>9.1f} {m['host_tail_ms']:>8.2f} "
              f"{m['score_max_abs_err']:>9.4f} {m['score_mean_abs_err']:>10.2e} "
              f"{m['detected_score_mean_abs_err']:>9.4f} {m['box_mean_abs_err_px']:>7.3f} "
              f"{m['detected_box_mean_abs_err_px']:>10.3f} {m['matched_share']:>8.3f} "
              f"{m['matched_score_mean_abs_diff']:>8.4f}")
    print(f"(float detections: {report['models']['float32']['float_detections']} at conf {args.conf})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
