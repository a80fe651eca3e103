"""End-to-end `predict()` throughput of the reference super-gradients 3.7.1 YOLO-NAS on CPU.

Runs only in the separate super-gradients environment (see /work/shared/oracle/README.md):

    CRASH_HANDLER=FALSE SUPER_GRADIENTS_LOG_DIR=$(mktemp -d) \
        /work/oracle_venv/bin/python benchmarks/predict_reference.py --images FILE [FILE ...] \
        [--variant yolo_nas_s] [--batches 1 8 32] [--threads N] [--json OUT.json]

The model gets the deterministic training-form weights (seed 0, the tensors nasjax.build uses) and
the COCO processing parameters; `model.predict(paths, batch_size=b)` (conf 0.25, IoU 0.7, its
defaults otherwise; it fuses a copy of the model on first use) runs once on the first images to warm
up, then once timed over all the images. Reported per batch size: seconds and images per second,
files in and prediction objects out (super-gradients decodes every image before the first batch).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WEIGHT_SEED = 0


sys.path.insert(0, str(REPO / "tests" / "reference"))
# Pure-numpy helpers shared with the tests, and tv_cpu_shim (before torchvision / super_gradients).
from oracle_env import deterministic_weights as dw  # noqa: E402
import torch  # noqa: E402
from super_gradients.training import models  # noqa: E402
from super_gradients.training.processing.processing import default_yolo_nas_coco_processing_params  # noqa: E402


def build(variant: str) -> torch.nn.Module:
    model = models.get(variant, num_classes=80).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    arrays = dw.deterministic_state_dict(shapes, seed=WEIGHT_SEED)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, strict=True)
    model.set_dataset_processing_params(**default_yolo_nas_coco_processing_params())
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--variant", default="yolo_nas_s")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = build(args.variant)
    results = {"torch": torch.__version__, "threads": args.threads, "images": len(args.images)}
    for batch in args.batches:
        model.predict(args.images[: min(batch, len(args.images))], batch_size=batch)  # warm-up (and fusion)
        start = time.perf_counter()
        predictions = model.predict(args.images, batch_size=batch)
        seconds = time.perf_counter() - start
        count = len(list(predictions)) if len(args.images) > 1 else 1
        assert count == len(args.images)
        results[str(batch)] = {"seconds": seconds, "images_per_s": count / seconds}
        print(f"batch {batch:3d}: {count} images in {seconds:.2f} s, {count / seconds:.2f} images/s", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
