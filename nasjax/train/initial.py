"""The network a run starts from, for every model source the other commands accept.

Training needs the QARepVGG "training" form (fusion cannot be undone), so every source is loaded with
`nasjax.loading.load_network(source, fuse=False)`, which keeps the form of the weights:
- a registered name (`yolo_nas_s`, `yolo_nas_m.coco`, ...): PyTorch's default initialisation drawn
  from the seed, plus the published weights when `pretrained` (they are in the training form);
- a weight file (.pt / .pth / .safetensors) or a converted directory: its weights, if they are in the
  training form; fused ones are a clear `TrainingError`;
- a run's `best/` or `last/`: saved in the training form (checkpoints.py), so a finished run can be
  fine-tuned further, as Ultralytics' `model=best.pt`;
- a `Network` (or `nasjax.Detector`) in the training form, e.g. `nasjax.load(..., fuse=False)`.

The weights are copied into a fresh training-form model for the data's classes wherever the shapes
match (`transfer_matching`): a different class count gets a fresh classification head.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from flax import nnx

from nasjax.model.core import Network
from nasjax.train.config import TrainingError

UNTRAINABLE = ("the weights are fused ({form!r} form) and cannot be trained (QARepVGG fusion cannot be undone); "
               "train from training-form weights: a registered name, a super-gradients checkpoint, a run's "
               "best/ or last/, or a model loaded with nasjax.load(..., fuse=False)")


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


def describe(model) -> str:
    """How run.json names the model source."""
    if isinstance(model, Network):
        return f"<{type(model).__name__} {model.config.name}, {model.num_classes} classes>"
    return str(Path(model).absolute()) if Path(model).exists() and not _is_registered(model) else str(model)


def _is_registered(model) -> bool:
    from nasjax.weights import registry

    return isinstance(model, str) and registry.is_known(model)


def source_network(model, *, pretrained: bool) -> tuple[Network | None, str]:
    """(the training-form `Network` that `model` names, or None for a registered name without
    `pretrained`; the variant)."""
    from nasjax.loading import load_network

    if isinstance(model, Network):
        network = model
        where = f"this {type(model).__name__}"
    elif _is_registered(model):
        from nasjax.weights import registry

        variant = registry.get_entry(model).variant
        if not pretrained:
            return None, variant
        network = load_network(model, pretrained=True, fuse=False)
        where = f"{model}: the published weights"
    elif isinstance(model, (str, os.PathLike)):
        network = load_network(model, fuse=False)  # FileNotFoundError (with the known names) if absent
        where = str(model)
        if not isinstance(network, Network):
            raise TrainingError(f"{model} is an exported model ({type(network).__name__}), which cannot be "
                                f"trained; train from the weights it was exported from")
    else:
        raise TrainingError(f"model must be a registered name, a weight file, a converted or run directory, or a "
                            f"training-form Network, got {type(model).__name__}")
    if network.form != "training":
        raise TrainingError(f"{where}: " + UNTRAINABLE.format(form=network.form))
    return network, network.config.name


def starting_network(model, num_classes: int, *, pretrained: bool, seed: int):
    """(the training-form module to start from, its variant): PyTorch's default initialisation drawn from
    `seed`, with the weights of `model` copied in where the shapes match."""
    from nasjax.model.build import build_network

    network, variant = source_network(model, pretrained=pretrained)
    fresh = build_network(variant, form="training", num_classes=num_classes, seed=seed, init="scratch")
    if network is None:
        return fresh.model, variant
    variables, kept = transfer_matching(network.variables, fresh.variables)
    if kept:
        print(f"{variant}: {len(kept)} tensors initialised afresh (shape differs): {', '.join(kept[:6])}"
              + (" ..." if len(kept) > 6 else ""))
    return nnx.merge(fresh.graphdef, variables), variant


def initial_model(model, num_classes: int, *, pretrained: bool, seed: int):
    """The training-form module to start from (`starting_network` without the variant)."""
    return starting_network(model, num_classes, pretrained=pretrained, seed=seed)[0]


def scratch_model(variant: str, num_classes: int):
    """A training-form module of this shape (what a resumed run restores its state into)."""
    from nasjax.model.build import build_network

    return build_network(variant, form="training", num_classes=num_classes, init="scratch").model
