"""The one progress bar of predict and validate: whether to show it is decided here, once.

    bar = progress_bar(progress, total=len(images), desc="validate")
    bar.update(n); bar.close()

progress=None (the default of every caller) shows the bar only when stderr is a terminal, so logs and
captured output stay free of carriage-return noise, and, when `batches` is given, only for more than
one batch (a single device call has nothing to report). The bar is always a tqdm object, disabled when
hidden, so callers update and close it without checking.
"""
from __future__ import annotations

import sys


def progress_bar(progress: bool | None, total: int | None, desc: str, unit: str = "image", *,
                 batches: int | None = None, leave: bool = True):
    """A tqdm bar over `total` units; shown if `progress`, or for None as described above."""
    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty() and (batches is None or batches > 1)
    return tqdm(total=total or None, desc=desc, unit=unit, disable=not progress, leave=leave)
