"""Training-step timing of the reference super-gradients 3.7.1 YOLO-NAS (PyTorch), for benchmarks/train.py.

Runs only in the separate super-gradients environment (see /work/shared/oracle/README.md):

    CRASH_HANDLER=FALSE SUPER_GRADIENTS_LOG_DIR=$(mktemp -d) \
        /work/oracle_venv/bin/python benchmarks/train_reference.py --variant yolo_nas_s --batches 8 \
        --size 640 [--threads N] [--repeats R] [--warmup W] [--json OUT.json]

The model is `models.get(variant, num_classes=80)` with the deterministic training-form weights (seed 0,
--init scratch: PyTorch's default initialisation, the tensors nasjax's `initial_model(..., pretrained=False,
seed=0)` starts from; --init test: the parity tests' randomised ones), in train mode. One step is
what super-gradients' Trainer does per batch with the YOLO-NAS recipe
(recipes/training_hyperparams/coco2017_yolo_nas_train_params.yaml): forward, `PPYoloELoss(num_classes=80,
use_static_assigner=False)` (default weights 1.0 / 2.5 / 0.5, reg_max inferred from the outputs),
backward, `torch.optim.AdamW(lr=2e-4, weight_decay=1e-5)` over super-gradients' own param groups with
zero weight decay on biases and BatchNorm (zero_weight_decay_on_bias_and_bn), zero_grad, and
`ModelEMA.from_params(decay=0.9997, decay_type="threshold").update`. The batch is train.py's
`synthetic_batch` (NCHW here), the targets in DetectionCollateFN's flat format: (N, 6) rows
[image_index, class, cx, cy, w, h] in pixels. The first step is timed separately ("compile_s": there is
no compilation, it is the cold first step), then W warm-up and R timed steps; on CUDA each step ends with
torch.cuda.synchronize().
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(REPO / "tests" / "reference"))
# Pure-numpy helpers shared with the tests, and tv_cpu_shim (before torchvision / super_gradients).
from oracle_env import deterministic_weights as dw, load_by_path  # noqa: E402
import torch  # noqa: E402
from super_gradients.training import models  # noqa: E402
from super_gradients.training.losses.ppyolo_loss import PPYoloELoss  # noqa: E402
from super_gradients.training.utils.ema import ModelEMA  # noqa: E402
from super_gradients.training.utils.optimizer_utils import (  # noqa: E402
    initialize_param_groups,
    separate_zero_wd_params_groups_for_optimizer,
)

bench = load_by_path("_nasjax_bench_train", REPO / "benchmarks" / "train.py")  # stdlib + numpy only
LR, WEIGHT_DECAY, EMA_DECAY = 2e-4, 1e-5, 0.9997


def peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def build(variant: str, device: torch.device, init: str = "scratch") -> torch.nn.Module:
    model = models.get(variant, num_classes=bench.NUM_CLASSES)
    sd = model.state_dict()
    arrays = dw.deterministic_state_dict({k: tuple(v.shape) for k, v in sd.items()}, seed=bench.WEIGHT_SEED,
                                         init=init)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, strict=True)
    return model.to(device).train()


def flat_targets(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B, M, 4) xyxy + (B, M) classes -> DetectionCollateFN's (B*M, 6) [image, class, cx, cy, w, h]."""
    b, m = labels.shape
    image = np.repeat(np.arange(b), m).reshape(b, m)
    cxcy = (boxes[..., :2] + boxes[..., 2:]) / 2
    wh = boxes[..., 2:] - boxes[..., :2]
    rows = np.concatenate([image[..., None], labels[..., None], cxcy, wh], axis=-1)
    return rows.reshape(b * m, 6).astype(np.float32)


def time_training(variant: str, batch: int, size: int, repeats: int, warmup: int, device: torch.device,
                  init: str = "scratch") -> dict:
    model = build(variant, device, init)
    criterion = PPYoloELoss(num_classes=bench.NUM_CLASSES, use_static_assigner=False)
    groups = separate_zero_wd_params_groups_for_optimizer(model, initialize_param_groups(model, LR), WEIGHT_DECAY)
    optimizer = torch.optim.AdamW(groups, lr=LR, weight_decay=WEIGHT_DECAY)
    ema = ModelEMA.from_params(model, decay=EMA_DECAY, decay_type="threshold")

    images, boxes, labels = bench.synthetic_batch(batch, size)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    targets = torch.from_numpy(flat_targets(boxes, labels)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    counter = {"step": 0}

    def step() -> float:
        loss, _ = criterion(model(x), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model, step=counter["step"], total_steps=1000)
        counter["step"] += 1
        sync()
        return float(loss.detach())

    start = time.perf_counter()
    first_loss = step()
    first_s = time.perf_counter() - start
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        last_loss = step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "images_per_s": batch / median, "compile_s": first_s,
            "first_loss": first_loss, "last_loss": last_loss, "times_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="yolo_nas_s")
    parser.add_argument("--batches", nargs="+", type=int, default=[8])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--threads", type=int, default=bench.default_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--init", choices=["scratch", "test"], default="scratch",
                        help="deterministic weights: scratch (what nasjax.train.initial_model starts from) or test")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict = {}
    for batch in args.batches:
        r = time_training(args.variant, batch, args.size, args.repeats, args.warmup, device, args.init)
        results[str(batch)] = r
        print(f"{args.variant} batch {batch:3d} {args.size}x{args.size}: {r['images_per_s']:8.2f} img/s, "
              f"median {r['median_s'] * 1e3:9.1f} ms, first step {r['compile_s']:.1f} s, "
              f"loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}", flush=True)
    results.update(
        variant=args.variant,
        init=args.init,
        threads=args.threads,
        size=args.size,
        repeats=args.repeats,
        warmup=args.warmup,
        torch=torch.__version__,
        device=torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        python=platform.python_version(),
        machine=platform.processor() or platform.machine(),
        peak_rss_mib=round(peak_rss_mib(), 1),
    )
    print(f"threads {args.threads}, torch {torch.__version__} on {results['device']}, "
          f"peak RSS {results['peak_rss_mib']} MiB")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
