"""The nasjax cache directory, and downloads of published weight files into it.

Layout under `cache_home()` (`$NASJAX_HOME`, else `$XDG_CACHE_HOME/nasjax`, else `~/.cache/nasjax`):

    downloads/<filename>                       the file as published (e.g. yolo_nas_s_coco.pth)
    downloads/<filename>.part                  an interrupted download, resumed by the next attempt
    downloads/<filename>.part.json             where the .part came from (URL, ETag, Last-Modified, size)
    downloads/<filename>.lock                  held while one process downloads the file
    converted/<name>-<sha256[:12]>-<form>/     a converted orbax checkpoint (see nasjax.checkpoint)
    locks/<name>-<form>.lock                   held while one process downloads and converts an entry

A file reaches its final path only complete and checked: it is streamed to `<dest>.part` and renamed
with `os.replace` once its SHA-256 matches the published one or, where none is published (the
Ultralytics files), once it parses as a weight file of the registered variant. A server cannot poison
the cache with an error page, a cut body or bytes of another version of the file: that is why a
`.part` is resumed only when the server confirms, through `If-Range`, that the file is unchanged.

The limits that keep a hostile or broken server from hanging a download or filling the disk are the
`DownloadLimits` below, each settable through an environment variable (docs/weights_cache.md#limits).
Two processes that need the same file take turns through a `filelock` lock beside it. Only the standard
library's urllib is used for HTTP.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import http.client
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Sequence

import filelock
from tqdm import tqdm

from nasjax.weights.registry import WeightEntry

DEFAULT_TIMEOUT = 30.0  # seconds without progress (connect or read) before a URL counts as failed
_CHUNK = 1 << 20
_MIB = 1 << 20
# A registered file's size is approximate: the download may exceed it by this factor before it is cut.
WEIGHT_SIZE_SLACK = 1.5
# The bound on a registered file whose size is not known (YOLO-NAS L, the largest, is ~ 0.25 GiB).
MAX_WEIGHT_FILE_BYTES = 1 << 30
# Space kept free on top of what a write needs, so that a file that fits exactly does not fill the disk.
DISK_MARGIN_BYTES = 16 * _MIB


@dataclasses.dataclass(frozen=True)
class DownloadLimits:
    """How long and how slowly a download may go on before it is abandoned with a `DownloadError`.

    deadline: seconds for one `download()` call, retries included (NASJAX_DOWNLOAD_TIMEOUT).
    min_rate: bytes per second, averaged over each `rate_window` seconds, below which a transfer counts
        as stalled (NASJAX_DOWNLOAD_MIN_RATE; 0 turns the check off).
    rate_window: seconds over which the rate is measured (NASJAX_DOWNLOAD_RATE_WINDOW).
    lock_timeout: seconds to wait for another process that is downloading or converting the same
        weights (NASJAX_LOCK_TIMEOUT).
    A single read still gives up after the `timeout` passed to `download` (30 s): whichever ends first.
    """

    deadline: float = 3600.0
    min_rate: float = 4096.0
    rate_window: float = 60.0
    lock_timeout: float = 7200.0

    @classmethod
    def from_env(cls) -> "DownloadLimits":
        """The defaults, overridden by the environment variables named above."""
        values = {}
        for field, variable in _LIMIT_VARIABLES.items():
            text = os.environ.get(variable)
            if text is None or not text.strip():
                continue
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if not value >= 0 or (value == 0 and field != "min_rate") or value == float("inf"):
                raise ValueError(f"{variable}={text!r}: expected a positive number of "
                                 f"{'bytes per second' if field == 'min_rate' else 'seconds'}")
            values[field] = value
        return cls(**values)


_LIMIT_VARIABLES = {
    "deadline": "NASJAX_DOWNLOAD_TIMEOUT",
    "min_rate": "NASJAX_DOWNLOAD_MIN_RATE",
    "rate_window": "NASJAX_DOWNLOAD_RATE_WINDOW",
    "lock_timeout": "NASJAX_LOCK_TIMEOUT",
}


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


class DiskFullError(OSError):
    """No space left for a file nasjax writes (a download, a converted checkpoint); nothing partial is
    left behind. An OSError with errno ENOSPC, so `except OSError` keeps catching it."""

    def __init__(self, path: str | os.PathLike, what: str, needed: int | None = None):
        free = _free_bytes(Path(path))
        amounts = f"needs ~{needed / _MIB:.0f} MiB, " if needed else ""
        message = (f"the disk is full: no space left for {what} at {path} ({amounts}"
                   f"{'unknown' if free is None else f'{free / _MIB:.0f} MiB'} free); nothing partial was "
                   "left there. Free some space there, or write to another disk (for the cache: set NASJAX_HOME)")
        super().__init__(errno.ENOSPC, message)
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror


class CacheWriteError(OSError):
    """The cache (or a download's folder) cannot be written: read-only, no permission..."""

    def __init__(self, path: str | os.PathLike, error: OSError):
        message = (f"cannot write to {path}: {error.strerror or error}. Set NASJAX_HOME to a writable folder, "
                   "or load a copy of the weights you already have by its path")
        super().__init__(error.errno, message)
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror


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


def _free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem of `path` (or of its nearest existing parent); None if unknown."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def is_disk_full(error: BaseException) -> bool:
    """True for an OSError ENOSPC/EDQUOT anywhere in `error`'s chain, or a library error (orbax,
    tensorstore) whose message says the same."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text or "os_error_code='28'" in text or "Disk quota exceeded" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def check_free_space(directory: str | os.PathLike, needed: int, what: str) -> None:
    """Raise `DiskFullError` before writing `needed` bytes under `directory` if they cannot fit."""
    free = _free_bytes(Path(directory))
    if free is not None and free < needed + DISK_MARGIN_BYTES:
        raise DiskFullError(directory, what, needed)


@contextlib.contextmanager
def cache_lock(path: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """Hold `<path>.lock` (a `filelock.FileLock`) for the block, so that two processes filling the same
    cache entry take turns. Where the lock file cannot be created (a read-only cache) nothing can be
    written there either, so the block runs unlocked."""
    lock_path = Path(f"{path}.lock")
    timeout = DownloadLimits.from_env().lock_timeout if timeout is None else timeout
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(lock_path, timeout=timeout)
        lock.acquire()
    except filelock.Timeout as e:
        raise TimeoutError(
            f"another process has held {lock_path} for {timeout:g} s (it is downloading or converting the same "
            f"weights); wait for it, or raise NASJAX_LOCK_TIMEOUT; if no such process runs, delete the lock file"
        ) from e
    except OSError:  # read-only or not ours: nobody can write here, so there is nothing to serialise
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _user_agent() -> str:
    from nasjax import __version__

    return f"nasjax/{__version__}"


def _content_range(response) -> tuple[int | None, int | None]:
    """(START, TOTAL) of a `Content-Range: bytes START-END/TOTAL` header; None for what is absent."""
    value = response.headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    if unit != "bytes":
        return None, None
    span, _, total = spec.partition("/")
    start = span.partition("-")[0]
    return (int(start) if start.isdigit() else None), (int(total) if total.isdigit() else None)


def _content_length(response) -> int | None:
    length = response.headers.get("Content-Length")
    return int(length) if length and length.strip().isdigit() else None


class _Part:
    """`<dest>.part` and its `.part.json`: what a later attempt needs to resume it safely."""

    def __init__(self, dest: Path):
        self.path = dest.with_name(dest.name + ".part")
        self.meta_path = dest.with_name(dest.name + ".part.json")

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def meta(self) -> dict:
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def write_meta(self, url: str, response, total: int | None) -> None:
        etag = response.headers.get("ETag")
        meta = {
            "url": url,
            # If-Range takes only a strong validator: a weak ETag (W/"...") may not stand for these bytes.
            "etag": etag if etag and not etag.startswith("W/") else None,
            "last_modified": response.headers.get("Last-Modified"),
            "total": total,
        }
        self.meta_path.write_text(json.dumps(meta))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)


def _resume_point(part: _Part, url: str, sha256: str | None, max_bytes: int | None) -> tuple[int, str | None]:
    """(offset, If-Range validator) for the next request: where the `.part` can be continued from.

    A `.part` is continued only when its bytes can be trusted to belong to the file the server has now:
    with the validator it was downloaded under (the server restarts from zero if the file changed),
    or, lacking one, when the SHA-256 checked at the end will catch a mix of two versions."""
    offset = part.size()
    if not offset:
        return 0, None
    meta = part.meta()
    same_url = meta.get("url") == url
    validator = (meta.get("etag") or meta.get("last_modified")) if same_url else None
    total = meta.get("total") if same_url and isinstance(meta.get("total"), int) else None
    too_long = (total is not None and offset > total) or (max_bytes is not None and offset > max_bytes)
    if too_long or (validator is None and sha256 is None):
        part.remove()  # resuming would be a guess: start over
        return 0, None
    return offset, validator


class _Connections:
    """The sockets one `download()` call opens, so that its deadline can cut them wherever a server
    stalls (even while it drips the headers or the TLS handshake, where no per-read timeout fires).

    Each is kept as a duplicate of its descriptor: shutting that down ends the connection even after
    TLS has taken the original socket object over (`ssl.wrap_socket` detaches it)."""

    def __init__(self):
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cut_off = False

    def add(self, sock: socket.socket) -> None:
        duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
        with self.lock:
            self.sockets.append(duplicate)
            cut = self.cut_off
        if cut:
            self._shutdown(duplicate)

    def cut(self) -> None:
        with self.lock:
            self.cut_off = True
            sockets = list(self.sockets)
        for sock in sockets:
            self._shutdown(sock)

    def close(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            sock.close()

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked on the connection with EOF

    def opener(self) -> urllib.request.OpenerDirector:
        connections = self

        def tracked(base):
            class Connection(base):
                def connect(self):
                    create = self._create_connection

                    def create_and_track(*args, **kwargs):
                        sock = create(*args, **kwargs)
                        connections.add(sock)
                        return sock

                    self._create_connection = create_and_track
                    super().connect()

            return Connection

        http_connection, https_connection = tracked(http.client.HTTPConnection), tracked(http.client.HTTPSConnection)

        class HTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(http_connection, req)

        class HTTPSHandler(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(https_connection, req, context=self._context)

        return urllib.request.build_opener(HTTPHandler(), HTTPSHandler())


class _Limiter:
    """The deadline and the minimum rate of one `download()` call."""

    def __init__(self, limits: DownloadLimits):
        self.limits = limits
        self.started = time.monotonic()
        self.window_start, self.window_bytes = self.started, 0

    def remaining(self) -> float:
        return self.limits.deadline - (time.monotonic() - self.started)

    def check_deadline(self) -> None:
        if self.remaining() <= 0:
            raise _Abandon(f"took longer than the {self.limits.deadline:g} s allowed (NASJAX_DOWNLOAD_TIMEOUT); "
                           "the partial download is kept and resumed by the next attempt")

    def check(self, received: int) -> None:
        """Raise `_Abandon` when past the deadline or, over the last full window, below the minimum rate."""
        self.check_deadline()
        now = time.monotonic()
        self.window_bytes += received
        elapsed = now - self.window_start
        if elapsed >= self.limits.rate_window:
            rate = self.window_bytes / elapsed
            if rate < self.limits.min_rate:
                raise _Abandon(
                    f"too slow: {rate:.0f} bytes/s over the last {elapsed:.1f} s, below the minimum of "
                    f"{self.limits.min_rate:g} (NASJAX_DOWNLOAD_MIN_RATE); the partial download is kept"
                )
            self.window_start, self.window_bytes = now, 0


class _Abandon(Exception):
    """A download given up for good (deadline, rate, size bound): no retry of this URL."""


def _write(f, chunk: bytes, part: _Part, url: str) -> None:
    try:
        f.write(chunk)
    except OSError as e:
        if is_disk_full(e):
            with contextlib.suppress(OSError):  # closing flushes what is buffered: ENOSPC again
                f.close()
            part.remove()
            raise DiskFullError(part.path.parent, f"the download of {url}") from e
        raise


def _stream(
    url: str, part: _Part, offset: int, validator: str | None, timeout: float, progress: bool,
    limiter: _Limiter, max_bytes: int | None, opener: urllib.request.OpenerDirector,
) -> None:
    """Append the bytes from `offset` on to the `.part` (or rewrite it, if the server sends the whole file)."""
    headers = {"User-Agent": _user_agent()}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator  # a changed file comes back whole (200), not as a bad tail
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part is not a prefix of this file: start again from zero
            part.remove()
            return _stream(url, part, 0, None, timeout, progress, limiter, max_bytes, opener)
        raise
    with response:
        start, total = _content_range(response)
        recorded = part.meta().get("total") if offset else None
        if not (offset and response.status == 206 and start == offset and (recorded is None or total == recorded)):
            if offset and response.status == 206:  # a range of another size of file: start again
                response.close()
                part.remove()
                return _stream(url, part, 0, None, timeout, progress, limiter, max_bytes, opener)
            offset, total = 0, _content_length(response)  # the whole file, from zero
        elif total is None and (length := _content_length(response)) is not None:
            total = offset + length
        if total is not None and max_bytes is not None and total > max_bytes:
            part.remove()
            raise _Abandon(f"the server announces {total} bytes, more than the {max_bytes} this file can have; "
                           "refused without downloading it")
        if total is not None:
            check_free_space(part.path.parent, total - offset, f"the download of {url}")
        if not offset:
            part.write_meta(url, response, total)
        bound = total if total is not None else max_bytes
        received = offset
        with open(part.path, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.path.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:  # fmt: skip
            # read1: whatever has arrived, so that the deadline and rate are checked on a drip too.
            while chunk := response.read1(_CHUNK):
                received += len(chunk)
                if bound is not None and received > bound:
                    f.close()
                    part.remove()
                    raise _Abandon(f"the server sent more than the {bound} bytes this file can have; the download "
                                   "was deleted")
                _write(f, chunk, part, url)
                bar.update(len(chunk))
                limiter.check(len(chunk))
    limiter.check_deadline()  # a connection cut by the deadline ends like a complete body without a length
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"timed out (no data for {timeout:g} s)"
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)


def _attempts(url, part: _Part, sha256, timeout, attempts, progress, limiter: _Limiter, max_bytes, opener) -> None:
    """Stream `url` into the `.part`, resuming a cut transfer while attempts and time are left."""
    for attempt in range(1, attempts + 1):
        offset, validator = _resume_point(part, url, sha256, max_bytes)
        try:
            _stream(url, part, offset, validator, timeout, progress, limiter, max_bytes, opener)
            return
        except (DiskFullError, CacheWriteError):
            raise
        except _Abandon as e:
            raise DownloadError(url, str(e)) from e
        except urllib.error.HTTPError as e:
            raise DownloadError(url, _describe(e, timeout)) from e
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, refusals and resets are OSErrors
            if is_disk_full(e):  # met outside a chunk's write: the meta file, the flush when the .part closes
                part.remove()
                raise DiskFullError(part.path.parent, f"the download of {url}") from e
            if limiter.remaining() <= 0:  # the deadline cut the connection, whatever error that caused
                raise DownloadError(url, f"took longer than the {limiter.limits.deadline:g} s allowed "
                                         "(NASJAX_DOWNLOAD_TIMEOUT); the partial download is kept") from e
            if isinstance(e, OSError) and not isinstance(e, urllib.error.URLError) and e.errno in (
                errno.EROFS, errno.EACCES, errno.EPERM):
                raise CacheWriteError(part.path, e) from e
            # Worth another attempt only if this one got somewhere: bytes arrived (or the .part was restarted).
            progressed = part.size() != offset
            if not (progressed and attempt < attempts):
                raise DownloadError(url, _describe(e, timeout)) from e


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = 3,
    progress: bool = True,
    validate: Callable[[Path], None] | None = None,
    max_bytes: int | None = None,
    limits: DownloadLimits | None = None,
) -> Path:
    """Download `url` to `dest` through `dest.part`, verifying `sha256` when given; returns `dest`.

    A `.part` left by an earlier, interrupted download is resumed with an HTTP Range request carrying the
    ETag (or Last-Modified) it was fetched under as `If-Range`, so that a changed file comes back whole;
    without one it is resumed only when `sha256` is known. A transfer cut after some bytes arrived is
    resumed up to `attempts` times in all. `validate(path)` (raising ValueError) checks the finished
    file before it takes its final name. The file may not exceed its Content-Length nor `max_bytes`.
    `limits` (default `DownloadLimits.from_env()`) bounds the call's time and the transfer's rate.

    Raises `DownloadError` (HTTP error, timeout, refused connection, too slow...) with `.part` kept for a
    later resume where that makes sense, `ChecksumMismatchError` (or a DownloadError saying the file is
    invalid) with nothing kept, `DiskFullError` with nothing kept, or `CacheWriteError` when the folder
    cannot be written. `dest` is only ever a complete, checked file.
    """
    dest = Path(dest)
    part = _Part(dest)
    limiter = _Limiter(limits or DownloadLimits.from_env())
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheWriteError(dest.parent, e) from e
    connections = _Connections()
    opener = connections.opener()
    watchdog = threading.Timer(max(limiter.remaining(), 0.0), connections.cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        _attempts(url, part, sha256, timeout, attempts, progress, limiter, max_bytes, opener)
    finally:
        watchdog.cancel()
        connections.close()
    got = sha256_file(part.path)
    if sha256 is not None and got != sha256.lower():
        part.remove()
        raise ChecksumMismatchError(url, sha256.lower(), got)
    if validate is not None:
        try:
            validate(part.path)
        except ValueError as e:
            part.remove()
            raise DownloadError(url, f"not a valid file ({e}); the download was deleted") from e
    os.replace(part.path, dest)
    part.meta_path.unlink(missing_ok=True)
    return dest


def weight_file_bound(entry: WeightEntry) -> int:
    """The most bytes the entry's file may have: its registered size with slack, else a general bound."""
    if entry.approx_size_mib:
        return int(entry.approx_size_mib * _MIB * WEIGHT_SIZE_SLACK)
    return MAX_WEIGHT_FILE_BYTES


def check_weight_file(path: Path, entry: WeightEntry) -> None:
    """Raise ValueError unless `path` parses (with the code-free reader) as weights of `entry`'s variant
    and class count. Used where no SHA-256 is published, so that nothing else can enter the cache."""
    from nasjax.converters import read_weight_file

    weight_file = read_weight_file(path)  # WeightFileError (a ValueError) names what is wrong
    found = (weight_file.variant, weight_file.num_classes)
    if found != (entry.variant, entry.num_classes):
        raise ValueError(
            f"it holds {found[0]} weights with {found[1]} classes, but {entry.name} is {entry.variant} with "
            f"{entry.num_classes} classes (another file published under this name?)"
        )


def fetch(
    entry: WeightEntry, *, home: Path | None = None, timeout: float = DEFAULT_TIMEOUT, progress: bool = True,
    limits: DownloadLimits | None = None,
) -> Path:
    """The registry entry's file in the download cache, downloaded from its URLs in order if absent.

    A file already there (downloaded before, or copied in by hand) is checked against the entry's
    SHA-256 when one is known. Where none is published, a download must parse as the entry's weights
    (`check_weight_file`) to enter the cache. One process at a time downloads a file (`cache_lock`).
    Raises `WeightsUnavailableError` when every URL fails.
    """
    dest = downloads_dir(home) / entry.filename
    with cache_lock(dest, None if limits is None else limits.lock_timeout):
        if dest.exists():
            if entry.sha256 is not None and (got := sha256_file(dest)) != entry.sha256:
                raise ValueError(
                    f"{dest} has SHA-256 {got}, but {entry.name} is published with {entry.sha256}. "
                    f"Delete it to download {entry.filename} again, or load this file by its path "
                    f"(nasjax.load({str(dest)!r})), which checks no hash."
                )
            return dest
        validate = None if entry.sha256 else (lambda path: check_weight_file(path, entry))
        failures = []
        for url in entry.urls:
            try:
                return download(url, dest, entry.sha256, timeout=timeout, progress=progress, validate=validate,
                                max_bytes=weight_file_bound(entry), limits=limits)
            except DownloadError as e:
                failures.append(e)
        raise WeightsUnavailableError(entry, dest, failures)
