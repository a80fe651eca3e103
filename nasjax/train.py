"""Fine-tune YOLO-NAS on a YOLO-format dataset with optax (issue 7, first slice).

    python -m nasjax.train --data data.yaml --model yolo_nas_s --pretrained true --epochs 10 --batch 16 \
        --imgsz 640 --lr 2e-4 --project runs/train

    import nasjax.train
    result = nasjax.train.train("data.yaml", "yolo_nas_s", pretrained=True, epochs=10, project="runs/train")

The defaults are super-gradients' YOLO-NAS recipe (recipes/training_hyperparams/
coco2017_yolo_nas_train_params.yaml): AdamW, lr 2e-4, weight decay 1e-5 on the conv kernels only
(zero_weight_decay_on_bias_and_bn), linear warm-up from 1e-6 over 1000 steps, then cosine decay to
0.1 x lr (cosine_final_lr_ratio), PPYoloELoss with the task-aligned assigner, and an EMA of the weights
(and BatchNorm statistics) with decay 0.9997 of type "threshold": min(0.9997, (1 + step) / (10 + step)).

The model trains in the QARepVGG "training" form with BatchNorm in training mode (batch statistics,
running averages updated with the model's momentum). One jitted pure function does a step:
(params, batch stats, optimizer state, EMA) x batch -> the same, plus the loss terms.

Written to `project/`:
- `last/` and `best/`: `nasjax.checkpoint.save_detector` of the EMA model fused to "full" (read them with
  `nasjax.load(dir)`); best by the lowest validation loss (`best_metric="val_loss"`, default) or the
  highest COCO mAP@0.5:0.95 from `nasjax.validate` (`best_metric="map50_95"`);
- `state/`: an orbax CheckpointManager of the whole training state after each epoch, for `resume=True`;
- `results.json`: per-epoch train / validation losses (and mAP when measured).

Not done yet (issue 7): mosaic, random affine and mixup augmentation (see nasjax/input_pipeline.py),
multi-device / multi-host data parallelism, mixed precision, gradient accumulation, resuming mid-epoch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from nasjax import fusion
from nasjax.detector import Detector
from nasjax.input_pipeline import Loader, load_split
from nasjax.loss import LossTargets, PPYoloELossConfig, ppyoloe_loss

# super-gradients' coco2017_yolo_nas_train_params.yaml
DEFAULT_LR = 2e-4
WARMUP_INITIAL_LR = 1e-6
WARMUP_STEPS = 1000
COSINE_FINAL_LR_RATIO = 0.1
WEIGHT_DECAY = 1e-5
EMA_DECAY = 0.9997
BEST_METRICS = ("val_loss", "map50_95")


@dataclasses.dataclass
class State:
    params: Any
    rest: Any  # BatchNorm statistics (everything that is not an nnx.Param)
    opt_state: Any
    ema_params: Any
    ema_rest: Any
    step: Any


jax.tree_util.register_dataclass(
    State, data_fields=["params", "rest", "opt_state", "ema_params", "ema_rest", "step"], meta_fields=[]
)


def learning_rate_schedule(lr: float, total_steps: int, warmup_steps: int = WARMUP_STEPS,
                           warmup_initial_lr: float = WARMUP_INITIAL_LR,
                           final_lr_ratio: float = COSINE_FINAL_LR_RATIO) -> optax.Schedule:
    """Linear warm-up from warmup_initial_lr to lr over warmup_steps, then cosine to lr * final_lr_ratio."""
    warmup_steps = max(0, int(warmup_steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=warmup_initial_lr if warmup_steps else lr, peak_value=lr, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * final_lr_ratio,
    )


def make_optimizer(schedule: optax.Schedule, weight_decay: float = WEIGHT_DECAY) -> optax.GradientTransformation:
    """AdamW (PyTorch's betas and eps) with weight decay on the kernels only (not on biases nor BN)."""
    def decay_mask(params):
        return jax.tree.map(lambda p: p.ndim > 1, params)

    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=decay_mask)


def ema_decay(step, decay: float = EMA_DECAY):
    """super-gradients' "threshold" EMA decay: min(decay, (1 + step) / (10 + step))."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_train_step(train_graphdef, optimizer, loss_config: PPYoloELossConfig, ema_decay_value: float = EMA_DECAY):
    """The jitted step: (State, images, LossTargets) -> (State, loss terms)."""

    def step_fn(state: State, images, targets: LossTargets):
        def loss_fn(params, rest):
            # The statistics BatchNorm updates must be Variables of this trace, not of the jit around it.
            rest = jax.tree.map(lambda x: x, rest)
            model = nnx.merge(train_graphdef, params, rest)
            loss, terms = ppyoloe_loss(model(images), targets, loss_config)
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss, (terms, new_rest)

        grads, (terms, new_rest) = jax.grad(loss_fn, has_aux=True)(state.params, state.rest)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        d = ema_decay(state.step.astype(jnp.float32), ema_decay_value)
        mix = lambda e, p: e * d + (1.0 - d) * p  # noqa: E731
        ema_params = jax.tree.map(mix, state.ema_params, params)
        ema_rest = jax.tree.map(mix, state.ema_rest, new_rest)
        return State(params, new_rest, opt_state, ema_params, ema_rest, state.step + 1), terms

    return jax.jit(step_fn, donate_argnums=0)


def make_eval_loss(eval_graphdef, loss_config: PPYoloELossConfig):
    @jax.jit
    def eval_loss(params, rest, images, targets):
        model = nnx.merge(eval_graphdef, params, rest)
        return ppyoloe_loss(model(images), targets, loss_config)[1]

    return eval_loss


def _parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def transfer_matching(source: nnx.State, target: nnx.State) -> tuple[nnx.State, list[str]]:
    """`target` with every leaf that `source` has at the same path and shape replaced by the source's;
    the paths kept from target (e.g. a classification head for another number of classes)."""
    src = dict(nnx.to_flat_state(source))
    flat = []
    kept = []
    for path, leaf in nnx.to_flat_state(target):
        other = src.get(path)
        if other is not None and np.shape(other[...]) == np.shape(leaf[...]):
            leaf = leaf.replace(other[...])
        else:
            kept.append("/".join(map(str, path)))
        flat.append((path, leaf))
    return nnx.from_flat_state(flat), kept


def initial_model(model: str, num_classes: int, *, pretrained: bool, seed: int):
    """The training-form module: deterministic weights for `seed`, with the published weights of `model`
    copied in where the shapes match when `pretrained` (the classification head is kept for another
    number of classes)."""
    import nasjax

    fresh = nasjax.build(model, form="training", num_classes=num_classes, seed=seed)
    if not pretrained:
        return fresh.model
    published = nasjax.load(model, pretrained=True, fuse=False)
    if published.form != "training":
        raise ValueError(f"{model}: the published weights are in the {published.form!r} form, not 'training'")
    variables, kept = transfer_matching(published.variables, fresh.variables)
    if kept:
        print(f"pretrained {model}: {len(kept)} tensors initialised afresh (shape differs): {', '.join(kept[:6])}"
              + (" ..." if len(kept) > 6 else ""))
    return nnx.merge(fresh.graphdef, variables)


def _leaves_dict(tree) -> dict[str, np.ndarray]:
    return {f"{i:06d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}


def _from_leaves(tree, leaves: dict):
    treedef = jax.tree.structure(tree)
    return jax.tree.unflatten(treedef, [jnp.asarray(leaves[f"{i:06d}"]) for i in range(treedef.num_leaves)])


def ema_detector(eval_graphdef, state: State, class_names) -> Detector:
    model = nnx.merge(eval_graphdef, state.ema_params, state.ema_rest)
    return Detector(fusion.fuse(model, "full"), class_names)


def train(
    data,
    model: str = "yolo_nas_s",
    *,
    pretrained: bool = False,
    epochs: int = 10,
    batch: int = 16,
    imgsz: int = 640,
    lr: float = DEFAULT_LR,
    project: str | os.PathLike = "runs/train",
    seed: int = 0,
    weight_decay: float = WEIGHT_DECAY,
    warmup_steps: int = WARMUP_STEPS,
    warmup_initial_lr: float = WARMUP_INITIAL_LR,
    final_lr_ratio: float = COSINE_FINAL_LR_RATIO,
    ema_decay_value: float = EMA_DECAY,
    max_steps: int | None = None,
    best_metric: str = "val_loss",
    val: bool = True,
    resume: bool = False,
    workers: int = 4,
    method: str = "centre_pad",
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `model` on `data` (a YOLO data YAML / folder / shipped name with train: and val:).

    max_steps: stop after this many optimizer steps in all (for smoke runs); the schedule still spans
    `epochs`. Returns {"project", "history" (per-epoch dicts), "step_losses" (the training loss of every
    step), "best", "last"}.
    """
    if best_metric not in BEST_METRICS:
        raise ValueError(f"best_metric must be one of {', '.join(BEST_METRICS)}, got {best_metric!r}")
    project = Path(project).absolute()
    project.mkdir(parents=True, exist_ok=True)
    train_set = load_split(data, "train")
    val_set = load_split(data, "val") if val else None
    class_names = [train_set.names[i] for i in sorted(train_set.names)]
    max_boxes = max(1, max(len(s.boxes) for s in train_set.samples))
    loader = Loader(train_set, batch, imgsz, seed=seed, shuffle=True, augment=True, max_boxes=max_boxes,
                    workers=workers, method=method)
    val_loader = (Loader(val_set, batch, imgsz, shuffle=False, augment=False, drop_last=False,
                         max_boxes=max(1, max(len(s.boxes) for s in val_set.samples)), workers=workers, method=method)
                  if val_set is not None else None)

    total_steps = epochs * len(loader)
    schedule = learning_rate_schedule(lr, total_steps, warmup_steps, warmup_initial_lr, final_lr_ratio)
    optimizer = make_optimizer(schedule, weight_decay)
    loss_config = PPYoloELossConfig(use_static_assigner=False)

    module = initial_model(model, len(class_names), pretrained=pretrained, seed=seed)
    module.eval()
    eval_graphdef, _, _ = nnx.split(module, nnx.Param, ...)
    module.train()
    train_graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    state = State(params, rest, optimizer.init(params), params, rest, jnp.zeros((), jnp.int32))
    state = jax.tree.map(jnp.array, state)  # own copies: the step donates its input

    manager = ocp.CheckpointManager(project / "state", options=ocp.CheckpointManagerOptions(max_to_keep=2))
    history: list[dict] = []
    best_value = None
    start_epoch = 0
    if resume and manager.latest_step() is not None:
        epoch_done = manager.latest_step()
        restored = manager.restore(epoch_done, args=ocp.args.StandardRestore(_leaves_dict(state)))
        state = _from_leaves(state, restored)
        if (project / "results.json").is_file():
            saved = json.loads((project / "results.json").read_text())
            history, best_value = saved.get("history", []), saved.get("best_value")
        start_epoch = epoch_done + 1
        print(f"resuming from {project / 'state'} after epoch {epoch_done + 1}")

    train_step = make_train_step(train_graphdef, optimizer, loss_config, ema_decay_value)
    eval_loss = make_eval_loss(eval_graphdef, loss_config)
    step_losses: list[float] = []
    steps_done = int(state.step)
    for epoch in range(start_epoch, epochs):
        if max_steps is not None and steps_done >= max_steps:
            break
        bar = tqdm(loader.epoch(epoch), total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                   dynamic_ncols=True)
        sums: dict[str, float] = {}
        count = 0
        started = time.perf_counter()
        for images, targets in bar:
            state, terms = train_step(state, jnp.asarray(images), LossTargets(*map(jnp.asarray, targets)))
            terms = {k: float(v) for k, v in terms.items()}
            if not math.isfinite(terms["loss"]):
                raise FloatingPointError(f"non-finite training loss at step {steps_done + 1}: {terms}")
            step_losses.append(terms["loss"])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            steps_done += 1
            bar.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in terms.items()}
                            | {"lr": f"{float(schedule(steps_done - 1)):.2e}"})
            if max_steps is not None and steps_done >= max_steps:
                break
        bar.close()
        record: dict[str, Any] = {"epoch": epoch + 1, "steps": steps_done, "seconds": time.perf_counter() - started}
        record |= {f"train_{k}": v / max(count, 1) for k, v in sums.items()}
        if val_loader is not None:
            val_sums: dict[str, float] = {}
            val_images = 0
            for images, targets in val_loader.epoch(0):
                n = len(images)
                val_terms = eval_loss(state.ema_params, state.ema_rest, jnp.asarray(images),
                                      LossTargets(*map(jnp.asarray, targets)))
                for k, v in val_terms.items():
                    val_sums[k] = val_sums.get(k, 0.0) + float(v) * n
                val_images += n
            record |= {f"val_{k}": v / val_images for k, v in val_sums.items()}
        detector = ema_detector(eval_graphdef, state, class_names)
        if best_metric == "map50_95" and val_set is not None:
            from nasjax.validate import validate

            metrics = validate(detector, val_set, imgsz=imgsz, batch_size=batch, print_results=False,
                               progress=False, warmup=False)
            record["map50_95"], record["map50"] = float(metrics["map50_95"]), float(metrics["map50"])
        history.append(record)
        if progress:
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

        metadata = {"source_format": "nasjax.train", "epoch": epoch + 1, "steps": steps_done,
                    "train_base": model, "pretrained": bool(pretrained)}
        save_detector_to(detector, project / "last", metadata)
        value = (record.get("val_loss") if best_metric == "val_loss" else record.get("map50_95"))
        if value is None:
            value = record.get("train_loss")
        better = best_value is None or (value > best_value if best_metric == "map50_95" else value < best_value)
        if better:
            best_value = value
            save_detector_to(detector, project / "best", metadata | {best_metric: value})
        manager.save(epoch, args=ocp.args.StandardSave(_leaves_dict(state)))
        manager.wait_until_finished()
        (project / "results.json").write_text(json.dumps(
            {"history": history, "best_metric": best_metric, "best_value": best_value}, indent=2) + "\n")
    manager.close()
    return {"project": project, "history": history, "step_losses": step_losses,
            "best": project / "best", "last": project / "last"}


def save_detector_to(detector: Detector, directory: Path, metadata: dict) -> None:
    from nasjax.checkpoint import save_detector

    save_detector(detector, directory, metadata, overwrite=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nasjax.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="data YAML, dataset folder or shipped name (train: and val:)")
    parser.add_argument("--model", default="yolo_nas_s", help="yolo_nas_s, yolo_nas_m or yolo_nas_l")
    parser.add_argument("--pretrained", type=_parse_bool, default=False, help="start from the published COCO weights")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--best-metric", choices=BEST_METRICS, default="val_loss")
    parser.add_argument("--project", default="runs/train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--resume", action="store_true", help="continue from project/state")
    args = parser.parse_args(argv)
    result = train(args.data, args.model, pretrained=args.pretrained, epochs=args.epochs, batch=args.batch,
                   imgsz=args.imgsz, lr=args.lr, project=args.project, seed=args.seed,
                   weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, max_steps=args.max_steps,
                   best_metric=args.best_metric, resume=args.resume, workers=args.workers)
    print(f"last: {result['last']}\nbest: {result['best']}")


if __name__ == "__main__":
    main()
