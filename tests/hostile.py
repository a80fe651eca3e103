"""Real hostile conditions for tests: a full disk, a read-only folder, and a child process whose memory
and time are bounded, so that a bomb ends the child instead of the test run.

`small_disk` and `read_only_dir` mount a tmpfs (the real kernel behaviour: ENOSPC, EROFS, whoever the
user is — root ignores file modes, so `chmod` cannot make a folder read-only here). Where mounting is
not allowed, the test is skipped with the reason.

`run_bounded` runs Python code in a fresh interpreter under `RLIMIT_AS` and a wall-clock timeout and
reports its exit status, output and peak resident memory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Iterator

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _mount_tmpfs(where: Path, size: str, read_only: bool = False) -> None:
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}); needs CAP_SYS_ADMIN")


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str = "1m") -> Iterator[Path]:
    """A folder on a filesystem of `size` bytes (tmpfs syntax: 64k, 1m, ...): writes past it fail with
    ENOSPC. Unmounted (and everything on it gone) when the block ends."""
    where = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    _mount_tmpfs(where, size)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextlib.contextmanager
def read_only_dir(tmp_path: Path, files: dict[str, bytes] | None = None) -> Iterator[Path]:
    """A read-only folder (EROFS on any write, even as root) holding `files` ({relative path: bytes})."""
    where = tmp_path / f"ro-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    _mount_tmpfs(where, "4m")
    try:
        for name, data in (files or {}).items():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            (where / name).write_bytes(data)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@dataclasses.dataclass
class Bounded:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mib: float
    timed_out: bool


_WRAPPER = """
import resource, sys, json, atexit
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
def _report():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the process image that exec replaced, which
    # under vfork is the parent's (a test process holding jax and TF: ~2 GB).
    peak = 0.0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    sys.stderr.write("\\n__PEAK_RSS_MIB__=%.1f\\n" % peak)
    sys.stderr.flush()
atexit.register(_report)
sys.path[:0] = {paths!r}
"""


def run_bounded(code: str, *, memory_mib: int = 2048, timeout_s: float = 60, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> Bounded:
    """Run `code` in a fresh Python under an address-space limit of `memory_mib` and `timeout_s`.

    Keep the child free of jax/TF where possible: they reserve far more address space than they use.
    A MemoryError or a kill by the limit shows as a non-zero return code; `peak_rss_mib` is what the
    child really used (read at exit; 0 when it was killed)."""
    limit = memory_mib * 1024 * 1024
    program = _WRAPPER.format(limit=limit, paths=[str(TESTS), str(REPO)]) + textwrap.dedent(code)
    full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    try:
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                                timeout=timeout_s, cwd=cwd, env=full_env)
    except subprocess.TimeoutExpired as error:
        return Bounded(-9, _text(error.stdout), _text(error.stderr), 0.0, True)
    peak = 0.0
    stderr_lines = []
    for line in result.stderr.splitlines():
        if line.startswith("__PEAK_RSS_MIB__="):
            peak = float(line.split("=", 1)[1])
        else:
            stderr_lines.append(line)
    return Bounded(result.returncode, result.stdout, "\n".join(stderr_lines), peak, False)


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
