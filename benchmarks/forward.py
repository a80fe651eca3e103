"""Jitted, fully fused nasjax forward latency on this machine, against the reference PyTorch model.

    python benchmarks/forward.py [--variants yolo_nas_s yolo_nas_m yolo_nas_l] [--batches 1 8]
        [--size 640] [--repeats 5] [--oracle-python /work/oracle_venv/bin/python] [--json OUT]

Each variant runs in its own process (so peak memory is per variant): deterministic weights (seed 0,
the same tensors the reference side uses), fully fused, `jax.jit` compile time measured on the first
call, then 2 warm-up and R timed calls per batch size (median and min wall time of the whole batch,
results blocked on). When the super-gradients environment exists (`--oracle-python`, default
$NASJAX_ORACLE_PYTHON or /work/oracle_venv/bin/python), `forward_reference.py` runs there with the
same thread count and the table shows the ratio nasjax / reference (below 1 is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from oracle import DEFAULT_ORACLE, run_reference

HERE = Path(__file__).resolve().parent


def _worker(variant: str, batches: list[int], size: int, repeats: int) -> dict:
    import numpy as np

    import nasjax

    detector = nasjax.build(variant, form="full")
    result = {}
    for batch in batches:
        images = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
        start = time.perf_counter()
        boxes, _ = detector(images)
        boxes.block_until_ready()
        compile_s = time.perf_counter() - start
        for _ in range(2):
            detector(images)[0].block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            detector(images)[0].block_until_ready()
            times.append((time.perf_counter() - start) * 1e3)
        result[str(batch)] = {
            "median_ms": statistics.median(times),
            "min_ms": min(times),
            "compile_s": compile_s,
        }
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run_reference(oracle_python: str, args) -> dict | None:
    return run_reference(oracle_python, "forward_reference.py", ["--variants", *args.variants,
               "--batches", *map(str, args.batches), "--size", str(args.size), "--threads", str(args.threads),
               "--repeats", str(args.repeats)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["yolo_nas_s", "yolo_nas_m", "yolo_nas_l"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--oracle-python", default=DEFAULT_ORACLE)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(_worker(args.worker, args.batches, args.size, args.repeats)))
        return

    import jax

    ours = {}
    for variant in args.variants:
        cmd = [sys.executable, __file__, "--worker", variant, "--batches", *map(str, args.batches),
               "--size", str(args.size), "--repeats", str(args.repeats)]
        ours[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    reference = _run_reference(args.oracle_python, args)

    print(f"\nforward {args.size}x{args.size}, fully fused, {args.threads} threads, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}"
          + (f", reference torch {reference['torch']}" if reference else ""))
    print(f"{'variant':<12} {'batch':>5} {'nasjax ms':>10} {'torch ms':>10} {'ratio':>6} {'compile s':>9} {'peak MiB':>9}")
    for variant in args.variants:
        for batch in args.batches:
            r = ours[variant][str(batch)]
            ref = reference[variant][str(batch)]["median_ms"] if reference else float("nan")
            print(f"{variant:<12} {batch:>5} {r['median_ms']:>10.1f} {ref:>10.1f} {r['median_ms'] / ref:>6.2f} "
                  f"{r['compile_s']:>9.1f} {ours[variant]['peak_rss_mib']:>9.0f}")
    if reference:
        print(f"reference peak RSS (all variants, one process): {reference.get('peak_rss_mib', float('nan')):.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"nasjax": ours, "reference": reference, "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
