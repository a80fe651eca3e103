"""Training throughput (images/s) of nasjax's jitted training step, against super-gradients' own step.

    .venv/bin/python benchmarks/train.py [--variant yolo_nas_s] [--batches 8] [--size 640] [--repeats 5]
        [--warmup 2] [--dtype float32|bfloat16] [--threads N]
        [--oracle-python /work/oracle_venv/bin/python] [--json OUT]

Both sides do the same work per step on the same fixed synthetic batch (seeded images in [0, 1] and 6
seeded boxes per image with random classes among 80, `synthetic_batch` below) from the same
deterministic weights (seed 0, PyTorch's default initialisation as `nasjax.train.initial_model` draws
it; training form, BatchNorm in training mode): forward, PPYoloELoss of the
YOLO-NAS recipe (task-aligned assigner), backward, AdamW (lr 2e-4, weight decay 1e-5 off the biases and
BatchNorm) and the EMA update of the weights ("threshold" decay, 0.9997).

nasjax: `nasjax.train.make_train_step` (one jitted function, the state donated) in a subprocess; the
first call is the compile time, then --warmup steps, then --repeats timed steps, each blocked on the
whole new state and the loss. The reference: `train_reference.py` in the super-gradients environment
(`--oracle-python`, default $NASJAX_ORACLE_PYTHON or /work/oracle_venv/bin/python) with
torch.set_num_threads(--threads), same protocol (on CUDA when torch sees it there, else CPU). Images/s =
batch / median seconds per step; ratio = nasjax images/s / reference images/s (above 1: nasjax faster).
--threads (default: every core this process may use) also pins the nasjax process to that many cores
when it is fewer. Without the reference environment only the nasjax columns are filled.
The first-step losses of both sides are printed too: same weights and data, so they should agree.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from oracle import DEFAULT_ORACLE, run_reference

HERE = Path(__file__).resolve().parent
NUM_CLASSES = 80
BOXES_PER_IMAGE = 6
DATA_SEED = 0
WEIGHT_SEED = 0


def synthetic_batch(batch: int, size: int, boxes_per_image: int = BOXES_PER_IMAGE, seed: int = DATA_SEED):
    """Images (B, S, S, 3) float32 in [0, 1], boxes (B, M, 4) xyxy input pixels float32, labels (B, M)
    int32; every box valid (inside the image, sides 4% to 50% of it). Pure numpy: train_reference.py
    (no jax there) loads this file by path for the same batch."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    wh = rng.uniform(0.04 * size, 0.5 * size, (batch, boxes_per_image, 2))
    lo = rng.uniform(0.0, 1.0, (batch, boxes_per_image, 2)) * (size - wh)
    boxes = np.concatenate([lo, lo + wh], axis=-1).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (batch, boxes_per_image)).astype(np.int32)
    return images, boxes, labels


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _pin(threads: int) -> None:
    """Restrict this process to `threads` cores (XLA sizes its CPU thread pool from the affinity)."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return
    if threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])


def bf16_supported() -> bool:
    import inspect

    from nasjax.train.step import make_train_step

    return "compute_dtype" in inspect.signature(make_train_step).parameters


def _worker(args) -> dict:
    _pin(args.threads)
    import resource
    import statistics
    import time

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from nasjax.train.loss import LossTargets, PPYoloELossConfig
    from nasjax.train.initial import initial_model
    from nasjax.train.step import State, learning_rate_schedule, make_optimizer, make_train_step

    extra = {}
    if args.dtype == "bfloat16":
        if not bf16_supported():
            return {"error": "bfloat16 not supported (nasjax.train.make_train_step has no compute_dtype keyword)"}
        extra["compute_dtype"] = jnp.bfloat16

    device = jax.devices()[0]
    result: dict = {"jax": jax.__version__, "platform": device.platform, "device_kind": device.device_kind,
                    "dtype": args.dtype}
    for batch in args.batches:
        module = initial_model(args.variant, NUM_CLASSES, pretrained=False, seed=WEIGHT_SEED)
        module.train()
        train_graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        optimizer = make_optimizer(learning_rate_schedule(2e-4, 1000, 10))
        state = jax.tree.map(jnp.array, State(params, rest, optimizer.init(params), params, rest,
                                              jnp.zeros((), jnp.int32)))
        del module, params, rest
        step = make_train_step(train_graphdef, optimizer, PPYoloELossConfig(use_static_assigner=False), **extra)
        images, boxes, labels = synthetic_batch(batch, args.size)
        images = jnp.asarray(images)
        targets = LossTargets(jnp.asarray(boxes), jnp.asarray(labels), jnp.ones(labels.shape, bool))

        start = time.perf_counter()
        state, terms = step(state, images, targets)
        jax.block_until_ready((state, terms))
        compile_s = time.perf_counter() - start
        first_loss = float(terms["loss"])
        for _ in range(args.warmup):
            state, terms = step(state, images, targets)
            jax.block_until_ready((state, terms))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            state, terms = step(state, images, targets)
            jax.block_until_ready((state, terms))
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        result[str(batch)] = {"median_s": median, "min_s": min(times), "images_per_s": batch / median,
                              "compile_s": compile_s, "first_loss": first_loss,
                              "last_loss": float(terms["loss"]), "times_s": times}
        del state, step
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run_reference(oracle_python: str, args) -> dict | None:
    return run_reference(oracle_python, "train_reference.py", ["--variant", args.variant,
               "--batches", *map(str, args.batches), "--size", str(args.size), "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="yolo_nas_s")
    parser.add_argument("--batches", nargs="+", type=int, default=[8])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="nasjax compute dtype (bfloat16 only if make_train_step takes compute_dtype)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--oracle-python", default=DEFAULT_ORACLE)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(_worker(args)))
        return

    if args.dtype == "bfloat16" and not bf16_supported():
        sys.exit("--dtype bfloat16: not supported (nasjax.train.make_train_step has no compute_dtype keyword)")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cmd = [sys.executable, __file__, "--worker", "--variant", args.variant, "--batches", *map(str, args.batches),
           "--size", str(args.size), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--dtype", args.dtype, "--threads", str(args.threads)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"nasjax worker failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    ours = json.loads(run.stdout.splitlines()[-1])
    if "error" in ours:
        sys.exit(ours["error"])
    reference = _run_reference(args.oracle_python, args)

    nan = float("nan")
    print(f"\ntrain step {args.variant} {args.size}x{args.size}, {args.threads} threads; nasjax {args.dtype}, "
          f"jax {ours['jax']} on {ours['platform']} ({ours['device_kind']})"
          + (f"; reference torch {reference['torch']} on {reference['device']}" if reference else ""))
    print(f"{'batch':>5} {'nasjax img/s':>12} {'torch img/s':>11} {'ratio':>6} {'nasjax ms':>10} {'torch ms':>9} "
          f"{'compile s':>9} {'loss nasjax':>11} {'loss torch':>10}")
    for batch in args.batches:
        r = ours[str(batch)]
        ref = reference[str(batch)] if reference else {}
        ref_ips = ref.get("images_per_s", nan)
        print(f"{batch:>5} {r['images_per_s']:>12.2f} {ref_ips:>11.2f} {r['images_per_s'] / ref_ips:>6.2f} "
              f"{r['median_s'] * 1e3:>10.0f} {ref.get('median_s', nan) * 1e3:>9.0f} {r['compile_s']:>9.1f} "
              f"{r['first_loss']:>11.4f} {ref.get('first_loss', nan):>10.4f}")
    if load_before > 0.5:
        print(f"warning: 1-minute load average {load_before:.1f} before the run: other work shares the cores, and "
              "PyTorch's spinning OpenMP threads slow down far more than XLA's under that (timings unreliable)")
    print(f"peak RSS: nasjax {ours['peak_rss_mib']:.0f} MiB"
          + (f", reference {reference.get('peak_rss_mib', nan):.0f} MiB" if reference else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"nasjax": ours, "reference": reference, "threads": args.threads,
                                         "load_average_before": load_before, "variant": args.variant,
                                         "size": args.size}, indent=1) + "\n")


if __name__ == "__main__":
    main()
