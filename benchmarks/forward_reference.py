"""CPU forward-pass timing of the reference super-gradients 3.7.1 YOLO-NAS (PyTorch), fully fused.

Runs only in the separate super-gradients environment (see /work/shared/oracle/README.md):

    CRASH_HANDLER=FALSE SUPER_GRADIENTS_LOG_DIR=$(mktemp -d) \
        /work/oracle_venv/bin/python benchmarks/forward_reference.py \
        --variants yolo_nas_s yolo_nas_m yolo_nas_l --batches 1 8 --size 640 \
        [--threads N] [--repeats R] [--json OUT.json]

Each model gets the deterministic training-form weights (seed 0, the same tensors the nasjax tests
use), is fully fused with super-gradients' own `QARepVGGBlock.full_fusion()` (what deployment uses),
and is timed in eval mode under `torch.inference_mode()`: 2 warm-up passes, then R timed passes per
batch size (time.perf_counter). Reported: median and min milliseconds per forward pass (whole batch),
and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
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
from super_gradients.modules.qarepvgg_block import QARepVGGBlock  # noqa: E402
from super_gradients.training import models  # noqa: E402


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def build_fused(variant: str) -> torch.nn.Module:
    model = models.get(variant, num_classes=80).eval()
    sd = model.state_dict()
    arrays = dw.deterministic_state_dict({k: tuple(v.shape) for k, v in sd.items()}, seed=WEIGHT_SEED)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, strict=True)
    blocks = [m for m in model.modules() if isinstance(m, QARepVGGBlock)]
    for block in blocks:
        block.full_fusion()  # does partial_fusion() first by itself
    assert blocks and all(b.fully_fused for b in blocks)
    return model.eval()


def time_forward(model: torch.nn.Module, batch: int, size: int, repeats: int, warmup: int = 2) -> dict:
    x = torch.from_numpy(np.ascontiguousarray(dw.seeded_images(0, batch, size, size).transpose(0, 3, 1, 2)))
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["yolo_nas_s", "yolo_nas_m", "yolo_nas_l"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    results: dict = {}
    rows = []
    for variant in args.variants:
        model = build_fused(variant)
        results[variant] = {}
        for batch in args.batches:
            r = time_forward(model, batch, args.size, args.repeats)
            results[variant][str(batch)] = r
            rows.append((variant, batch, r["median_ms"], r["min_ms"]))
            print(f"{variant:12s} batch {batch:3d} {args.size}x{args.size}: "
                  f"median {r['median_ms']:9.1f} ms  min {r['min_ms']:9.1f} ms", flush=True)
        del model

    results.update(
        threads=args.threads,
        size=args.size,
        repeats=args.repeats,
        torch=torch.__version__,
        python=platform.python_version(),
        machine=platform.processor() or platform.machine(),
        peak_rss_mib=round(peak_rss_mib(), 1),
    )
    print()
    print(f"{'variant':12s} {'batch':>5s} {'median ms':>10s} {'min ms':>10s} {'ms/image':>9s}")
    for variant, batch, med, mn in rows:
        print(f"{variant:12s} {batch:5d} {med:10.1f} {mn:10.1f} {med / batch:9.1f}")
    print(f"threads {args.threads}, torch {torch.__version__}, peak RSS {results['peak_rss_mib']} MiB")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
