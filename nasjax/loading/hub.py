"""The nasjax cache directory, and downloads of published weight files into it.

Layout under `cache_home()` (`$NASJAX_HOME`, else `$XDG_CACHE_HOME/nasjax`, else `~/.cache/nasjax`):

    downloads/<filename>                       the file as published (e.g. yolo_nas_s_coco.pth)
    downloads/<filename>.part                  an interrupted download, resumed by the next attempt
    converted/<name>-<sha256[:12]>-<form>/     a converted orbax checkpoint (see nasjax.checkpoint)

A file reaches its final path only complete and, when its SHA-256 is known, verified: it is streamed to
`<dest>.part` and renamed with `os.replace`. Only the standard library's urllib is used.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from nasjax.weights.registry import WeightEntry

DEFAULT_TIMEOUT = 30.0  # seconds without progress (connect or read) before a URL counts as failed
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """One URL failed; `reason` says how (HTTP status, timeout, refused connection, cut transfer...)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not have the expected SHA-256; nothing is left at the destination."""

    def __init__(self, url: str, expected: str, got: str):
        super().__init__(url, f"SHA-256 mismatch: expected {expected}, got {got} (the corrupt download was deleted)")
        self.expected = expected
        self.got = got


class WeightsUnavailableError(RuntimeError):
    """No URL of a registry entry delivered the file; the message says where to put a copy by hand."""

    def __init__(self, entry: WeightEntry, destination: Path, failures: Sequence[DownloadError]):
        size = f", ~{entry.approx_size_mib:g} MiB" if entry.approx_size_mib else ""
        sha = f", sha256 {entry.sha256}" if entry.sha256 else ""
        tried = "\n".join(f"  {failure}" for failure in failures)
        part = destination.with_name(destination.name + ".part")
        kept = f"\nThe partial download at {part} is resumed on the next attempt." if part.exists() else ""
        super().__init__(
            f"could not download {entry.filename} (weights {entry.name}{size}{sha}). Tried:\n{tried}\n"
            f"Fetch the file yourself from one of these URLs and put it at\n  {destination}\n"
            f"then load {entry.name!r} again; or load a copy you already have by its path: "
            f"nasjax.load('/path/to/{entry.filename}').{kept}"
        )
        self.entry = entry
        self.destination = destination
        self.failures = list(failures)


def cache_home() -> Path:
    home = os.environ.get("NASJAX_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "nasjax"


def downloads_dir(home: Path | None = None) -> Path:
    return (home or cache_home()) / "downloads"


def converted_dir(name: str, sha256: str, form: str, home: Path | None = None) -> Path:
    """Where the conversion of the file with this SHA-256 to `form` is cached."""
    return (home or cache_home()) / "converted" / f"{name}-{sha256[:12]}-{form}"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _user_agent() -> str:
    from nasjax import __version__

    return f"nasjax/{__version__}"


def _content_range_start(response) -> int | None:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header, None when absent or unparsable."""
    value = response.headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _stream(url: str, part: Path, offset: int, timeout: float, progress: bool) -> None:
    """Append the bytes from `offset` on to `part` (or rewrite it, if the server sends the whole file)."""
    headers = {"User-Agent": _user_agent()}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part is not a prefix of this file: start again from zero
            part.unlink()
            return _stream(url, part, 0, timeout, progress)
        raise
    with response:
        if not (offset and response.status == 206 and _content_range_start(response) == offset):
            offset = 0  # the server ignored the Range request and sends the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:  # fmt: skip
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"timed out (no data for {timeout:g} s)"
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = 3,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest` through `dest.part`, verifying `sha256` when given; returns `dest`.

    A `.part` left by an earlier, interrupted download is resumed with an HTTP Range request (from zero
    when the server ignores it). A transfer cut after some bytes arrived is resumed up to `attempts`
    times in all. Raises `DownloadError` (HTTP error, timeout, refused connection...) with `.part` kept for
    a later resume, or `ChecksumMismatchError` with nothing kept. `dest` is only ever a complete file.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size if part.exists() else 0
        try:
            _stream(url, part, offset, timeout, progress)
            break
        except urllib.error.HTTPError as e:
            raise DownloadError(url, _describe(e, timeout)) from e
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, refusals and resets are OSErrors
            # Worth another attempt only if this one got somewhere: bytes arrived (or the .part was restarted).
            progressed = part.exists() and part.stat().st_size != offset
            if not (progressed and attempt < attempts):
                raise DownloadError(url, _describe(e, timeout)) from e
    got = sha256_file(part)
    if sha256 is not None and got != sha256.lower():
        part.unlink()
        raise ChecksumMismatchError(url, sha256.lower(), got)
    os.replace(part, dest)
    return dest


def fetch(
    entry: WeightEntry, *, home: Path | None = None, timeout: float = DEFAULT_TIMEOUT, progress: bool = True
) -> Path:
    """The registry entry's file in the download cache, downloaded from its URLs in order if absent.

    A file already there (downloaded before, or copied in by hand) is checked against the entry's
    SHA-256 when one is known. Raises `WeightsUnavailableError` when every URL fails.
    """
    dest = downloads_dir(home) / entry.filename
    if dest.exists():
        if entry.sha256 is not None and (got := sha256_file(dest)) != entry.sha256:
            raise ValueError(
                f"{dest} has SHA-256 {got}, but {entry.name} is published with {entry.sha256}. "
                f"Delete it to download {entry.filename} again, or load this file by its path "
                f"(nasjax.load({str(dest)!r})), which checks no hash."
            )
        return dest
    failures = []
    for url in entry.urls:
        try:
            return download(url, dest, entry.sha256, timeout=timeout, progress=progress)
        except DownloadError as e:
            failures.append(e)
    raise WeightsUnavailableError(entry, dest, failures)
