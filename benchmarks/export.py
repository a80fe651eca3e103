"""Export times, CPU latency (JAX, TFLite, ONNX Runtime, OpenVINO) and fidelity against the float32 JAX
model; with --map-model, the COCO mAP of a trained model in every format.

    .venv/bin/python benchmarks/export.py [--imgsz 640] [--variant yolo_nas_s] [--images DIR]
        [--calib-images 64] [--eval-images 64] [--threads 2] [--runs 20] [--json OUT] [--keep DIR [--reuse]]
        [--map-model runs/coco128/s256/best [--map-data coco128] [--map-imgsz 256] [--map-calib-images 128]]
        [--only EXPORT ...] [--skip-latency]

Latency and fidelity (unless --skip-latency), with deterministic random weights (seed 0), run at batch 1:
TFLite float32, float16, INT8 with the decode tail on the host (the default) and INT8 with the tail
inside the quantized graph (exported at batch 1); ONNX float32 and float16 (run by ONNX Runtime) and
OpenVINO float32 and INT8 (NNCF, decode tail float), with their default symbolic batch; --only names a
subset. The images of --images (default the COCO128 images in ../shared/assets) are split in two
disjoint halves, sorted by name: the second half calibrates every INT8 model (at most --calib-images;
TFLite and OpenVINO get the same files), the first half (at most --eval-images) measures them.

Latency: batch 1, one fixed pre-processed real image, the median of --runs calls after 3 warm-up calls,
every model called once per round in turn (interleaved, so that a change in the machine's load shifts
all rows alike; the load average before and after is printed). Each runtime gets --threads threads:
TFLite num_threads, ONNX Runtime intra-op threads, OpenVINO INFERENCE_NUM_THREADS (precision f32); JAX
is the jitted forward (XLA uses every core). `invoke ms` is the runner's `_invoke` (the input
transposed to NCHW for ONNX / OpenVINO included); `+tail ms` the host decode tail of the host-tail INT8
TFLite model. Each row's total is also given as a ratio to OpenVINO INT8's, and the summary names the
fastest path overall and the fastest non-OpenVINO path against the target (within 1.2x of OpenVINO INT8).

Fidelity, per exported model against the float32 JAX forward on the same pre-processed images:
scores max / mean absolute error over all anchors and classes and over the (anchor, class) pairs the
float model scores above --conf; box mean absolute error (pixels) over all anchors and over the
anchors the float model detects; and after NMS (conf --conf, IoU 0.7) the
share of float detections matched by one of the model (IoU > 0.5, same class, greedy by score) and
the mean score difference of the matched pairs. With random weights the detections are meaningless as
detections; the figures measure how far quantization moves the outputs on real-image activations.

mAP (--map-model DIR, a trained nasjax checkpoint such as the training example's runs/coco128/s256/best):
the model exported at --map-imgsz to TFLite float32 and INT8 (host tail), ONNX float32, OpenVINO float32
and INT8, the INT8 models calibrated on at most --map-calib-images images of --map-data; then
`validate(model, --map-data, imgsz=--map-imgsz, batch_size=8)` (what `model.val` runs) for the JAX model and
every export: mAP50-95 and mAP50 (COCOeval, 0-100) and their difference to JAX in points, and the
largest |difference| against the target (0.3 points).

Progress goes to stderr; the tables are printed at the end, and --json writes every figure.
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

# name → (format, export options); INT8 ones get their calibration data at export time.
EXPORTS = {
    "tflite float32": ("tflite", {}),
    "tflite float16": ("tflite", dict(half=True)),
    "tflite int8 (host tail)": ("tflite", dict(int8=True, int8_tail="host")),
    "tflite int8 (graph tail)": ("tflite", dict(int8=True, int8_tail="graph")),
    "onnx float32": ("onnx", {}),
    "onnx float16": ("onnx", dict(half=True)),
    "openvino float32": ("openvino", {}),
    "openvino int8": ("openvino", dict(int8=True)),
}
MAP_EXPORTS = ("tflite float32", "tflite int8 (host tail)", "onnx float32", "openvino float32", "openvino int8")
REFERENCE = "openvino int8"  # the latency target's yardstick
TARGET_RATIO = 1.2
JAX_ROW = "jax float32"
WARMUP = 3


def _parse_args():
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
    parser.add_argument("--reuse", action="store_true", help="run the files already in --keep instead of exporting again")
    parser.add_argument("--only", nargs="*", default=None, choices=list(EXPORTS),
                        help="latency / fidelity for these exports only (default: all)")
    parser.add_argument("--skip-latency", action="store_true", help="only the mAP table (with --map-model)")
    parser.add_argument("--map-model", type=Path, default=None, help="a trained nasjax checkpoint directory")
    parser.add_argument("--map-data", default="coco128")
    parser.add_argument("--map-imgsz", type=int, default=256)
    parser.add_argument("--map-calib-images", type=int, default=128)
    return parser.parse_args()


# --- export and runners ----------------------------------------------------------------------------


def _output_path(out_dir: Path, stem: str, name: str) -> Path:
    fmt = EXPORTS[name][0]
    tag = name.replace(" ", "_").replace("(", "").replace(")", "")
    return out_dir / (f"{stem}_{tag}_openvino_model" if fmt == "openvino" else f"{stem}_{tag}.{fmt}")


def _export_all(detector, names, out_dir: Path, stem: str, imgsz: int, calibration, calib_images: int,
                reuse: bool = False) -> dict:
    """{name: {"path", "export_s", "size_mb"}} for each export in `names` (reuse: keep the files that exist;
    their export_s is nan)."""
    from nasjax.export import export

    done = {}
    for name in names:
        fmt, options = EXPORTS[name]
        if options.get("int8"):
            options = dict(options, data=calibration, calib_images=calib_images)
        start = time.perf_counter()
        path = _output_path(out_dir, stem, name)
        if reuse and path.exists():
            start = float("nan")
        else:
            path = export(detector, fmt, path, imgsz=imgsz, **options)
        files = path.iterdir() if path.is_dir() else [path]
        done[name] = {"path": path, "export_s": time.perf_counter() - start,
                      "size_mb": sum(f.stat().st_size for f in files) / 1e6}
        print(f"{'reused' if reuse and start != start else 'exported'} {name}: {path} "
              f"({done[name]['export_s']:.1f} s)", file=sys.stderr)
    return done


def _runners(exports: dict, threads: int) -> dict:
    """A runner (nasjax.export.loader.load_exported) per export, with `threads` runtime threads."""
    from nasjax.export.loader import load_exported

    return {name: load_exported(e["path"], num_threads=threads) for name, e in exports.items()}


# --- latency ---------------------------------------------------------------------------------------


def _interleaved_ms(calls: dict, runs: int) -> dict:
    """{key: median ms} of `runs` rounds, each calling every function once in turn (after WARMUP calls each)."""
    for fn in calls.values():
        for _ in range(WARMUP):
            fn()
    times = {key: [] for key in calls}
    for _ in range(runs):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: 1000 * statistics.median(t) for key, t in times.items()}


def _latency(detector, runners: dict, pixels: np.ndarray, runs: int) -> dict:
    """{row: {"invoke_ms", "host_tail_ms", "total_ms"}} for the JAX forward and every runner on `pixels`
    ((1, S, S, 3) uint8), interleaved."""
    from nasjax.data import preprocessing
    from nasjax.model.core import jit_forward

    x_unit = preprocessing.to_unit_float(pixels)
    calls = {(JAX_ROW, "invoke"): lambda: jit_forward(detector.graphdef, detector.variables, x_unit).boxes.block_until_ready()}
    for name, runner in runners.items():
        x = runner._encode(pixels)
        calls[(name, "invoke")] = lambda r=runner, x=x: r._invoke(x)
        if runner.host_tail:
            outputs = runner._invoke(x)
            calls[(name, "tail")] = lambda r=runner, o=outputs: r._decoded(o)
    ms = _interleaved_ms(calls, runs)
    rows = {}
    for name in [JAX_ROW, *runners]:
        invoke, tail = ms[(name, "invoke")], ms.get((name, "tail"), 0.0)
        rows[name] = {"invoke_ms": invoke, "host_tail_ms": tail, "total_ms": invoke + tail}
    return rows


def _latency_summary(rows: dict) -> dict:
    """Ratios to the reference (OpenVINO INT8), the fastest path overall and the fastest non-OpenVINO one."""
    if REFERENCE not in rows:
        return {}
    reference = rows[REFERENCE]["total_ms"]
    for row in rows.values():
        row["ratio_to_reference"] = row["total_ms"] / reference
    summary = {"reference": REFERENCE, "reference_ms": reference, "target_ratio": TARGET_RATIO}
    pools = {"fastest": list(rows), "fastest_non_openvino": [k for k in rows if not k.startswith("openvino")]}
    for key, names in pools.items():
        best = min(names, key=lambda k: rows[k]["total_ms"])
        ratio = rows[best]["ratio_to_reference"]
        summary[key] = {"model": best, "ms": rows[best]["total_ms"], "ratio": ratio, "met": ratio <= TARGET_RATIO}
    return summary


# --- fidelity --------------------------------------------------------------------------------------


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


def _detections(boxes, scores, conf: float):
    """(boxes, scores, classes) after nasjax's NMS (conf, IoU 0.7) for one image's (N, 4), (N, C)."""
    import jax

    from nasjax.model import nms

    d = jax.device_get(nms.non_max_suppression(boxes[None], scores[None], np.float32(conf),
                                               nms.iou_compare_threshold(0.7)))
    n = int(d.count[0])
    return d.boxes[0, :n], d.scores[0, :n], d.classes[0, :n]


def _float_outputs(detector, inputs, conf: float) -> list:
    """(boxes, scores, detections) of the float32 JAX forward per pre-processed image."""
    from nasjax.data import preprocessing
    from nasjax.model.core import jit_forward

    result = []
    for image in inputs:
        out = jit_forward(detector.graphdef, detector.variables, preprocessing.to_unit_float(image[None]))
        boxes, scores = np.asarray(out.boxes[0]), np.asarray(out.scores[0])
        result.append((boxes, scores, _detections(boxes, scores, conf)))
    return result


def _fidelity(runner, inputs, float_outputs, conf: float) -> dict:
    """The runner's error figures against the float32 JAX outputs (see the module docstring)."""
    s = dict.fromkeys(("score_max", "score_sum", "score_n", "box_sum", "box_n", "det_box_sum", "det_box_n",
                       "det_score_sum", "det_score_n", "float_dets", "matched"), 0.0)
    diffs = []
    for image, (want_boxes, want_scores, want_det) in zip(inputs, float_outputs):
        boxes, scores = runner._decoded(runner.outputs(runner._encode(image[None])))
        boxes, scores = boxes[0], scores[0]
        err, box_err = np.abs(scores - want_scores), np.abs(boxes - want_boxes)
        positive = want_scores > conf
        detected = np.unique(np.where(positive)[0])
        s["score_max"] = max(s["score_max"], float(err.max()))
        for key, values in (("score", err), ("box", box_err), ("det_score", err[positive]),
                            ("det_box", box_err[detected])):
            s[f"{key}_sum"] += float(values.sum())
            s[f"{key}_n"] += values.size
        n, matched, d = _match(want_det, _detections(boxes, scores, conf))
        s["float_dets"] += n
        s["matched"] += matched
        diffs += d
    return {
        "score_max_abs_err": s["score_max"],
        "score_mean_abs_err": s["score_sum"] / s["score_n"],
        "box_mean_abs_err_px": s["box_sum"] / s["box_n"],
        "detected_score_mean_abs_err": s["det_score_sum"] / max(s["det_score_n"], 1),
        "detected_box_mean_abs_err_px": s["det_box_sum"] / max(s["det_box_n"], 1),
        "float_detections": int(s["float_dets"]),
        "matched_share": s["matched"] / max(s["float_dets"], 1),
        "matched_score_mean_abs_diff": float(np.mean(diffs)) if diffs else float("nan"),
    }


# --- the latency / fidelity benchmark ----------------------------------------------------------------


def _pre_processed(detector, files, imgsz: int) -> list:
    from nasjax.data import preprocessing

    config = detector.preprocessing  # the weights' resize / pad numbers
    margin = config.input_size - config.resize_longest_side
    return [preprocessing.preprocess(preprocessing.load_image(f), "centre_pad", imgsz, config.pad_value,
                                     resize_margin=margin)[0] for f in files]


def _versions() -> dict:
    import jax
    import onnxruntime
    import openvino

    from nasjax.export import import_tf

    return {"jax": jax.__version__, "tensorflow": import_tf().__version__, "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.get_version()}


def _latency_benchmark(args, out_dir: Path) -> dict:
    import nasjax
    from nasjax.export import calibration_files, export

    if not args.images.exists():
        sys.exit(f"{args.images} not found: pass --images DIR")
    files = sorted(calibration_files(args.images))  # a folder, searched recursively
    half = len(files) // 2
    eval_files, calib_files = files[:half][: args.eval_images], files[half:][: args.calib_images]
    detector = nasjax.build(args.variant)
    s = args.imgsz
    inputs = _pre_processed(detector, eval_files, s)
    report = {"imgsz": s, "variant": args.variant, "threads": args.threads, "runs": args.runs,
              "calib_images": len(calib_files), "eval_images": len(eval_files), "images": str(args.images)}
    start = time.perf_counter()
    if args.reuse and (out_dir / "saved_model").exists():
        start = float("nan")
    else:
        export(detector, "saved_model", out_dir / "saved_model", imgsz=s)
    report["saved_model_export_s"] = time.perf_counter() - start
    exports = _export_all(detector, args.only or list(EXPORTS), out_dir, f"{args.variant}_{s}", s, calib_files,
                          len(calib_files), args.reuse)
    runners = _runners(exports, args.threads)
    report["load_average_before"] = os.getloadavg()
    rows = _latency(detector, runners, inputs[0][None], args.runs)
    report["load_average_after"] = os.getloadavg()
    report["latency_summary"] = _latency_summary(rows)
    float_outputs = _float_outputs(detector, inputs, args.conf)
    for name, runner in runners.items():
        rows[name].update({k: v for k, v in exports[name].items() if k != "path"})
        rows[name].update(_fidelity(runner, inputs, float_outputs, args.conf))
    report["models"] = rows
    return report


def _print_latency(report: dict, args, versions: dict) -> None:
    s, rows = report["imgsz"], report["models"]
    print(f"\nexport, latency and fidelity, {report['variant']} {s}x{s} batch 1, random weights; "
          f"{report['calib_images']} calibration and {report['eval_images']} evaluation images from "
          f"{report['images']}; {report['threads']} threads per runtime, {os.cpu_count()} CPUs; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    before, after = report["load_average_before"][0], report["load_average_after"][0]
    print(f"SavedModel export {report['saved_model_export_s']:.1f} s; latency: median of {report['runs']} interleaved "
          f"rounds; load average {before:.1f} before, {after:.1f} after (other processes on the machine)")
    print(f"{'model':<24} {'export s':>8} {'MB':>6} {'invoke ms':>9} {'+tail ms':>8} {'total ms':>8} {'x ov int8':>9} "
          f"{'score max':>9} {'score mean':>10} {'det score':>9} {'box px':>7} {'det box px':>10} {'matched':>8} "
          f"{'d score':>8}")
    for name, m in rows.items():
        line = (f"{name:<24} {m.get('export_s', float('nan')):>8.1f} {m.get('size_mb', float('nan')):>6.1f} "
                f"{m['invoke_ms']:>9.1f} {m['host_tail_ms']:>8.2f} {m['total_ms']:>8.1f} "
                f"{m.get('ratio_to_reference', float('nan')):>9.2f}")
        if "score_max_abs_err" in m:
            line += (f" {m['score_max_abs_err']:>9.4f} {m['score_mean_abs_err']:>10.2e} "
                     f"{m['detected_score_mean_abs_err']:>9.4f} {m['box_mean_abs_err_px']:>7.3f} "
                     f"{m['detected_box_mean_abs_err_px']:>10.3f} {m['matched_share']:>8.3f} "
                     f"{m['matched_score_mean_abs_diff']:>8.4f}")
        print(line)
    dets = next((m["float_detections"] for m in rows.values() if "float_detections" in m), 0)
    print(f"(float detections: {dets} at conf {args.conf})")
    summary = report["latency_summary"]
    for key, label in (("fastest", "fastest path overall"), ("fastest_non_openvino", "fastest non-OpenVINO path")):
        if key in summary:
            f = summary[key]
            print(f"{label}: {f['model']} {f['ms']:.1f} ms = {f['ratio']:.2f}x {REFERENCE} "
                  f"({summary['reference_ms']:.1f} ms); target <= {TARGET_RATIO}x: {'met' if f['met'] else 'NOT met'}")


# --- mAP of a trained model -------------------------------------------------------------------------


def _map_benchmark(args, out_dir: Path) -> dict:
    """{"rows": {format: {map50_95, map50, d_map50_95, d_map50, ...}}, ...}: the JAX model and its exports
    validated on --map-data at --map-imgsz."""
    import nasjax
    from nasjax.export import calibration_files
    from nasjax.validate import validate

    model = nasjax.load(args.map_model)
    s = args.map_imgsz
    calibration = calibration_files(args.map_data)[: args.map_calib_images]
    exports = _export_all(model, MAP_EXPORTS, out_dir, f"map_{s}", s, calibration, len(calibration), args.reuse)
    models = {JAX_ROW: model, **_runners(exports, args.threads)}
    rows = {}
    for name, m in models.items():
        metrics = validate(m, args.map_data, imgsz=s, batch_size=8, print_results=False)
        rows[name] = {"map50_95": 100 * metrics["map50_95"], "map50": 100 * metrics["map50"],
                      "speed_ms": metrics.get("speed"), "images": metrics.get("images")}
        print(f"validated {name}: mAP50-95 {rows[name]['map50_95']:.2f}", file=sys.stderr)
    for row in rows.values():
        row["d_map50_95"] = row["map50_95"] - rows[JAX_ROW]["map50_95"]
        row["d_map50"] = row["map50"] - rows[JAX_ROW]["map50"]
    return {"model": str(args.map_model), "data": args.map_data, "imgsz": s, "calib_images": len(calibration),
            "threads": args.threads, "rows": rows}


def _print_map(report: dict) -> None:
    print(f"\nmAP of {report['model']} on {report['data']} at {report['imgsz']}x{report['imgsz']} (batch 8; INT8 "
          f"calibrated on {report['calib_images']} of its images); COCOeval, points (0-100)")
    print(f"{'model':<24} {'mAP50-95':>8} {'mAP50':>7} {'d 50-95':>8} {'d 50':>7}")
    for name, r in report["rows"].items():
        print(f"{name:<24} {r['map50_95']:>8.2f} {r['map50']:>7.2f} {r['d_map50_95']:>+8.2f} {r['d_map50']:>+7.2f}")
    worst = max(abs(r["d_map50_95"]) for r in report["rows"].values())
    print(f"largest |mAP50-95 - JAX|: {worst:.2f} points (target <= 0.3)")


def main() -> None:
    args = _parse_args()
    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="nasjax-bench-export-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    versions = _versions()
    report = {"cpus": os.cpu_count(), **versions}
    if not args.skip_latency:
        report["latency"] = _latency_benchmark(args, out_dir)
    if args.map_model is not None:
        report["map"] = _map_benchmark(args, out_dir)
    if "latency" in report:
        _print_latency(report["latency"], args, versions)
    if "map" in report:
        _print_map(report["map"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
