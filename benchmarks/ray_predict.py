"""Ray Data's cost per image: `nasjax predict engine=ray` (nasjax.ray) beside plain `nasjax.predict` on
the same machine, in one run, at equal resources.

    python benchmarks/ray_predict.py                     # 96 generated 640x480 JPEGs, imgsz 320, workers 1 and 2
    python benchmarks/ray_predict.py --images 256 --imgsz 640 --workers 1 2 4 --json runs/benchmarks/ray.json

Needs the `ray` extra. Deterministic random weights (`pretrained=False`): the figures are about the
pipeline, not the detections (NMS work depends on how many boxes pass conf; random weights give the
most, so this is the heavier case). Both sides read the same JPEG files from disk, decode, resize,
pad, run the jitted detector with NMS on the device and map the boxes back.

Equal resources: this machine's CPUs (os.sched_getaffinity) are the whole budget. Plain predict runs
in this process on all of them (XLA's thread pool plus `workers` reading threads). Ray with W workers
starts a local cluster and gives each worker its own 1/W of the CPUs (the actor pins itself before
JAX starts, so XLA sizes its thread pool to its share).

Measured: steady-state images/s, from the first result to the last, so that neither side's one-time
start (Ray: cluster and actors; both: loading the weights and compiling) is in it; those are reported
apart as start_s. The overhead per image is plain_ips / ray_ips - 1 (the issue's bound: under 10 %).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, count: int, size=(640, 480), seed: int = 0) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        w, h = size
        pixels = np.repeat(np.repeat(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), 16, 0), 16, 1)
        path = folder / f"image{k:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def steady(times: list[float], counts: list[int]) -> float:
    """images/s after the first result: (images after the first batch) / (last - first)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    return sum(counts[1:]) / (times[-1] - times[0])


def plain_predict(paths: list[str], options: dict) -> dict:
    import nasjax

    start = time.perf_counter()
    model = nasjax.load("yolo_nas_s", pretrained=False)
    times, counts = [], []
    for _ in model.predict(paths, stream=True, **options):
        times.append(time.perf_counter())
        counts.append(1)
    return {"images": len(times), "start_s": times[0] - start, "total_s": times[-1] - start,
            "images_per_s": steady(times, counts)}


def _pinned_predictor(cpus: list[int], workers: int):
    """A Predictor whose k-th actor pins itself to its share of `cpus` before JAX starts."""
    from nasjax.ray import Predictor

    shares = [cpus[i::workers] for i in range(workers)]

    class Pinned(Predictor):
        def __init__(self, **options):
            import filelock

            # Actors claim shares in the order they start (a lock-protected counter in a file).
            counter = Path(tempfile.gettempdir()) / f"nasjax-bench-{os.getppid()}-{workers}.count"
            with filelock.FileLock(str(counter) + ".lock"):
                k = int(counter.read_text()) if counter.exists() else 0
                counter.write_text(str(k + 1))
            os.sched_setaffinity(0, shares[k % workers])
            super().__init__(**options, workers=len(shares[k % workers]))

    return Pinned


def ray_predict(paths: list[str], options: dict, workers: int, cpus: list[int]) -> dict:
    from nasjax import ray as on_ray

    start = time.perf_counter()
    times, counts = [], []
    with on_ray.session():
        setup = time.perf_counter() - start
        for table in on_ray.predict_files(paths, {"model": "yolo_nas_s", "pretrained": False, **options},
                                          workers=workers, predictor=_pinned_predictor(cpus, workers),
                                          num_cpus=len(cpus) / workers):
            times.append(time.perf_counter())
            counts.append(table.num_rows)
            assert all(e is None for e in table.column("error").to_pylist())
    return {"images": sum(counts), "cluster_start_s": setup, "start_s": times[0] - start,
            "total_s": times[-1] - start, "images_per_s": steady(times, counts)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--source", type=Path, help="a folder of images to use instead of generated ones")
    parser.add_argument("--json", type=Path, default=Path("runs/benchmarks/ray_predict.json"))
    args = parser.parse_args(argv)

    cpus = sorted(os.sched_getaffinity(0))
    options = {"imgsz": args.imgsz, "batch_size": args.batch, "conf": 0.25}
    with tempfile.TemporaryDirectory() as folder:
        if args.source:
            from nasjax.predict.predictor import list_sources

            paths = [item.path for item in list_sources(str(args.source))][: args.images]
        else:
            paths = make_images(Path(folder), args.images)
        report = {"machine": {"cpus": len(cpus), "platform": platform.platform(), "python": sys.version.split()[0]},
                  "settings": {**options, "images": len(paths)}, "runs": {}}
        # Ray first: its actors are separate processes, so this process's JAX start cannot help them.
        for workers in args.workers:
            report["runs"][f"ray_{workers}"] = ray_predict(paths, options, workers, cpus)
            print(f"ray, {workers} worker(s): {report['runs'][f'ray_{workers}']}", flush=True)
        report["runs"]["plain"] = plain_predict(paths, options)
        print(f"plain predict: {report['runs']['plain']}", flush=True)

    plain = report["runs"]["plain"]["images_per_s"]
    print(f"\n{len(paths)} images {args.imgsz} px, batch {args.batch}, {len(cpus)} CPUs; steady-state images/s")
    print(f"{'engine':<22}{'images/s':>10}{'vs plain':>10}{'overhead/image':>16}{'start s':>9}")
    print(f"{'plain predict':<22}{plain:>10.2f}{1:>10.2f}{'':>16}{report['runs']['plain']['start_s']:>9.1f}")
    for workers in args.workers:
        run = report["runs"][f"ray_{workers}"]
        ratio = run["images_per_s"] / plain
        run["ratio_to_plain"], run["overhead_per_image"] = ratio, 1 / ratio - 1
        print(f"{f'ray, {workers} worker(s)':<22}{run['images_per_s']:>10.2f}{ratio:>10.2f}"
              f"{run['overhead_per_image']:>15.1%}{run['start_s']:>9.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
