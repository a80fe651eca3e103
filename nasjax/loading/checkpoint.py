"""Converted detectors on disk: an orbax checkpoint of the variables plus a `nasjax.json` that says
which model they belong to.

    <directory>/nasjax.json    variant, num_classes, class_names, form, nasjax version, source file facts
    <directory>/variables/     orbax StandardCheckpointer of the variables as a pure dict of arrays

The JSON is what makes the directory loadable on its own: the model is rebuilt abstractly from
(variant, form, num_classes) and the arrays are restored into it, so no conversion code runs. A
directory is written into a temporary sibling and renamed into place, so a reader never sees half of one,
and a failed write (a full disk: `DiskFullError`, checked before orbax starts) leaves nothing behind.
Without `overwrite`, that rename is also the check that the target does not exist: two conversions
into one directory cannot both succeed, the second one fails instead of replacing the first.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from nasjax.configs import VARIANTS, get_config
from nasjax.loading.hub import DiskFullError, check_free_space, is_disk_full
from nasjax.utils import atomic_files
from nasjax.model import yolo_nas as models
from nasjax.model.core import Network
from nasjax.weights.registry import Preprocessing

METADATA_FILE = "nasjax.json"
VARIABLES_DIR = "variables"
FORMAT = "nasjax-checkpoint"
FORMAT_VERSION = 1
# Fields derived from the detector itself; `metadata` passed to `save_detector` may not override them.
_MODEL_FIELDS = ("format", "format_version", "nasjax_version", "variant", "num_classes", "class_names", "form",
                 "preprocessing")


class CheckpointError(ValueError):
    """A directory that is not a readable nasjax checkpoint; the message says what is wrong with it."""


def save_detector(
    detector: Network,
    directory: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write `detector` as a checkpoint directory; returns its path.

    `metadata` adds JSON fields about where the weights came from, conventionally `source_sha256`,
    `source_format` and `source_filename`. An existing `directory` is an error unless `overwrite`.
    """
    from nasjax import __version__

    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(
            f"{directory} already exists; remove it, choose another output directory, "
            "or pass overwrite=true to replace it"
        )
    extra = dict(metadata or {})
    clash = sorted(set(extra) & set(_MODEL_FIELDS))
    if clash:
        raise ValueError(f"metadata may not set {', '.join(clash)}: these come from the detector itself")
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nasjax_version": __version__,
        "variant": detector.config.name,
        "num_classes": detector.num_classes,
        "class_names": detector.class_names,
        "form": detector.form,
        "preprocessing": detector.preprocessing.to_dict(),
        **extra,
    }
    variables = nnx.to_pure_dict(detector.variables)
    if jax.process_count() > 1:  # orbax refuses one process's own device arrays in a multi-process run
        variables = jax.tree.map(np.asarray, variables)
    needed = sum(int(np.asarray(leaf).nbytes) for leaf in jax.tree.leaves(variables))
    # Refused before writing: orbax fails on a full disk with a ValueError and noise from its threads.
    check_free_space(directory.parent, needed, f"the checkpoint {directory}")

    def write(staging: Path) -> None:
        try:
            with ocp.StandardCheckpointer(**process_local()) as checkpointer:  # leaving it waits for the asynchronous write
                checkpointer.save(staging / VARIABLES_DIR, variables)
            (staging / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n")
        except Exception as e:  # orbax reports ENOSPC as a ValueError naming its own temporary files
            if is_disk_full(e):
                raise DiskFullError(directory.parent, f"the checkpoint {directory}", needed) from e
            raise

    if overwrite:
        with atomic_files.replace_directory(directory) as staging:
            write(staging)
    else:
        _write_new_directory(directory, write)
    return directory


def process_local() -> dict:
    """orbax keywords that keep a save or restore to this process. orbax makes every process of a
    multi-process run take part in each save (barriers); nasjax saves from process 0 alone (a run's files)
    or reads in each process on its own (docs/scale_out.md#multi-process-jax)."""
    if jax.process_count() == 1:
        return {}
    me = jax.process_index()
    return {"multiprocessing_options": ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})}


def _write_new_directory(directory: Path, write) -> None:
    """`write(staging)` into a temporary sibling renamed to `directory` only if that still does not exist:
    the rename fails if another process created it meanwhile, so nothing is silently replaced."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        write(staging)
        try:
            os.rename(staging, directory)  # onto an existing non-empty directory (or a file): an error
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise FileExistsError(
                    f"{directory} was created by someone else while this one was written; it was "
                    "left as it is: choose another output directory, or pass overwrite=true to replace it"
                ) from e
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The validated contents of `<directory>/nasjax.json`."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a nasjax checkpoint: it has no {METADATA_FILE} "
            "(write one with `nasjax convert WEIGHTS -o DIR`)"
        )
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); delete the directory and convert again") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a nasjax checkpoint description (no \"format\": \"{FORMAT}\")")
    problems = []
    if info.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version {info.get('format_version')!r} (this nasjax reads {FORMAT_VERSION})")
    if info.get("variant") not in VARIANTS:
        problems.append(f"variant {info.get('variant')!r} (expected one of {', '.join(VARIANTS)})")
    if info.get("form") not in models.FORMS:
        problems.append(f"form {info.get('form')!r} (expected one of {', '.join(models.FORMS)})")
    num_classes = info.get("num_classes")
    if not (isinstance(num_classes, int) and num_classes > 0):
        problems.append(f"num_classes {num_classes!r} (expected a positive integer)")
    names = info.get("class_names")
    if names is not None and not (
        isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)
    ):
        problems.append(f"class_names (expected null or a list of {num_classes} strings)")
    if problems:
        raise CheckpointError(f"{path} has invalid fields: " + "; ".join(problems))
    return info


@functools.lru_cache(maxsize=None)
def _abstract_model(variant: str, form: str, num_classes: int) -> tuple[nnx.GraphDef, nnx.State]:
    config = get_config(variant, num_classes=num_classes)
    return nnx.split(nnx.eval_shape(lambda: models.YoloNAS(config, form, rngs=nnx.Rngs(0))))


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
    # Keys are compared as dotted strings: orbax stores integer keys (module lists) as strings.
    return {
        ".".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _differences(found: dict, expected: dict) -> list[str]:
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [
        f"{k} has shape {found[k]}, expected {expected[k]}" for k in expected if k in found and found[k] != expected[k]
    ]
    return problems


def _stored_shapes(variables_dir: Path) -> dict[str, tuple[int, ...]]:
    try:
        with ocp.StandardCheckpointer(**process_local()) as checkpointer:
            return _flat_shapes(checkpointer.metadata(variables_dir).item_metadata.tree)
    except Exception as e:  # orbax raises many types for a missing or damaged checkpoint; all mean "unreadable"
        raise CheckpointError(
            f"cannot read the orbax checkpoint {variables_dir} ({type(e).__name__}: {e}); "
            "delete the directory and convert again"
        ) from e


def _restore(variables_dir: Path, target, description: str) -> dict:
    """The stored arrays, checked against the model's tree; a mismatch is reported by name."""
    expected = _flat_shapes(target)
    try:
        with ocp.StandardCheckpointer(**process_local()) as checkpointer:
            restored = checkpointer.restore(variables_dir, target)
    except Exception as e:  # as above; the stored tree's metadata then says what is wrong, if anything can
        problems = _differences(_stored_shapes(variables_dir), expected)
        if not problems:
            raise CheckpointError(f"cannot restore {variables_dir} ({type(e).__name__}: {e})") from e
    else:
        # orbax restores the stored shapes whatever the target's, so shapes are checked here.
        problems = _differences(_flat_shapes(restored), expected)
    if problems:
        more = f" ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise CheckpointError(
            f"the arrays in {variables_dir} do not fit {description}, as its {METADATA_FILE} says "
            f"({len(problems)} differences): " + "; ".join(problems[:8]) + more
        )
    return restored


def load_detector(directory: str | os.PathLike) -> Network:
    """The detector saved in `directory` by `save_detector`."""
    directory = Path(directory).absolute()
    info = read_metadata(directory)
    variant, form, num_classes = info["variant"], info["form"], info["num_classes"]
    graphdef, abstract_state = _abstract_model(variant, form, num_classes)
    # Restored as numpy, then handed to jnp.asarray: the arrays end up exactly like those of a fresh
    # conversion (uncommitted, default device), so both kinds of detector share compiled executables.
    target = jax.tree.map(lambda x: np.empty(x.shape, x.dtype), nnx.to_pure_dict(abstract_state))
    restored = _restore(directory / VARIABLES_DIR, target, f"{variant} ({form} form, {num_classes} classes)")
    state = jax.tree.map(lambda x: x, abstract_state)  # a copy: the cached abstract state stays abstract
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, restored))
    # Checkpoints older than the field hold the COCO weights' pre-processing (the only one there was).
    return Network(nnx.merge(graphdef, state), info["class_names"], Preprocessing.from_dict(info.get("preprocessing")))
