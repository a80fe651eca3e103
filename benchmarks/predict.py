"""End-to-end `predict()` throughput, files in and Results out, against super-gradients' `predict()`.

    .venv/bin/python benchmarks/predict.py [--images DIR] [--limit 64] [--variant yolo_nas_s]
        [--batches 1 8 32] [--threads N] [--oracle-python /work/oracle_venv/bin/python] [--json OUT]

Both sides get the same image files (the first --limit images of --images, default the COCO128 images
in ../shared/assets), the same deterministic weights (seed 0) and the defaults of super-gradients'
predict() (centre padding 636/640, conf 0.25, IoU 0.7). For each batch size one run over the first
images compiles / warms up, then one timed run covers all of them; images per second = images / wall
time, from the file names to the list of results. nasjax runs in a subprocess per batch size (so one
batch size's compile cache and threads do not help another) with its default reader threads; XLA uses
every core. The reference runs `predict_reference.py` in the super-gradients environment with
torch.set_num_threads(--threads) (default: every core).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from oracle import DEFAULT_ORACLE, run_reference

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "assets" / "coco128" / "images" / "train2017"


def _worker(variant: str, batch: int, images: list[str]) -> dict:
    import nasjax

    detector = nasjax.build(variant)
    start = time.perf_counter()
    detector.predict(images[: min(batch, len(images))], batch_size=batch)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    results = detector.predict(images, batch_size=batch)
    seconds = time.perf_counter() - start
    assert len(results) == len(images)
    return {"seconds": seconds, "images_per_s": len(images) / seconds, "warmup_s": warmup,
            "detections": sum(len(r) for r in results)}


def _run_reference(oracle_python: str, args, images: list[str]) -> dict | None:
    return run_reference(oracle_python, "predict_reference.py", ["--variant", args.variant,
               "--batches", *map(str, args.batches), "--threads", str(args.threads),
               "--images", *images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--variant", default="yolo_nas_s")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--oracle-python", default=DEFAULT_ORACLE)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image-list", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        images = json.loads(args.image_list.read_text())
        print(json.dumps(_worker(args.variant, args.worker, images)))
        return

    from nasjax.predict.predictor import list_sources

    if not args.images.exists():
        sys.exit(f"{args.images} not found: pass --images DIR")
    images = [item.path for item in list_sources(args.images)][: args.limit]
    ours = {}
    with tempfile.TemporaryDirectory() as tmp:
        image_list = Path(tmp) / "images.json"
        image_list.write_text(json.dumps(images))
        for batch in args.batches:
            cmd = [sys.executable, __file__, "--worker", str(batch), "--image-list", str(image_list),
                   "--variant", args.variant]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            ours[str(batch)] = json.loads(out.strip().splitlines()[-1])
    reference = _run_reference(args.oracle_python, args, images)

    import jax

    print(f"\npredict, {len(images)} images from {args.images}, {args.variant}, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}" + (f", reference torch {reference['torch']} with {args.threads} threads"
                                            if reference else ""))
    print(f"{'batch':>5} {'nasjax img/s':>13} {'torch img/s':>12} {'speed-up':>9} {'warm-up s':>10}")
    for batch in args.batches:
        r = ours[str(batch)]
        ref = reference[str(batch)]["images_per_s"] if reference else float("nan")
        print(f"{batch:>5} {r['images_per_s']:>13.2f} {ref:>12.2f} {r['images_per_s'] / ref:>9.2f} {r['warmup_s']:>10.1f}")
    if args.json:
        args.json.write_text(json.dumps({"nasjax": ours, "reference": reference, "images": images,
                                         "threads": args.threads}, indent=1) + "\n")


if __name__ == "__main__":
    main()
