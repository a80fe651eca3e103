"""The training loop: fine-tune YOLO-NAS (or train it from scratch) on a dataset, on one device or all.

    from nasjax.train import TrainConfig, train
    result = train("data.yaml", "yolo_nas_s", pretrained=True, epochs=10)   # result["best"]: nasjax.load it
    train("data.yaml", "runs/detect/train/best", epochs=5)                  # fine-tune a finished run further
    train(resume=True)                                                       # continue the latest run exactly
    nasjax.load("yolo_nas_s", fuse=False).train("data.yaml", epochs=10)     # from these weights

This file is only the loop, so that each concern can be read and tested on its own (the flax
examples' layout): the settings are `TrainConfig` (config.py), the jitted pure step, optimizer and
schedule are step.py, where a run starts from is initial.py, and what a run keeps on disk (run
directory, run.json, orbax state, best/ and last/, results.json) is checkpoints.py. The recipe, the
loss, the augmentations and the outputs are described in docs/training.md.

`train` takes a config plus overrides. The overrides are what the caller set explicitly (the `nasjax
train` command passes only the settings the user gave), which is what `resume` needs: a resumed run
takes every setting from the saved run.json, and an explicit setting that differs from it is an error
unless it is one of the few a resume may change (`RESUME_OVERRIDABLE`: epochs to extend the run,
max_steps, workers, progress, plot). Each completed epoch saves the whole training state, so a resumed
run continues exactly where the last completed epoch ended: same batches, schedule, optimizer state
and EMA.

Not done: gradient accumulation, resuming in the middle of an epoch (a run stopped by max_steps in the
middle of an epoch resumes from the start of that epoch).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from nasjax.data.augment import Augmentation
from nasjax.data.load import load_split
from nasjax.data.loader import Loader
from nasjax.data.targets import LossTargets
from nasjax.model.core import Network
from nasjax.train import checkpoints
from nasjax.train.config import (DEFAULT_PROJECT, TrainConfig, TrainingError, check_names,
                                 resumed_config)
from nasjax.train.initial import describe, scratch_model, starting_network
from nasjax.train.loss import PPYoloELossConfig
from nasjax.train.step import (COMPUTE_DTYPES, cached_train_step, initial_state, learning_rate_schedule,
                               local_copy, make_eval_loss, make_optimizer, replicate, shard_batch)
from nasjax.utils import distributed
from nasjax.utils.devices import global_data_mesh


def train(data=None, model=None, *, config: TrainConfig | None = None, resume: bool | str | os.PathLike = False,
          devices: Sequence[jax.Device] | None = None, **overrides) -> dict[str, Any]:
    """Train on `data` (a data YAML, dataset folder or shipped name with train: and val: splits).

    model: where to start (default "yolo_nas_s"): a registered name (with `pretrained`, its published
        weights), a training-form weight file, a converted directory, a run's best/ or last/, or a
        training-form `Network` / `nasjax.Detector` (nasjax.train.initial).
    config: a `TrainConfig` (default: the recipe's defaults); overrides: any of its fields, applied on
        top (`train(data, epochs=5, batch=8)`).
    resume: True continues the run in project/name, or the latest run under project; a path continues
        that run directory. data and model then come from its run.json, and so do all settings
        (only epochs, max_steps, workers, progress and plot may be given anew).
    devices: the devices to split each batch over (default all, `global_data_mesh`).

    Returns {"project" (the run directory), "config", "history" (per-epoch dicts), "step_losses" (the
    training loss of every step run by this call), "best", "last"}.
    """
    check_names(overrides)
    if resume:
        return _resume(resume, data, model, config, overrides, devices)
    config = (config or TrainConfig()).replace(**overrides)
    if data is None:
        raise TrainingError("data is required: a data YAML, dataset folder or shipped name with train: and val: "
                            "(or resume=True to continue a run)")
    model = "yolo_nas_s" if model is None else model
    mesh = global_data_mesh(devices)
    check_batch_split(config.batch, mesh)
    train_set, val_set, class_names = load_data(data, config)
    module, variant = starting_network(model, len(class_names), pretrained=config.pretrained, seed=config.seed)
    loaders = make_loaders(train_set, val_set, config)  # before the run directory: bad data writes nothing
    # Several processes: process 0 claims the folder and writes run.json; the others learn its name.
    directory = distributed.broadcast(distributed.on_primary(lambda: checkpoints.new_run_directory(config)))
    config = dataclasses.replace(config, project=str(directory.parent), name=directory.name)
    distributed.on_primary(lambda: checkpoints.write_run(directory, checkpoints.run_record(
        config, data=describe_data(data), model=describe(model), variant=variant, class_names=class_names)))
    return run_epochs(directory, config, module, class_names, loaders, mesh, resume=False)


def _resume(resume, data, model, config: TrainConfig | None, overrides: Mapping[str, Any],
            devices) -> dict[str, Any]:
    given = (config.to_dict() if config is not None else {}) | dict(overrides)  # what the caller set explicitly
    if isinstance(resume, (str, os.PathLike)):
        directory = checkpoints.find_run(Path(resume).absolute().parent, Path(resume).absolute().name)
    else:
        directory = checkpoints.find_run(given.get("project", DEFAULT_PROJECT), given.get("name"))
    record, saved = checkpoints.read_run(directory)
    config = resumed_config(saved, given, str(directory))
    config = dataclasses.replace(config, project=str(directory.parent), name=directory.name)
    if model is not None and describe(model) != record["model"]:
        raise TrainingError(
            f"resume: {directory} trains model {record['model']}, not {describe(model)}; the model cannot change on "
            f"resume (its weights are in the training state). Resume without a model, or start a new run from "
            f"this run's weights with model='{directory / 'last'}'")
    mesh = global_data_mesh(devices)
    check_batch_split(config.batch, mesh)
    train_set, val_set, class_names = load_data(data if data is not None else record["data"], config)
    if class_names != record["class_names"]:
        theirs, mine = record["class_names"], class_names
        raise TrainingError(
            f"resume: {directory} trains classes {len(theirs)} classes {theirs[:4]}..., not {len(mine)} classes "
            f"{mine[:4]}...; a run cannot continue on another class list. Resume with the run's own data, or "
            f"start a new run from this run's weights with model='{directory / 'last'}'")
    module = scratch_model(record["variant"], len(class_names))  # the shape; the weights come from state/
    loaders = make_loaders(train_set, val_set, config)
    return run_epochs(directory, config, module, class_names, loaders, mesh, resume=True)


def load_data(data, config: TrainConfig):
    """(train split, val split or None, class names in index order)."""
    train_set = load_split(data, "train")
    val_set = load_split(data, "val") if config.val else None
    return train_set, val_set, [train_set.names[i] for i in sorted(train_set.names)]


def describe_data(data) -> str:
    """How run.json names the data: an absolute path for a path (resume may run elsewhere), else the name."""
    return str(Path(data).absolute()) if isinstance(data, (str, os.PathLike)) and Path(data).exists() else str(data)


class Loaders(NamedTuple):
    train: Loader
    light: Loader | None  # the last close_augmentation epochs
    val: Loader | None
    val_set: Any  # the validation split, for the mAP


def make_loaders(train_set, val_set, config: TrainConfig) -> Loaders:
    """The training loader, the "light" one for the last close_augmentation epochs, and the val loader."""
    # Each process of a multi-process run loads only its rows of every training batch.
    options = dict(seed=config.seed, shuffle=True, workers=config.workers, method=config.method,
                   process_index=distributed.process_index(), process_count=distributed.process_count())
    loader = Loader(train_set, config.batch, config.imgsz, augmentation=config.resolved_augmentation(), **options)
    light = (Loader(train_set, config.batch, config.imgsz, augmentation=Augmentation.light(),
                    max_boxes=loader.max_boxes, **options) if config.close_augmentation else None)
    val = (Loader(val_set, config.batch, config.imgsz, shuffle=False, augment=False, drop_last=False,
                  max_boxes=max(1, max(len(s.boxes) for s in val_set.samples)), workers=config.workers,
                  method=config.method) if val_set is not None else None)
    return Loaders(loader, light, val, val_set)


def run_epochs(directory: Path, config: TrainConfig, module, class_names: list[str], loaders: Loaders, mesh: Mesh,
               *, resume: bool) -> dict[str, Any]:
    """The loop over epochs: train steps, validation, best/ and last/, results, the training state."""
    loader, light_loader, val_loader = loaders.train, loaders.light, loaders.val
    variant = module.config.name
    schedule_args = (config.lr, config.epochs * len(loader), config.warmup_steps, config.warmup_initial_lr,
                     config.final_lr_ratio)
    schedule = learning_rate_schedule(*schedule_args)
    optimizer = make_optimizer(schedule, config.weight_decay)

    module.eval()
    eval_graphdef, _, _ = nnx.split(module, nnx.Param, ...)
    module.train()
    train_graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    state = replicate(initial_state(params, rest, optimizer), mesh)

    saved_states = checkpoints.StateCheckpoints(directory)
    history: list[dict] = []
    best_value = None
    start_epoch = 0
    if resume:
        epoch_done = saved_states.latest_epoch()
        if epoch_done is None:
            raise TrainingError(f"resume: {saved_states.directory} holds no completed epoch; start a new run")
        if epoch_done + 1 >= config.epochs:
            raise TrainingError(f"resume: {directory} has finished all {config.epochs} epochs; give a larger epochs "
                                f"to extend it, or fine-tune its weights in a new run with "
                                f"model='{directory / 'best'}'")
        state = replicate(saved_states.restore(epoch_done, local_copy(state),
                                               f"a {variant} with {len(class_names)} classes"),
                          mesh)
        history = checkpoints.read_history(directory, epoch_done + 1)
        best_value = checkpoints.best_value_of(history, config.best_metric)
        start_epoch = epoch_done + 1
        if distributed.is_primary():
            print(f"resuming {directory} after epoch {epoch_done + 1} of {config.epochs}")

    def train_step_for(epoch: int):
        # PP-YOLOE's static_assigner_epoch: ATSS for the first epochs, then the task-aligned assigner.
        loss_config = PPYoloELossConfig(use_static_assigner=epoch < config.static_assigner_epochs)
        return cached_train_step(train_graphdef, schedule_args, config.weight_decay, loss_config, config.ema_decay,
                                 COMPUTE_DTYPES[config.dtype], mesh)

    eval_loss = make_eval_loss(eval_graphdef, PPYoloELossConfig(use_static_assigner=False))
    step_losses: list[float] = []
    steps_done = int(state.step)
    max_steps = config.max_steps
    shown = config.progress and distributed.is_primary()  # several processes: process 0 reports and writes
    for epoch in range(start_epoch, config.epochs):
        if max_steps is not None and steps_done >= max_steps:
            break
        train_step = train_step_for(epoch)
        light = light_loader is not None and epoch >= config.epochs - config.close_augmentation
        epoch_loader = light_loader if light else loader
        bar = tqdm(epoch_loader.epoch(epoch), total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not shown, dynamic_ncols=True)
        sums: dict[str, float] = {}
        count = 0
        started = time.perf_counter()
        for images, targets in bar:
            try:
                state, terms = train_step(state, *shard_batch(mesh, images, targets))
                terms = {k: float(v) for k, v in terms.items()}
            except (jax.errors.JaxRuntimeError, MemoryError) as error:
                if is_out_of_memory(error):
                    message = out_of_memory_message(config.batch, config.imgsz, mesh, config.dtype)
                    raise TrainingError(message) from error
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
            record |= validation_losses(eval_loss, state, val_loader)
            if config.best_metric == "map50_95":
                record |= validation_map(ema_network(eval_graphdef, state, class_names), loaders.val_set, config)
        history.append(record)
        if shown:
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        value, higher = checkpoints.metric_value(record, config.best_metric)
        better = checkpoints.is_better(value, best_value, higher)
        best_value = value if better else best_value
        completed = count == len(epoch_loader)  # a completed epoch (max_steps may stop one in the middle)

        def save(epoch=epoch, state=state) -> None:
            # The EMA weights in the training form (the step donates the state: saved before the next step).
            network = ema_network(eval_graphdef, state, class_names)
            metadata = {"source_format": "nasjax.train", "epoch": epoch + 1, "steps": steps_done,
                        "train_base": variant, "run": str(directory)}
            checkpoints.save_weights(network, directory / "last", metadata)
            if better:
                checkpoints.save_weights(network, directory / "best", metadata | {config.best_metric: value})
            checkpoints.write_results(directory, history, config.best_metric, best_value)
            if completed:
                saved_states.save(epoch, local_copy(state))
            if config.plot:
                from nasjax.train.plots import plot_history

                plot_history(history, directory / "results.png")

        distributed.on_primary(save)
    saved_states.close()
    return {"project": directory, "config": config, "history": history, "step_losses": step_losses,
            "best": directory / "best", "last": directory / "last"}


def ema_network(eval_graphdef, state, class_names) -> Network:
    """The EMA weights and statistics as a training-form `Network` (BatchNorm in eval mode)."""
    return Network(nnx.merge(eval_graphdef, local_copy(state.ema_params), local_copy(state.ema_rest)), class_names)


def validation_losses(eval_loss, state, val_loader: Loader) -> dict[str, float]:
    """The loss terms of the EMA model on the validation split, averaged over images ("val_loss", ...)."""
    sums: dict[str, float] = {}
    images_seen = 0
    for images, targets in val_loader.epoch(0):
        n = len(images)
        targets = LossTargets(*map(jnp.asarray, targets))
        terms = eval_loss(local_copy(state.ema_params), local_copy(state.ema_rest), jnp.asarray(images), targets)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        images_seen += n
    return {f"val_{k}": v / images_seen for k, v in sums.items()}


def validation_map(network: Network, val_set, config: TrainConfig) -> dict[str, float]:
    """COCO mAP of the EMA model (fused to the full form, as inference runs it) on the validation split."""
    from nasjax.validate.validator import validate

    # Several processes: each predicts its share of the images and validate gathers them.
    share = val_set.shard(distributed.process_index(), distributed.process_count())
    metrics = validate(network.fuse("full"), share, imgsz=config.imgsz, batch_size=config.batch, print_results=False,
                       progress=False, warmup=False)
    return {"map50_95": float(metrics["map50_95"]), "map50": float(metrics["map50"])}


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
