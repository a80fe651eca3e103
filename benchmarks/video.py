"""Frames per second over a video file: nasjax's video path beside the PyTorch port's `detect_video`
(the `modern-yolonas` package) and beside nasjax's own image API fed frame by frame.

    python benchmarks/video.py                        # 150-frame 640x360 30 fps clip, YOLO-NAS S, imgsz 640
    python benchmarks/video.py --frames 60 --repeats 3 --cpus 0,1
    python benchmarks/video.py --imgsz 64 --frames 8 --torch off --no-write   # a smoke run

The clip is generated (PyAV, libx264, yuv420p, crf 23) into a temporary folder: a colour gradient with
a few moving rectangles and discs, --frames frames of 640x360 at 30 fps. Nothing is downloaded.

Rows (every one reads the same clip file and returns one detection result per frame; YOLO-NAS S,
--imgsz, conf 0.25, IoU 0.7, multi-label, 300 detections):
- nasjax video, batch B: `model.predict(clip, stream=True, batch_size=B)`: PyAV decodes in a
  background thread, frames are pre-processed by the reading pool and B frames go to the device per
  call (nasjax/predict/video.py, nasjax/predict/predictor.py).
- nasjax image loop, per frame: what a user writes without the video support: PyAV decodes the clip
  in the main thread (`container.decode(video=0)`, `to_ndarray("rgb24")`) and each frame is passed to
  `model.predict(frame, batch_size=1)` in turn; decoding is timed, nothing overlaps.
- nasjax image list, batch B: the whole clip decoded up front into a list of arrays (timed), then
  `model.predict(frames, stream=True, batch_size=B)`.
- modern-yolonas detect_video: `YoloNASDetector("yolo_nas_s", device="cpu", pretrained=False,
  input_size=imgsz).detect_video(clip)`: cv2.VideoCapture, one forward per frame, torchvision NMS.
  The package's default model form (eval mode; its QARepVGG blocks NOT fused, as 0.5.0 ships).
- modern-yolonas detect_video, fused: the same with every QARepVGG block `full_fusion()`-ed (the form
  nasjax runs: the fairer network-for-network comparison).
- with --write (default): nasjax video at the largest batch writing the annotated clip
  (`Results.plot()` into `nasjax.predict.video.VideoWriter`, H.264), and modern-yolonas's
  `detect_video_to_file` (supervision annotators, cv2 mp4v writer): the cost of output.

Same model: both sides get nasjax's deterministic random weights (`nasjax.load(..., pretrained=False)`
= `nasjax.model.deterministic_weights`, seed 0; modern-yolonas's state-dict keys are
super-gradients', so the very same tensors load into it): the raw boxes and scores agree within
1e-4 px (checked at 320), and both keep about 150 boxes per frame at conf 0.25 (modern-yolonas clips
boxes to the image, nasjax's centre_pad does not; random-weight scores have many ties, so top-k
picks differ a little). The figures are about the pipelines, not the detections.

Same threads: the process pins itself to --cpus (default: the CPUs it may use now) before JAX or
torch start; XLA sizes its thread pool to those CPUs, torch gets `torch.set_num_threads(len(cpus))`.
The decoders (PyAV's FFmpeg threads, cv2's), nasjax's reading pool and OpenCV's resize threads run
on the same CPUs: the CPU set is the whole budget of every row. Rows run one after another in this
one process.

Measured: each row runs once on a short warm-up clip (same size: compiles the jitted programs,
warms torch's kernels and the decoders), then over the whole clip, timed from the call to the last
result (opening the file, decoder start, pipeline fill and drain included: the cost of a short clip
as a user sees it). frames/s = frames / seconds. --repeats N runs every row N times, interleaved,
and reports the median and the range. Ratios are frames/s over frames/s.

Caveats: a 2-core CPU is a small budget for a decode thread + a reading pool + XLA; on larger
machines the overlap counts for more. With random weights many boxes pass conf 0.25 (the heavier
NMS case). If torchvision cannot load its compiled ops beside this torch (a CPU torch with a
CUDA-built torchvision, as in this project's venv), modern-yolonas's `torchvision.ops.batched_nms` is
replaced by `numpy_batched_nms` below (torchvision's algorithm: coordinate offset per class, greedy,
stable score order); the table says which NMS was used.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 640, 360, 30


# --- the clip ---------------------------------------------------------------------------------------------


def make_clip(path: Path, frames: int, width: int = WIDTH, height: int = HEIGHT, fps: int = FPS) -> Path:
    """An H.264 MP4 of moving rectangles and discs over a colour gradient."""
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], -1).astype(np.uint8)
    shapes = [  # (kind, colour, x0, y0, vx, vy, size)
        ("rect", (220, 40, 40), 20, 60, 7, 1, (110, 80)),
        ("rect", (40, 40, 220), width - 150, 200, -5, -1, (90, 130)),
        ("disc", (40, 200, 60), width // 2, 250, 4, -2, 45),
        ("disc", (240, 220, 40), 100, 300, 3, -3, 30),
    ]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for t in range(frames):
            image = background.copy()
            for kind, colour, x0, y0, vx, vy, size in shapes:
                x, y = (x0 + vx * t) % width, (y0 + vy * t) % height
                if kind == "rect":
                    w, h = size
                    image[y:y + h, x:x + w] = colour
                else:
                    image[(xx - x) ** 2 + (yy - y) ** 2 < size ** 2] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# --- nasjax rows -----------------------------------------------------------------------------------------


def nasjax_rows(model, batches: list[int], options: dict, write_to: Path | None) -> dict:
    """name -> run(clip) -> (frames, timings dict or None)."""
    import av

    from nasjax.predict.video import VideoWriter

    def video(batch):
        def run(clip):
            timings: dict = {}
            n = sum(1 for _ in model.predict(str(clip), stream=True, batch_size=batch, timings=timings, **options))
            return n, timings
        return run

    def image_loop(clip):
        n = 0
        with av.open(str(clip)) as container:
            for frame in container.decode(video=0):
                model.predict(frame.to_ndarray(format="rgb24"), batch_size=1, **options)
                n += 1
        return n, None

    def image_list(batch):
        def run(clip):
            with av.open(str(clip)) as container:
                frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
            return sum(1 for _ in model.predict(frames, stream=True, batch_size=batch, **options)), None
        return run

    def video_write(batch):
        def run(clip):
            writer, n = None, 0
            for result in model.predict(str(clip), stream=True, batch_size=batch, **options):
                if writer is None:
                    h, w = result.orig_shape
                    writer = VideoWriter(write_to / "nasjax.mp4", result.video.output_fps, w, h)
                writer.write(result.plot())
                n += 1
            writer.close()
            return n, None
        return run

    rows = {f"nasjax video, batch {b}": video(b) for b in batches}
    rows["nasjax image loop, per frame"] = image_loop
    rows[f"nasjax image list, batch {max(batches)}"] = image_list(max(batches))
    if write_to is not None:
        rows[f"nasjax video + write, batch {max(batches)}"] = video_write(max(batches))
    return rows


# --- the PyTorch port ------------------------------------------------------------------------------------


def numpy_batched_nms(boxes, scores, idxs, iou_threshold: float):
    """torchvision.ops.batched_nms in numpy (coordinate offset per class, then torchvision's CPU nms:
    stable descending score order, greedy, suppress when IoU > threshold, areas without +1): indices
    into the input, by decreasing score, as a torch int64 tensor."""
    import torch

    b = boxes.detach().cpu().numpy().astype(np.float32)
    s = scores.detach().cpu().numpy()
    if b.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64)
    b = b + (idxs.cpu().numpy().astype(np.float32) * (b.max() + np.float32(1)))[:, None]
    x1, y1, x2, y2 = b.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-s, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        order = rest[(inter / (areas[i] + areas[rest] - inter)).astype(np.float64) <= iou_threshold]
    return torch.from_numpy(np.asarray(keep, np.int64))


def _import_detector():
    """modern-yolonas's YoloNASDetector, imported without the package __init__ (which needs
    huggingface_hub, for downloading weights, not used here); (class, NMS implementation)."""
    import importlib.util

    if "modern_yolonas" not in sys.modules:  # (a stand-in made earlier has no __spec__ to find)
        spec = importlib.util.find_spec("modern_yolonas")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("modern_yolonas is not installed")
        package = types.ModuleType("modern_yolonas")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["modern_yolonas"] = package
    package = sys.modules["modern_yolonas"]
    if not hasattr(package, "yolo_nas_s"):  # what YoloNASDetector.__init__ imports from the package
        from modern_yolonas.model import YoloNAS

        for variant in ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l"):
            def builder(pretrained=False, num_classes=80, variant=variant):
                if pretrained:
                    raise ValueError("pretrained weights are not used by this benchmark")
                return YoloNAS.from_config(variant, num_classes=num_classes)
            setattr(package, variant, builder)
    nms = "torchvision"
    if "modern_yolonas.inference.postprocess" not in sys.modules:
        try:
            import torchvision.ops  # noqa: F401
        except Exception:  # noqa: BLE001 — absent, or built for another torch (RuntimeError)
            # Only postprocess.py uses torchvision (batched_nms): give it a stand-in module while it imports.
            saved = {k: sys.modules.pop(k) for k in [m for m in sys.modules if m.split(".")[0] == "torchvision"]}
            fake = types.ModuleType("torchvision")
            fake.ops = types.SimpleNamespace(batched_nms=numpy_batched_nms)
            sys.modules["torchvision"] = fake
            try:
                import modern_yolonas.inference.postprocess  # noqa: F401
            finally:
                del sys.modules["torchvision"]
                sys.modules.update(saved)
    postprocess = sys.modules.get("modern_yolonas.inference.postprocess")
    if postprocess is not None and getattr(postprocess.torchvision.ops, "batched_nms", None) is numpy_batched_nms:
        nms = "numpy (torchvision's ops do not load here)"
    from modern_yolonas.inference.detect import YoloNASDetector

    return YoloNASDetector, nms


def torch_detector(imgsz: int, conf: float, fused: bool):
    """(YoloNASDetector with nasjax's deterministic weights, NMS implementation)."""
    import torch

    from nasjax.model.deterministic_weights import deterministic_state_dict

    YoloNASDetector, nms = _import_detector()
    detector = YoloNASDetector("yolo_nas_s", device="cpu", conf_threshold=conf, iou_threshold=0.7,
                               input_size=imgsz, pretrained=False)
    shapes = {k: tuple(v.shape) for k, v in detector.model.state_dict().items()}
    arrays = deterministic_state_dict(shapes, seed=0)
    detector.model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()},
                                   strict=True)
    detector.model.eval()
    if fused:
        for module in detector.model.modules():
            if hasattr(module, "full_fusion"):
                module.full_fusion()
    return detector, nms


def torch_rows(imgsz: int, conf: float, write_to: Path | None) -> tuple[dict, str]:
    rows, nms = {}, None
    for fused in (False, True):
        detector, nms = torch_detector(imgsz, conf, fused)
        name = "modern-yolonas detect_video" + (", fused" if fused else "")

        def run(clip, detector=detector):
            return sum(1 for _ in detector.detect_video(str(clip))), None
        rows[name] = run
        if write_to is not None and fused:
            def write(clip, detector=detector):
                return detector.detect_video_to_file(str(clip), str(write_to / "torch.mp4"))["processed_frames"], None
            rows["modern-yolonas detect_video_to_file, fused"] = write
    return rows, nms


# --- the run -----------------------------------------------------------------------------------------------


def measure(rows: dict, clip: Path, warmup_clip: Path, frames: int, repeats: int) -> dict:
    results = {name: {"rates": [], "seconds": [], "timings": None} for name in rows}
    for name, run in rows.items():
        start = time.perf_counter()
        run(warmup_clip)
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
    for repeat in range(repeats):  # interleaved, so that a slow spell of the machine hits every row
        for name, run in rows.items():
            start = time.perf_counter()
            count, timings = run(clip)
            seconds = time.perf_counter() - start
            if count != frames:
                raise RuntimeError(f"{name} gave {count} results for the {frames}-frame clip")
            results[name]["rates"].append(frames / seconds)
            results[name]["seconds"].append(seconds)
            if timings:
                results[name]["timings"] = timings
            print(f"[{repeat + 1}/{repeats}] {name}: {frames / seconds:.2f} frames/s ({seconds:.1f} s)", flush=True)
    for record in results.values():
        record["frames_per_s"] = statistics.median(record["rates"])
    return results


def table(report: dict) -> str:
    runs = report["rows"]
    torch_default = runs.get("modern-yolonas detect_video", {}).get("frames_per_s")
    torch_fused = runs.get("modern-yolonas detect_video, fused", {}).get("frames_per_s")
    loop = runs["nasjax image loop, per frame"]["frames_per_s"]
    s, load = report["settings"], report["machine"]["load_average"]
    lines = [(f"{s['frames']} frames {s['width']}x{s['height']} {s['fps']} fps H.264, YOLO-NAS S (random weights), "
             f"imgsz {s['imgsz']}, conf {s['conf']}, {len(s['cpus'])} CPUs {s['cpus']} "
             f"(torch threads {s.get('torch_threads')}), median of {s['repeats']}; "
             f"PyTorch NMS: {report.get('torch_nms') or 'n/a'}; load average (1 min) before/after "
             f"{load['before'][0]:.1f}/{load['after'][0]:.1f}"),
             "",
             "| row | frames/s | range | vs PyTorch port | vs port fused | vs nasjax image loop |",
             "|---|---|---|---|---|---|"]

    def ratio(a, b):
        return f"{a / b:.2f}" if b else "n/a"

    for name, record in runs.items():
        fps = record["frames_per_s"]
        spread = f"{min(record['rates']):.2f}-{max(record['rates']):.2f}"
        lines.append(f"| {name} | {fps:.2f} | {spread} | {ratio(fps, torch_default)} | {ratio(fps, torch_fused)} | "
                     f"{ratio(fps, loop)} |")
    if report.get("torch_unavailable"):
        lines += ["", f"(no PyTorch rows: {report['torch_unavailable']})"]
    notes = []
    for name, record in runs.items():
        t = record.get("timings")
        if t and t.get("images"):
            notes.append(f"{name}: per frame, device {1000 * t['inference'] / t['images']:.1f} ms, "
                         f"reading+pre-processing {1000 * t['preprocess'] / t['images']:.1f} ms (pool threads, "
                         f"overlapped), post-processing {1000 * t['postprocess'] / t['images']:.1f} ms (last run)")
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=150, help="frames in the generated clip")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="nasjax video batch sizes")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every row, interleaved; the median")
    parser.add_argument("--warmup-frames", type=int, default=None,
                        help="frames of the warm-up clip (default: the largest batch)")
    parser.add_argument("--cpus", default=None, help="CPUs to pin to, e.g. 0,1 (default: the current affinity)")
    parser.add_argument("--torch", choices=("auto", "off"), default="auto",
                        help="auto: the modern-yolonas rows when it and torch import")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                        help="also time writing the annotated video")
    parser.add_argument("--json", type=Path, default=Path("runs/benchmarks/video.json"))
    args = parser.parse_args(argv)

    if args.cpus:
        os.sched_setaffinity(0, [int(c) for c in args.cpus.split(",")])  # before JAX and torch start
    cpus = sorted(os.sched_getaffinity(0))
    if args.cpus and "jax" in sys.modules:
        print("(jax was imported before pinning: XLA's thread pool may not match --cpus)")
    import nasjax

    options = {"imgsz": args.imgsz, "conf": args.conf, "progress": False}
    report = {"machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
              "settings": {"frames": args.frames, "width": WIDTH, "height": HEIGHT, "fps": FPS, "imgsz": args.imgsz,
                           "conf": args.conf, "batches": args.batch, "repeats": args.repeats, "cpus": cpus},
              "rows": {}}
    with tempfile.TemporaryDirectory(prefix="nasjax-video-bench-") as folder:
        folder = Path(folder)
        clip = make_clip(folder / "clip.mp4", args.frames)
        warmup_clip = make_clip(folder / "warmup.mp4", args.warmup_frames or max(args.batch))
        write_to = folder if args.write else None
        model = nasjax.load("yolo_nas_s", pretrained=False)
        rows = nasjax_rows(model, sorted(args.batch), options, write_to)
        if args.torch != "off":
            try:
                import torch

                torch.set_num_threads(len(cpus))
                report["settings"]["torch_threads"] = torch.get_num_threads()
                extra, report["torch_nms"] = torch_rows(args.imgsz, args.conf, write_to)
                rows.update(extra)
                report["machine"]["torch"] = torch.__version__
            except Exception as error:  # noqa: BLE001 — not installed, or does not build: the nasjax rows only
                report["torch_unavailable"] = f"{type(error).__name__}: {str(error)[:300]}"
                print(f"(no PyTorch rows: {report['torch_unavailable']})")
        load_before = os.getloadavg()
        report["rows"] = measure(rows, clip, warmup_clip, args.frames, args.repeats)
        # Other processes on these CPUs skew every row; the load average says whether there were any.
        report["machine"]["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return publish(report, table(report), args.json)


def publish(report: dict, text: str, path: Path | None) -> dict:
    """Print the table, keep it in the report, and write the report as JSON to `path` (if given)."""
    report["table"] = text
    print("\n" + text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
