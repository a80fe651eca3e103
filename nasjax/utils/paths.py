"""Output paths that never overwrite an earlier run, as Ultralytics names them.

`increment_path("runs/detect/predict")` is runs/detect/predict the first time, then predict2,
predict3, ... (Ultralytics' `increment_path` with sep=""), so that a new run never mixes its files
with an old one's. Train, predict and validate all name their output folders this way.
"""
from __future__ import annotations

import os
from pathlib import Path


def increment_path(path: str | os.PathLike, exist_ok: bool = False, mkdir: bool = False) -> Path:
    """`path` if it does not exist (or `exist_ok`), else the first free of path2, path3, ...

    A file keeps its suffix after the number (results.json -> results2.json). mkdir: create the
    directory; without exist_ok it is claimed atomically (two processes starting at once get different
    numbers), which Ultralytics does not do.
    """
    path = Path(path)
    if exist_ok:
        if mkdir:
            path.mkdir(parents=True, exist_ok=True)
        return path
    stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
    candidate, number = path, 2
    while True:
        if not candidate.exists():
            if not mkdir:
                return candidate
            try:
                candidate.mkdir(parents=True, exist_ok=False)
                return candidate
            except FileExistsError:  # another process took it between the check and the mkdir
                pass
        candidate = Path(f"{stem}{number}{suffix}")
        number += 1
