"""Fine-tune YOLO-NAS on your own dataset with optax, on one device or all of them (issue 7).

    python -m nasjax.train --data data.yaml --model yolo_nas_s --pretrained true --epochs 10 --batch 16 \
        --imgsz 640 --project runs/train [--name exp] [--dtype bfloat16] [--resume]

    from nasjax.train.trainer import train
    result = train("data.yaml", "yolo_nas_s", pretrained=True, epochs=10)  # result["best"]: nasjax.load it
    model = nasjax.load("yolo_nas_s", fuse=False); model.train("data.yaml", epochs=10)  # from these weights

The defaults are super-gradients' YOLO-NAS recipe (recipes/training_hyperparams/
coco2017_yolo_nas_train_params.yaml, dataset_params/coco_detection_yolo_nas_dataset_params.yaml): AdamW,
lr 2e-4, weight decay 1e-5 on the conv kernels only (zero_weight_decay_on_bias_and_bn), linear warm-up
from 1e-6 over 1000 steps, then cosine decay to 0.1 x lr (cosine_final_lr_ratio), PPYoloELoss with the
task-aligned assigner, an EMA of the weights (and BatchNorm statistics) with decay 0.9997 of type
"threshold": min(0.9997, (1 + step) / (10 + step)), and the recipe's augmentations
(`nasjax.input_pipeline.Augmentation`: random affine, channel swap, HSV, flip, mixup; mosaic optional).
Without `pretrained`, training starts from PyTorch's default initialisation drawn deterministically from
`seed` (`nasjax.deterministic_weights.scratch_tensor`), as super-gradients does from scratch.

The model trains in the QARepVGG "training" form with BatchNorm in training mode (batch statistics over
the whole global batch, running averages updated with the model's momentum). One jitted pure function
does a step: (params, batch stats, optimizer state, EMA) x batch -> the same, plus the loss terms.

Data parallel: the batch is split over all devices (`jax.sharding`, a 1-D "data" mesh), the state is
replicated, and XLA inserts the gradient all-reduce and the cross-device BatchNorm statistics; the
result equals a single-device step on the same global batch to float rounding. With several
processes, each loads the whole global batch order and feeds its own rows. `dtype="bfloat16"` runs the
forward and backward pass in bfloat16 with float32 master weights, float32 BatchNorm statistics and a
float32 loss.

Written to `project/name/` (name "exp", then "exp2", ... as Ultralytics does, unless `exist_ok`):
- `last/` and `best/`: `nasjax.checkpoint.save_detector` of the EMA model fused to "full" (read them with
  `nasjax.load(dir)`); best by the highest COCO mAP@0.5:0.95 measured on the validation split with
  `nasjax.validate` after every epoch (`best_metric="map50_95"`, default) or by the lowest validation
  loss (`"val_loss"`, cheaper: no NMS and no COCO evaluation);
- `state/`: an orbax CheckpointManager of the whole training state after each epoch; `resume=True`
  continues exactly where the last completed epoch ended (same batches, same schedule);
- `run.json` (what was trained: variant, classes, settings), `results.json` (per-epoch losses, mAP,
  time) and `results.png` (the curves).

Not done: gradient accumulation, resuming in the middle of an epoch.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from nasjax.model import fusion
from nasjax.utils.atomic_files import write_atomic
from nasjax.model.core import Network
from nasjax.data.input_pipeline import Augmentation, Loader, load_split
from nasjax.train.loss import LossTargets, PPYoloELossConfig, ppyoloe_loss

# super-gradients' coco2017_yolo_nas_train_params.yaml
DEFAULT_LR = 2e-4
WARMUP_INITIAL_LR = 1e-6
WARMUP_STEPS = 1000
COSINE_FINAL_LR_RATIO = 0.1
WEIGHT_DECAY = 1e-5
EMA_DECAY = 0.9997
BEST_METRICS = ("map50_95", "val_loss")
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


class TrainingError(ValueError):
    """A training run cannot start or go on; the message says what to change."""


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


def make_train_step(train_graphdef, optimizer, loss_config: PPYoloELossConfig, ema_decay_value: float = EMA_DECAY,
                    *, compute_dtype=None, mesh: Mesh | None = None):
    """The jitted step: (State, images, LossTargets) -> (State, loss terms). It donates its State.

    compute_dtype: None (float32) or jnp.bfloat16: the forward and backward pass run in that dtype on a
    copy of the float32 weights (the gradient flows back through the cast to the float32 master
    weights); BatchNorm statistics stay float32 and the loss is computed in float32.
    mesh: with a mesh, the state comes out replicated over it (the batch is expected split over its
    "data" axis); XLA then all-reduces the gradients and BatchNorm's batch statistics.
    """

    def step_fn(state: State, images, targets: LossTargets):
        def loss_fn(params, rest):
            # The statistics BatchNorm updates must be Variables of this trace, not of the jit around it.
            rest = jax.tree.map(lambda x: x, rest)
            x = images
            if compute_dtype is not None:
                params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
                x = images.astype(compute_dtype)
            model = nnx.merge(train_graphdef, params, rest)
            # The loss in float32 at least (bfloat16 outputs are promoted, float64 ones kept).
            outputs = jax.tree.map(lambda o: o.astype(jnp.promote_types(o.dtype, jnp.float32)), model(x))
            loss, terms = ppyoloe_loss(outputs, targets, loss_config)
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss, (terms, new_rest)

        grads, (terms, new_rest) = jax.grad(loss_fn, has_aux=True)(state.params, state.rest)
        new_rest = jax.tree.map(lambda n, o: n.astype(o.dtype), new_rest, state.rest)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        d = ema_decay(state.step.astype(jnp.float32), ema_decay_value)
        mix = lambda e, p: e * d + (1.0 - d) * p  # noqa: E731
        ema_params = jax.tree.map(mix, state.ema_params, params)
        ema_rest = jax.tree.map(mix, state.ema_rest, new_rest)
        return State(params, new_rest, opt_state, ema_params, ema_rest, state.step + 1), terms

    if mesh is None:
        return jax.jit(step_fn, donate_argnums=0)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step_fn, donate_argnums=0, out_shardings=(replicated, replicated))


@functools.lru_cache(maxsize=8)
def cached_train_step(train_graphdef, schedule_args: tuple, weight_decay: float, loss_config: PPYoloELossConfig,
                      ema_decay_value: float, compute_dtype, mesh: Mesh | None):
    """`make_train_step` for these settings, made once per process: runs with the same model, schedule
    and mesh (resumes, repeated calls in a notebook, tests) reuse the compiled step."""
    optimizer = make_optimizer(learning_rate_schedule(*schedule_args), weight_decay)
    return make_train_step(train_graphdef, optimizer, loss_config, ema_decay_value, compute_dtype=compute_dtype,
                           mesh=mesh)


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named "data" over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(list(devices) if devices is not None else jax.devices()), ("data",))


def shard_batch(mesh: Mesh, images: np.ndarray, targets: LossTargets) -> tuple[jax.Array, LossTargets]:
    """Global arrays split along the batch over the mesh's "data" axis, from the rows of this process
    (each process loads the same global batch order and keeps its own contiguous block of rows)."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    count, index = jax.process_count(), jax.process_index()
    rows = slice(index * len(images) // count, (index + 1) * len(images) // count)

    def put(array):
        return jax.make_array_from_process_local_data(sharding, np.ascontiguousarray(array[rows]))

    return put(images), LossTargets(*map(put, targets))


def check_batch_split(batch: int, mesh: Mesh) -> None:
    devices = mesh.devices.size
    if batch % devices:
        lower, upper = (batch // devices) * devices, -(-batch // devices) * devices
        choices = " or ".join(str(b) for b in (lower, upper) if b > 0)
        raise TrainingError(f"batch {batch} does not split evenly over {devices} devices; use a multiple of "
                            f"{devices} ({choices}), or fewer devices")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "Out of memory" in text


def out_of_memory_message(batch: int, imgsz: int, mesh: Mesh, dtype: str) -> str:
    devices = mesh.devices.size
    kind = mesh.devices.flat[0].platform.upper()
    smaller = max(devices, (batch // 2) // devices * devices)
    hint = f"try --batch {smaller}" if smaller < batch else "lower --imgsz"
    if dtype == "float32":
        hint += " or --dtype bfloat16"
    return (f"out of memory training at batch {batch} x {imgsz}x{imgsz} px on {devices} {kind} device(s) "
            f"({batch // devices} images each): {hint}")


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


def initial_model(model, num_classes: int, *, pretrained: bool, seed: int):
    """The training-form module to start from.

    model: a variant name, or a `Network` in the training form (training goes on from its weights; a
    different class count gets a fresh classification head). For a name: PyTorch's default
    initialisation drawn from `seed` (`init="scratch"`), with the published weights of `model` copied in
    where the shapes match when `pretrained` (the classification head is kept for another number of
    classes)."""
    import nasjax

    if isinstance(model, Network):
        if model.form != "training":
            raise TrainingError(f"this detector is in the {model.form!r} form, which cannot be trained (QARepVGG "
                                f"fusion cannot be undone); load it with nasjax.load(..., fuse=False)")
        published, variant = model, model.config.name
    else:
        published, variant = None, model
    fresh = nasjax.build(variant, form="training", num_classes=num_classes, seed=seed, init="scratch")
    if published is None and pretrained:
        published = nasjax.load(variant, pretrained=True, fuse=False)
        if published.form != "training":
            raise TrainingError(f"{variant}: the published weights are in the {published.form!r} form, not "
                                f"'training'; they cannot be fine-tuned")
    if published is None:
        return fresh.model
    variables, kept = transfer_matching(published.variables, fresh.variables)
    if kept:
        print(f"{variant}: {len(kept)} tensors initialised afresh (shape differs): {', '.join(kept[:6])}"
              + (" ..." if len(kept) > 6 else ""))
    return nnx.merge(fresh.graphdef, variables)


def _leaves_dict(tree) -> dict[str, np.ndarray]:
    return {f"{i:06d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}


def _from_leaves(tree, leaves: dict):
    treedef = jax.tree.structure(tree)
    return jax.tree.unflatten(treedef, [jnp.asarray(leaves[f"{i:06d}"]) for i in range(treedef.num_leaves)])


def ema_detector(eval_graphdef, state: State, class_names) -> Network:
    model = nnx.merge(eval_graphdef, state.ema_params, state.ema_rest)
    return Network(fusion.fuse(model, "full"), class_names)


AUGMENTATIONS = ("recipe", "light", "none")


def resolve_augmentation(augmentation: "Augmentation | str | None", mosaic: float | None = None,
                         mixup: float | None = None) -> Augmentation:
    """An `Augmentation` from a preset name ("recipe": super-gradients' YOLO-NAS recipe, the default;
    "light": flip and HSV only; "none") or an instance, with the mosaic / mixup probabilities overridden."""
    if augmentation is None or isinstance(augmentation, str):
        name = augmentation or "recipe"
        if name not in AUGMENTATIONS:
            raise TrainingError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")
        augmentation = {"recipe": Augmentation, "light": Augmentation.light, "none": Augmentation.none}[name]()
    overrides = {k: v for k, v in (("mosaic_prob", mosaic), ("mixup_prob", mixup)) if v is not None}
    return dataclasses.replace(augmentation, **overrides) if overrides else augmentation


def run_directory(project: str | os.PathLike, name: str | None, *, resume: bool, exist_ok: bool) -> Path:
    """Where a run writes: project/name. A new run never mixes with an old one: name "exp" becomes
    "exp2", "exp3", ... when taken (unless exist_ok, which replaces the old training state). resume
    without a name picks the most recently written run under project that has a training state."""
    project = Path(project).absolute()
    if resume:
        if name:
            directory = project / name
        else:
            runs = [d for d in project.glob("*") if (d / "state").is_dir()] if project.is_dir() else []
            if not runs:
                raise TrainingError(f"--resume: no run with a training state under {project}; start a new run "
                                    f"without --resume, or pass the --project / --name of the run to continue")
            directory = max(runs, key=lambda d: (d / "results.json").stat().st_mtime
                            if (d / "results.json").exists() else d.stat().st_mtime)
        if not (directory / "state").is_dir():
            raise TrainingError(f"--resume: {directory} has no training state (state/); start a new run without "
                                f"--resume, or pass the --project / --name of the run to continue")
        return directory
    name = name or "exp"
    directory = project / name
    if directory.exists() and not exist_ok:
        number = 2
        while (project / f"{name}{number}").exists():
            number += 1
        directory = project / f"{name}{number}"
    return directory


def check_resume(directory: Path, run: dict) -> None:
    """Check the saved run.json of `directory` against what this call would train."""
    path = directory / "run.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise TrainingError(f"--resume: cannot read {path} ({error}); it records what the run trains. Start a "
                            f"new run without --resume") from error
    for key, what in (("model", "model"), ("class_names", "classes")):
        if saved.get(key) != run[key]:
            mine, theirs = run[key], saved.get(key)
            if key == "class_names":
                mine, theirs = f"{len(mine)} classes {mine[:4]}...", f"{len(theirs or [])} classes {(theirs or [])[:4]}..."
            raise TrainingError(
                f"--resume: {directory} trains {what} {theirs}, not {mine}; a checkpoint of another "
                f"{'variant' if key == 'model' else 'class list'} cannot be resumed. Resume with the run's own "
                f"--model / --data, or start a new run without --resume (fine-tune from its weights with "
                f"nasjax.load('{directory / 'last'}', ...) is not possible: last/ is fused)")


def train(
    data,
    model="yolo_nas_s",
    *,
    pretrained: bool = False,
    epochs: int = 10,
    batch: int = 16,
    imgsz: int = 640,
    lr: float = DEFAULT_LR,
    project: str | os.PathLike = "runs/train",
    name: str | None = None,
    exist_ok: bool = False,
    seed: int = 0,
    weight_decay: float = WEIGHT_DECAY,
    warmup_steps: int = WARMUP_STEPS,
    warmup_initial_lr: float = WARMUP_INITIAL_LR,
    final_lr_ratio: float = COSINE_FINAL_LR_RATIO,
    ema_decay_value: float = EMA_DECAY,
    augmentation: "Augmentation | str | None" = None,
    mosaic: float | None = None,
    mixup: float | None = None,
    close_augmentation: int = 0,
    static_assigner_epochs: int = 0,
    dtype: str = "float32",
    devices: Sequence[jax.Device] | None = None,
    max_steps: int | None = None,
    best_metric: str = "map50_95",
    val: bool = True,
    plot: bool = True,
    resume: bool = False,
    workers: int = 4,
    method: str = "centre_pad",
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `model` on `data` (a YOLO data YAML / folder / shipped name with train: and val:).

    model: a variant name or a training-form `Network` (see `initial_model`). augmentation: "recipe"
    (default), "light", "none" or an `Augmentation`; mosaic / mixup override its probabilities;
    close_augmentation: the last N epochs train with "light" augmentation (Ultralytics' close_mosaic).
    static_assigner_epochs: the first N epochs assign targets with ATSS, then the task-aligned assigner
    (PP-YOLOE's static_assigner_epoch; the YOLO-NAS recipe uses the task-aligned assigner throughout: 0).
    dtype: "float32" or "bfloat16" (mixed precision). devices: the devices to split each batch over
    (default all). max_steps: stop after this many optimizer steps in all (for smoke runs); the schedule
    still spans `epochs`. Returns {"project" (the run directory), "history" (per-epoch dicts),
    "step_losses" (the training loss of every step run by this call), "best", "last"}.
    """
    if best_metric not in BEST_METRICS:
        raise TrainingError(f"best_metric must be one of {', '.join(BEST_METRICS)}, got {best_metric!r}")
    if dtype not in DTYPES:
        raise TrainingError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if epochs < 1 or batch < 1 or imgsz < 32 or imgsz % 32:
        raise TrainingError(f"epochs and batch must be positive and imgsz a multiple of 32 (got epochs {epochs}, "
                            f"batch {batch}, imgsz {imgsz})")
    augmentation = resolve_augmentation(augmentation, mosaic, mixup)
    mesh = data_mesh(devices)
    check_batch_split(batch, mesh)
    train_set = load_split(data, "train")
    val_set = load_split(data, "val") if val else None
    class_names = [train_set.names[i] for i in sorted(train_set.names)]
    variant = model.config.name if isinstance(model, Network) else model
    module = initial_model(model, len(class_names), pretrained=pretrained, seed=seed)
    run = {"model": variant, "class_names": class_names, "data": str(data), "pretrained": bool(pretrained),
           "epochs": epochs, "batch": batch, "imgsz": imgsz, "lr": lr, "seed": seed, "dtype": dtype,
           "augmentation": dataclasses.asdict(augmentation), "best_metric": best_metric,
           "static_assigner_epochs": static_assigner_epochs}
    directory = run_directory(project, name, resume=resume, exist_ok=exist_ok)
    if resume:
        check_resume(directory, run)
    elif (directory / "state").exists():
        shutil.rmtree(directory / "state")  # exist_ok: this run replaces the old one's training state
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "run.json", lambda tmp: tmp.write_text(json.dumps(run, indent=2) + "\n"))

    loader_options = dict(seed=seed, shuffle=True, workers=workers, method=method)
    loader = Loader(train_set, batch, imgsz, augmentation=augmentation, **loader_options)
    light_loader = (Loader(train_set, batch, imgsz, augmentation=Augmentation.light(), max_boxes=loader.max_boxes,
                           **loader_options) if close_augmentation else None)
    val_loader = (Loader(val_set, batch, imgsz, shuffle=False, augment=False, drop_last=False,
                         max_boxes=max(1, max(len(s.boxes) for s in val_set.samples)), workers=workers, method=method)
                  if val_set is not None else None)

    total_steps = epochs * len(loader)
    schedule_args = (lr, total_steps, warmup_steps, warmup_initial_lr, final_lr_ratio)
    schedule = learning_rate_schedule(*schedule_args)
    optimizer = make_optimizer(schedule, weight_decay)

    module.eval()
    eval_graphdef, _, _ = nnx.split(module, nnx.Param, ...)
    module.train()
    train_graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    state = State(params, rest, optimizer.init(params), params, rest, jnp.zeros((), jnp.int32))
    replicated = NamedSharding(mesh, PartitionSpec())
    state = jax.device_put(jax.tree.map(jnp.array, state), replicated)  # own copies: the step donates its input

    manager = ocp.CheckpointManager(directory / "state", options=ocp.CheckpointManagerOptions(max_to_keep=2))
    history: list[dict] = []
    best_value = None
    start_epoch = 0
    if resume:
        epoch_done = manager.latest_step()
        if epoch_done is None:
            raise TrainingError(f"--resume: {directory / 'state'} holds no completed epoch; start a new run")
        try:
            restored = manager.restore(epoch_done, args=ocp.args.StandardRestore(_leaves_dict(state)))
        except (ValueError, KeyError) as error:
            raise TrainingError(f"--resume: the training state in {directory / 'state'} does not fit a {variant} "
                                f"with {len(class_names)} classes ({error}); start a new run") from error
        state = jax.device_put(_from_leaves(state, restored), replicated)
        if (directory / "results.json").is_file():
            saved = json.loads((directory / "results.json").read_text())
            history, best_value = saved.get("history", [])[:epoch_done + 1], saved.get("best_value")
        start_epoch = epoch_done + 1
        print(f"resuming {directory} after epoch {epoch_done + 1} of {epochs}")

    def train_step_for(epoch: int):
        # PP-YOLOE's static_assigner_epoch: ATSS for the first epochs, then the task-aligned assigner.
        config = PPYoloELossConfig(use_static_assigner=epoch < static_assigner_epochs)
        return cached_train_step(train_graphdef, schedule_args, weight_decay, config, ema_decay_value,
                                 DTYPES[dtype], mesh)

    eval_loss = make_eval_loss(eval_graphdef, PPYoloELossConfig(use_static_assigner=False))
    step_losses: list[float] = []
    steps_done = int(state.step)
    for epoch in range(start_epoch, epochs):
        if max_steps is not None and steps_done >= max_steps:
            break
        train_step = train_step_for(epoch)
        epoch_loader = light_loader if light_loader is not None and epoch >= epochs - close_augmentation else loader
        bar = tqdm(epoch_loader.epoch(epoch), total=len(loader), desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not progress, dynamic_ncols=True)
        sums: dict[str, float] = {}
        count = 0
        started = time.perf_counter()
        for images, targets in bar:
            try:
                state, terms = train_step(state, *shard_batch(mesh, images, targets))
                terms = {k: float(v) for k, v in terms.items()}
            except (jax.errors.JaxRuntimeError, MemoryError) as error:
                if is_out_of_memory(error):
                    raise TrainingError(out_of_memory_message(batch, imgsz, mesh, dtype)) from error
                raise
            if not math.isfinite(terms["loss"]):
                raise FloatingPointError(f"non-finite training loss at step {steps_done + 1}: {terms}; lower --lr "
                                         f"(or use --dtype float32)")
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
        record: dict[str, Any] = {"epoch": epoch + 1, "steps": steps_done,
                                  "seconds": round(time.perf_counter() - started, 2)}
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
            from nasjax.validate.validator import validate

            metrics = validate(detector, val_set, imgsz=imgsz, batch_size=batch, print_results=False,
                               progress=False, warmup=False)
            record["map50_95"], record["map50"] = float(metrics["map50_95"]), float(metrics["map50"])
        history.append(record)
        if progress:
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

        metadata = {"source_format": "nasjax.train", "epoch": epoch + 1, "steps": steps_done,
                    "train_base": variant, "pretrained": bool(pretrained)}
        save_detector_to(detector, directory / "last", metadata)
        value = record.get(best_metric)
        if value is None:
            value = record.get("val_loss", record.get("train_loss"))
        better = best_value is None or (value > best_value if best_metric == "map50_95" else value < best_value)
        if better:
            best_value = value
            save_detector_to(detector, directory / "best", metadata | {best_metric: value})
        manager.save(epoch, args=ocp.args.StandardSave(_leaves_dict(state)))
        manager.wait_until_finished()
        results = {"history": history, "best_metric": best_metric, "best_value": best_value}
        write_atomic(directory / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n"))
        if plot:
            from nasjax.train.plots import plot_history

            plot_history(history, directory / "results.png")
    manager.close()
    return {"project": directory, "history": history, "step_losses": step_losses,
            "best": directory / "best", "last": directory / "last"}


def save_detector_to(detector: Network, directory: Path, metadata: dict) -> None:
    from nasjax.loading.checkpoint import save_detector

    save_detector(detector, directory, metadata, overwrite=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nasjax.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="data YAML, dataset folder or shipped name (train: and val:)")
    parser.add_argument("--model", default="yolo_nas_s", help="yolo_nas_s, yolo_nas_m or yolo_nas_l")
    parser.add_argument("--pretrained", type=_parse_bool, default=False, help="start from the published COCO weights")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16, help="global batch, split over all devices")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS)
    parser.add_argument("--augment", choices=AUGMENTATIONS, default="recipe",
                        help="recipe: super-gradients' YOLO-NAS augmentations; light: flip + HSV; none")
    parser.add_argument("--mosaic", type=float, default=None, help="mosaic probability (recipe: 0)")
    parser.add_argument("--mixup", type=float, default=None, help="mixup probability (recipe: 0.5)")
    parser.add_argument("--close-augment", type=int, default=0, help="train the last N epochs with light augmentation")
    parser.add_argument("--static-assigner-epochs", type=int, default=0,
                        help="first N epochs use the ATSS assigner (recipe: 0, task-aligned throughout)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="bfloat16: mixed precision")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--best-metric", choices=BEST_METRICS, default="map50_95")
    parser.add_argument("--project", default="runs/train")
    parser.add_argument("--name", default=None, help="run name under --project (default exp, exp2, ...)")
    parser.add_argument("--exist-ok", action="store_true", help="reuse project/name, replacing its training state")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--resume", action="store_true", help="continue the run in project/name (default: the latest)")
    args = parser.parse_args(argv)
    from nasjax.data.datasets import DatasetError
    from nasjax.loading.hub import WeightsUnavailableError

    try:
        result = train(args.data, args.model, pretrained=args.pretrained, epochs=args.epochs, batch=args.batch,
                       imgsz=args.imgsz, lr=args.lr, project=args.project, name=args.name, exist_ok=args.exist_ok,
                       seed=args.seed, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                       augmentation=args.augment, mosaic=args.mosaic, mixup=args.mixup,
                       close_augmentation=args.close_augment,
                       static_assigner_epochs=args.static_assigner_epochs, dtype=args.dtype, max_steps=args.max_steps,
                       best_metric=args.best_metric, resume=args.resume, workers=args.workers)
    except (TrainingError, DatasetError, WeightsUnavailableError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    print(f"results: {result['project']}\nlast: {result['last']}\nbest: {result['best']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
