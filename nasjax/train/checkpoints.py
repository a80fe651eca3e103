"""What a run keeps on disk, and reading it back: the run directory, run.json, the orbax training
state, best/ and last/, results.json (docs/training.md, "Outputs").

    project/name/            runs/detect/train, train2, ... (`nasjax.utils.paths.increment_path`)
      run.json               what the run trains: data, model source, variant, class names, TrainConfig
      state/                 orbax CheckpointManager: the whole training state after each completed epoch
      last/, best/           converted dirs (`nasjax.loading.checkpoint`) of the EMA weights, training form
      results.json           per-epoch losses and mAP, the best metric and value; results.png: the curves

best/ and last/ hold the training form (QARepVGG branches unfused) because that is what training
needs: `train(data, model="runs/detect/train/best")` fine-tunes further, as Ultralytics' `best.pt`
does. Inference loses nothing: `nasjax.load(dir)` fuses to the full form when it loads (fuse=True,
the default), the same fusion the run would have saved; `fuse=False` gives the training form.

run.json is written once, when the run starts, and is the record `--resume` continues from: a resumed
run takes every setting from it (config.py says which few a resume may change), so it continues the
saved run exactly instead of mixing in the current call's defaults.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from nasjax.loading.checkpoint import process_local
from nasjax.model.core import Network
from nasjax.train.config import DEFAULT_NAME, TrainConfig, TrainingError
from nasjax.utils.atomic_files import write_atomic
from nasjax.utils.paths import increment_path

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
STATE_DIR = "state"
RUN_FORMAT = "nasjax-train-run"
RUN_FORMAT_VERSION = 1


# ---- the run directory ------------------------------------------------------------------------------


def new_run_directory(config: TrainConfig) -> Path:
    """Claim project/name for a new run: name "train", then "train2", ... when taken (Ultralytics),
    unless exist_ok, which reuses it and removes the old run's training state."""
    base = Path(config.project).absolute() / (config.name or DEFAULT_NAME)
    directory = increment_path(base, exist_ok=config.exist_ok, mkdir=True)
    if (directory / STATE_DIR).exists():
        shutil.rmtree(directory / STATE_DIR)  # exist_ok: this run replaces the old one's training state
    return directory


def find_run(project, name: str | None) -> Path:
    """The run to resume: project/name, or without a name the most recently written run under project
    that has a training state."""
    project = Path(project).absolute()
    if name:
        directory = project / name
    else:
        runs = [d for d in project.glob("*") if (d / STATE_DIR).is_dir()] if project.is_dir() else []
        if not runs:
            raise TrainingError(f"resume: no run with a training state under {project}; start a new run without "
                                f"resume, or give the project / name of the run to continue")
        directory = max(runs, key=lambda d: (d / RESULTS_FILE).stat().st_mtime
                        if (d / RESULTS_FILE).exists() else d.stat().st_mtime)
    if not (directory / STATE_DIR).is_dir():
        raise TrainingError(f"resume: {directory} has no training state ({STATE_DIR}/); start a new run without "
                            f"resume, or give the project / name of the run to continue")
    return directory


# ---- run.json ---------------------------------------------------------------------------------------


def run_record(config: TrainConfig, *, data: str, model: str, variant: str, class_names: list[str]) -> dict:
    from nasjax import __version__

    return {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "nasjax_version": __version__,
            "data": data, "model": model, "variant": variant, "class_names": list(class_names),
            "config": config.to_dict()}


def write_run(directory: Path, record: dict) -> None:
    write_atomic(directory / RUN_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))


def read_run(directory: Path) -> tuple[dict, TrainConfig]:
    """The saved run.json and its config."""
    path = directory / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise TrainingError(f"resume: cannot read {path} ({error}); it records what the run trains. Start a new "
                            f"run without resume") from error
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT or not isinstance(record.get("config"), dict):
        raise TrainingError(f"resume: {path} was written by an older nasjax and does not record the run's settings; "
                            f"it cannot be resumed exactly. Start a new run (fine-tune from its weights with "
                            f"model='{directory / 'last'}' if they are in the training form)")
    if record.get("format_version") != RUN_FORMAT_VERSION:
        raise TrainingError(f"resume: {path} has format_version {record.get('format_version')!r}; this nasjax "
                            f"reads {RUN_FORMAT_VERSION}")
    try:
        config = TrainConfig.from_dict(record["config"])
    except TrainingError as error:
        raise TrainingError(f"resume: {path}: {error}") from error
    return record, config


# ---- the training state (orbax) ---------------------------------------------------------------------


def _leaves_dict(tree) -> dict[str, np.ndarray]:
    return {f"{i:06d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}


def _from_leaves(tree, leaves: dict):
    treedef = jax.tree.structure(tree)
    return jax.tree.unflatten(treedef, [jnp.asarray(leaves[f"{i:06d}"]) for i in range(treedef.num_leaves)])


class StateCheckpoints:
    """The whole training state after each completed epoch, under run/state/ (the last two kept)."""

    def __init__(self, directory: Path):
        self.directory = directory / STATE_DIR
        # Process 0 alone saves; every process restores on its own (a multi-process run), and orbax then
        # leaves making the folder to the caller.
        self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=False, **process_local())
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_epoch(self) -> int | None:
        """The index (from 0) of the last completed epoch saved, or None."""
        return self.manager.latest_step()

    def save(self, epoch: int, state) -> None:
        self.manager.save(epoch, args=ocp.args.StandardSave(_leaves_dict(state)))
        self.manager.wait_until_finished()

    def restore(self, epoch: int, template, what: str):
        """The state saved after `epoch`, in the structure of `template` (what: the model, for errors)."""
        try:
            restored = self.manager.restore(epoch, args=ocp.args.StandardRestore(_leaves_dict(template)))
        except (ValueError, KeyError) as error:
            raise TrainingError(f"resume: the training state in {self.directory} does not fit {what} ({error}); "
                                f"start a new run") from error
        return _from_leaves(template, restored)

    def close(self) -> None:
        self.manager.close()


# ---- weights and results ----------------------------------------------------------------------------


def save_weights(network: Network, directory: Path, metadata: dict) -> None:
    """best/ or last/: a converted dir of `network` (training form; `nasjax.load` fuses it)."""
    from nasjax.loading.checkpoint import save_detector

    save_detector(network, directory, metadata, overwrite=True)


def write_results(directory: Path, history: list[dict], best_metric: str, best_value) -> None:
    results = {"history": history, "best_metric": best_metric, "best_value": best_value}
    write_atomic(directory / RESULTS_FILE, lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n"))


def read_history(directory: Path, epochs_done: int) -> list[dict]:
    """The per-epoch records of the first `epochs_done` epochs (a later, unsaved epoch is dropped)."""
    path = directory / RESULTS_FILE
    if not path.is_file():
        return []
    return [r for r in json.loads(path.read_text()).get("history", []) if r.get("epoch", 0) <= epochs_done]


def best_value_of(history: list[dict], best_metric: str) -> Any:
    """The best value of the metric that picks best/ over `history` (as the loop measures it)."""
    best = None
    for record in history:
        value, higher = metric_value(record, best_metric)
        if value is not None and is_better(value, best, higher):
            best = value
    return best


def metric_value(record: dict, best_metric: str) -> tuple[Any, bool]:
    """(the value that picks best/ for this epoch, whether higher is better): the best metric, else the
    validation loss, else the training loss (without a validation split)."""
    for key in (best_metric, "val_loss", "train_loss"):
        if record.get(key) is not None:
            return record[key], key == "map50_95"
    return None, False


def is_better(value, best, higher: bool) -> bool:
    return best is None or (value > best if higher else value < best)
