"""Writing files and directories so that readers never see a half-written one.

A failure (or an interruption) leaves whatever was at the target before intact, and no partial file
or directory under the target's name.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}"
    # Created here with mode 0o666 so that the umask applies (tempfile.mkstemp would make it 0o600).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def replace_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory beside `directory`; when the block succeeds, it takes the
    place of `directory` (an existing one is moved aside first, so the swap is two renames)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        yield staging
        if directory.exists():
            old = staging.with_name(staging.name + ".old")
            os.rename(directory, old)
            os.rename(staging, directory)
            shutil.rmtree(old)
        else:
            os.rename(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
