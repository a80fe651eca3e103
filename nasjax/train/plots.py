"""The PNG of a training run's curves: loss terms (train and validation) and mAP per epoch.

Kept out of the trainer so that matplotlib (the `train` extra) is imported only to draw, with the Agg
backend (no display needed), and the file is written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from nasjax.utils.atomic_files import write_atomic

LOSS_TERMS = ("loss", "loss_cls", "loss_iou", "loss_dfl")
METRICS = (("map50_95", "mAP50-95"), ("map50", "mAP50"))


def plot_history(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """One panel per loss term (train and val where measured) and one for mAP; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    epochs = [record["epoch"] for record in history]
    panels = [term for term in LOSS_TERMS if any(f"train_{term}" in r or f"val_{term}" in r for r in history)]
    has_map = any("map50_95" in r for r in history)
    figure, axes = plt.subplots(1, len(panels) + has_map, figsize=(4 * (len(panels) + has_map), 3.4), squeeze=False)
    for axis, term in zip(axes[0], panels):
        for split, style in (("train", "-o"), ("val", "--s")):
            points = [(e, r[f"{split}_{term}"]) for e, r in zip(epochs, history) if f"{split}_{term}" in r]
            if points:
                axis.plot(*zip(*points), style, markersize=3, label=split)
        axis.set_title(term.replace("loss_", "loss ") if term != "loss" else "total loss")
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    if has_map:
        axis = axes[0][-1]
        for key, label in METRICS:
            points = [(e, r[key]) for e, r in zip(epochs, history) if key in r]
            if points:
                axis.plot(*zip(*points), "-o", markersize=3, label=label)
        axis.set_title("validation mAP")
        axis.set_xlabel("epoch")
        axis.set_ylim(bottom=0)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    try:
        return write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(figure)
