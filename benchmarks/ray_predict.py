"""Ray Data's cost per image: `nasjax predict engine=ray` (nasjax.ray) beside plain `nasjax.predict` on
the same machine, in one run, at equal resources.

    python benchmarks/ray_predict.py                  # 128 and 1024 generated 640x480 JPEGs, imgsz 320, workers 1 and 2
    python benchmarks/ray_predict.py --repeats 3      # each engine 3 times, interleaved: the median and the range
    python benchmarks/ray_predict.py --images 64 512 --imgsz 640 --workers 1 2 4 --json runs/benchmarks/ray.json

Needs the `ray` extra. Deterministic random weights (`pretrained=False`): the figures are about the
pipeline, not the detections (NMS work depends on how many boxes pass conf; random weights give the
most, so this is the heavier case). Both sides read the same JPEG files from disk, decode, resize,
pad, run the jitted detector with NMS on the device and map the boxes back.

Equal resources: this machine's CPUs (os.sched_getaffinity) are the whole budget. Plain predict runs
in a fresh process on all of them (XLA's thread pool plus `workers` reading threads). Ray with W workers
starts a local cluster and gives each worker its own 1/W of the CPUs (the actor pins itself before
JAX starts, so XLA sizes its thread pool to its share).

Measured: each engine runs the whole job twice, on the first N1 and on N2 of the images, from nothing
(Ray: cluster, actors, loading the weights and compiling; plain: loading and compiling) to the last
result. The marginal throughput (N2 - N1) / (T2 - T1) is the cost of each further image, with every
one-time start cancelled out; the start itself is T1 - N1 / throughput. (Timing from a first result
instead is biased for Ray, whose results arrive a call of several batches at a time.) The overhead per
image is plain / ray - 1 (the issue's bound: under 10 %).
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


def marginal(small: dict, large: dict) -> dict:
    """Images/s of the images beyond the first N1, and the one-time start, from two runs."""
    rate = (large["images"] - small["images"]) / (large["total_s"] - small["total_s"])
    return {"images_per_s": rate, "start_s": small["total_s"] - small["images"] / rate,
            "runs": [small, large]}


def plain_predict(paths: list[str], options: dict) -> dict:
    """nasjax.predict over `paths` in a fresh process (in this one, a second run would reuse what the
    first compiled and loaded, and the start would not cancel out)."""
    import subprocess

    with tempfile.NamedTemporaryFile("w", suffix=".json") as job:
        json.dump({"paths": paths, "options": options}, job)
        job.flush()
        done = subprocess.run([sys.executable, __file__, "--plain-child", job.name], capture_output=True, text=True,
                              check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _plain_child(job: str) -> None:
    import nasjax

    job = json.loads(Path(job).read_text())
    start = time.perf_counter()
    model = nasjax.load("yolo_nas_s", pretrained=False)
    count = sum(1 for _ in model.predict(job["paths"], stream=True, **job["options"]))
    print(json.dumps({"images": count, "total_s": time.perf_counter() - start}))


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


def ray_predict(paths: list[str], options: dict, workers: int, cpus: list[int], **ray_options) -> dict:
    from nasjax import ray as on_ray

    start = time.perf_counter()
    count = 0
    with on_ray.session():
        for table in on_ray.predict_files(paths, {"model": "yolo_nas_s", "pretrained": False, **options},
                                          workers=workers, predictor=_pinned_predictor(cpus, workers),
                                          num_cpus=len(cpus) / workers, **ray_options):
            count += table.num_rows
            assert all(e is None for e in table.column("error").to_pylist())
        total = time.perf_counter() - start
    return {"images": count, "total_s": total}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plain-child", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, nargs=2, default=[128, 1024], metavar=("N1", "N2"))
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches-per-call", type=int, default=4, help="device batches per call of a Ray worker")
    parser.add_argument("--calls-per-worker", type=int, default=2, help="calls a Ray worker runs at once")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure every engine this many times, interleaved; the median rate is reported")
    parser.add_argument("--source", type=Path, help="a folder of images to use instead of generated ones")
    parser.add_argument("--json", type=Path, default=Path("runs/benchmarks/ray_predict.json"))
    args = parser.parse_args(argv)
    if args.plain_child:
        return _plain_child(args.plain_child)

    cpus = sorted(os.sched_getaffinity(0))
    options = {"imgsz": args.imgsz, "batch_size": args.batch, "conf": 0.25}
    small, large = sorted(args.images)
    ray_options = {"batches_per_call": args.batches_per_call, "calls_per_worker": args.calls_per_worker}
    with tempfile.TemporaryDirectory() as folder:
        if args.source:
            from nasjax.predict.predictor import list_sources

            paths = [item.path for item in list_sources(str(args.source))][:large]
        else:
            paths = make_images(Path(folder), large)
        small = min(small, len(paths) // 2)
        report = {"machine": {"cpus": len(cpus), "platform": platform.platform(), "python": sys.version.split()[0]},
                  "settings": {**options, "images": [small, len(paths)], **ray_options, "repeats": args.repeats},
                  "runs": {}}
        measured = {}
        for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every engine
            for workers in args.workers:
                runs = [ray_predict(paths[:n], options, workers, cpus, **ray_options) for n in (small, len(paths))]
                measured.setdefault(f"ray_{workers}", []).append(marginal(*runs))
                print(f"ray, {workers} worker(s): {runs}", flush=True)
            runs = [plain_predict(paths[:n], options) for n in (small, len(paths))]
            measured.setdefault("plain", []).append(marginal(*runs))
            print(f"plain predict: {runs}", flush=True)
        for name, results in measured.items():
            rates = sorted(r["images_per_s"] for r in results)
            median = sorted(results, key=lambda r: r["images_per_s"])[len(results) // 2]
            report["runs"][name] = {**median, "rates": rates, "all": results}

    plain = report["runs"]["plain"]["images_per_s"]
    print(f"\n{small} and {len(paths)} images, {args.imgsz} px, batch {args.batch}, {len(cpus)} CPUs; "
          f"marginal images/s (one-time start apart), median of {args.repeats}")
    print(f"{'engine':<22}{'images/s':>10}{'range':>16}{'vs plain':>10}{'overhead/image':>16}{'start s':>9}")

    def spread(run) -> str:
        return f"{run['rates'][0]:.1f}-{run['rates'][-1]:.1f}"

    run = report["runs"]["plain"]
    print(f"{'plain predict':<22}{plain:>10.2f}{spread(run):>16}{1:>10.2f}{'':>16}{run['start_s']:>9.1f}")
    for workers in args.workers:
        run = report["runs"][f"ray_{workers}"]
        ratio = run["images_per_s"] / plain
        run["ratio_to_plain"], run["overhead_per_image"] = ratio, 1 / ratio - 1
        print(f"{f'ray, {workers} worker(s)':<22}{run['images_per_s']:>10.2f}{spread(run):>16}{ratio:>10.2f}"
              f"{run['overhead_per_image']:>15.1%}{run['start_s']:>9.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
