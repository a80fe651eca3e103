"""Hostile and broken servers, full and read-only disks, and concurrent processes against the weights
cache (issue 12): nothing invalid may enter the cache, no download may hang or grow without bound, and
two processes filling the same entry must both succeed with one copy.

Every server runs on 127.0.0.1 inside the test; every limit is set to a second or two, so each test
ends in a few seconds whatever the code under test does (a hang shows as a DownloadError-less failure
after the server's own give-up time, not as a stuck run).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from local_http import http_server, refused_url

from conftest import reference_keys
from hostile import read_only_dir, small_disk
from nasjax.converters import WeightFileError
from nasjax.loading import hub
from nasjax.weights import registry

REPO = Path(__file__).resolve().parents[2]
FAST = hub.DownloadLimits(deadline=2.0, min_rate=0.0, rate_window=60.0, lock_timeout=60.0)
ULTRALYTICS = "yolo_nas_s.coco_ultralytics"  # published without a SHA-256: only the structure can be checked
SG = "yolo_nas_s.coco"


def cheap_state_dict() -> dict[str, np.ndarray]:
    """yolo_nas_s training-form tensors of the right shapes, constant values: made in a fraction of a second."""
    shapes = reference_keys("yolo_nas_s", "training")  # the committed listing: no model to build
    return {k: np.zeros(s, np.int64) if k.endswith("num_batches_tracked") else np.full(s, 0.5, np.float32)
            for k, s in shapes.items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> bytes:
    """A yolo_nas_s state dict in torch.save's zip format (what the published files are), as bytes."""
    from torch_files import save_state_dict

    path = save_state_dict(tmp_path_factory.mktemp("weights") / "w.pth", cheap_state_dict())
    return path.read_bytes()


@dataclasses.dataclass
class Behaviour:
    """What the server does. `body` is served with `etag`, honouring Range and If-Range like a CDN."""

    body: bytes = b""
    etag: str | None = '"v1"'
    send_length: bool = True
    cut_at: int | None = None  # stop after this many bytes of the body and close the connection
    drip_body: bool = False  # send the headers, then one byte every 50 ms
    drip_headers: bool = False  # send the status line, then one header byte every 50 ms
    announce: int | None = None  # a Content-Length to send instead of the real one
    endless: bool = False  # no length, bytes until the client hangs up
    status: int = 200
    content_type: str = "application/octet-stream"


class Server:
    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.requests: list[dict[str, str | None]] = []

    def handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                b = server.behaviour
                server.requests.append({"range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")})
                try:
                    self._answer(b)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _answer(self, b: Behaviour):
                if b.drip_headers:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(2000):  # 100 s of "X-Slow: ..." unless the client hangs up first
                        self.wfile.write(b"X")
                        self.wfile.flush()
                        time.sleep(0.05)
                    return
                if b.status != 200:
                    self.send_error(b.status)
                    return
                start = 0
                requested, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                if requested and (if_range is None or if_range == b.etag):
                    start = int(requested[len("bytes="):].rstrip("-"))
                body = b.body[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", b.content_type)
                if b.etag:
                    self.send_header("ETag", b.etag)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(b.body) - 1}/{len(b.body)}")
                if b.announce is not None:
                    self.send_header("Content-Length", str(b.announce))
                elif b.send_length and not b.endless:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if b.endless:
                    block = b"\0" * 65536
                    for _ in range(100_000):
                        self.wfile.write(block)
                    return
                if b.drip_body:
                    for i in range(min(len(body), 2000)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.05)
                    return
                if b.cut_at is not None:
                    self.wfile.write(body[: b.cut_at])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler


@contextlib.contextmanager
def serving(behaviour: Behaviour):
    server = Server(behaviour)
    with http_server(server.handler()) as base:
        yield base, server


def entry(name: str, url: str, **changes) -> registry.WeightEntry:
    return dataclasses.replace(registry.get_entry(name), urls=(url,), **changes)


def cache_files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and p.suffix != ".lock")


# --- nothing invalid enters the cache when no SHA-256 is published ---------------------------------------

HTML = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>\n"


def test_html_error_page_is_refused_and_the_healthy_server_then_works(home, weights):
    behaviour = Behaviour(body=HTML, content_type="text/html")
    with serving(behaviour) as (base, _):
        weights_entry = entry(ULTRALYTICS, f"{base}/yolo_nas_s.pt")
        with pytest.raises(hub.WeightsUnavailableError, match="not a valid file"):
            hub.fetch(weights_entry, progress=False, limits=FAST)
        assert cache_files(home) == []  # before: the HTML page was cached as yolo_nas_s.pt for good
        behaviour.body, behaviour.etag, behaviour.content_type = weights, '"v2"', "application/octet-stream"
        path = hub.fetch(weights_entry, progress=False, limits=FAST)
    assert path.read_bytes() == weights and cache_files(home) == ["downloads/yolo_nas_s.pt"]


def test_truncated_body_without_length_is_refused(home, weights):
    with serving(Behaviour(body=weights, send_length=False, cut_at=len(weights) // 2)) as (base, _):
        with pytest.raises(hub.WeightsUnavailableError, match="not a valid file") as info:
            hub.fetch(entry(ULTRALYTICS, f"{base}/yolo_nas_s.pt"), progress=False, limits=FAST)
    assert "yolo_nas_s.pt" in str(info.value)
    assert cache_files(home) == []


def test_file_of_another_variant_is_refused(home, weights):
    other = dataclasses.replace(registry.get_entry("yolo_nas_m.coco_ultralytics"))
    with serving(Behaviour(body=weights)) as (base, _):
        with pytest.raises(hub.WeightsUnavailableError, match="holds yolo_nas_s weights"):
            hub.fetch(dataclasses.replace(other, urls=(f"{base}/yolo_nas_m.pt",)), progress=False, limits=FAST)
    assert cache_files(home) == []


def test_part_of_another_version_is_not_resumed(tmp_path):
    old, new = os.urandom(200_000), os.urandom(300_000)
    dest = tmp_path / "w.pt"
    with serving(Behaviour(body=new, etag='"v2"')) as (base, server):
        url = f"{base}/w.pt"
        # A .part from version 1, downloaded under ETag "v1": the server now has "v2".
        (tmp_path / "w.pt.part").write_bytes(old[:100_000])
        (tmp_path / "w.pt.part.json").write_text(json.dumps({"url": url, "etag": '"v1"', "total": len(old)}))
        hub.download(url, dest, progress=False, limits=FAST)
        assert server.requests[-1] == {"range": "bytes=100000-", "if_range": '"v1"'}
        assert dest.read_bytes() == new  # before: old[:100000] + new[100000:], accepted
        # A .part with nothing to say where it came from, and no SHA-256 to check the result: never resumed.
        dest.unlink()
        (tmp_path / "w.pt.part").write_bytes(old[:100_000])
        hub.download(url, dest, progress=False, limits=FAST)
        assert server.requests[-1]["range"] is None and dest.read_bytes() == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_part_of_the_same_version_is_resumed_with_if_range(tmp_path):
    body = os.urandom(300_000)
    dest = tmp_path / "w.pt"
    with serving(Behaviour(body=body, etag='"v1"', cut_at=120_000)) as (base, server):
        with pytest.raises(hub.DownloadError, match="connection closed after 120000"):
            hub.download(f"{base}/w.pt", dest, attempts=1, progress=False, limits=FAST)
        server.behaviour.cut_at = None
        hub.download(f"{base}/w.pt", dest, progress=False, limits=FAST)
    assert server.requests[-1] == {"range": "bytes=120000-", "if_range": '"v1"'}
    assert dest.read_bytes() == body


def test_cached_file_that_fails_to_load_is_removed(home, monkeypatch):
    import nasjax

    downloads = home / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "yolo_nas_s.pt").write_bytes(HTML)  # left by an older nasjax, or by hand
    monkeypatch.setitem(registry._ENTRIES, ULTRALYTICS, entry(ULTRALYTICS, refused_url()))
    with pytest.raises(WeightFileError, match="was removed: load 'yolo_nas_s.coco_ultralytics' again"):
        nasjax.load(ULTRALYTICS)
    assert not (downloads / "yolo_nas_s.pt").exists()  # before: kept, and every later load failed the same way


# --- no download hangs or grows without bound -------------------------------------------------------------

def test_dripping_body_ends_at_the_deadline(tmp_path):
    started = time.monotonic()
    with serving(Behaviour(body=os.urandom(10_000), drip_body=True)) as (base, _):
        with pytest.raises(hub.DownloadError, match=r"took longer than the 1 s allowed \(NASJAX_DOWNLOAD_TIMEOUT\)"):
            hub.download(f"{base}/w.pt", tmp_path / "w.pt", progress=False,
                         limits=dataclasses.replace(FAST, deadline=1.0))
    assert time.monotonic() - started < 3  # before: 2000 bytes x 50 ms = 100 s (a real drip: forever)
    assert not (tmp_path / "w.pt").exists()


def test_dripping_headers_end_at_the_deadline(tmp_path):
    started = time.monotonic()
    with serving(Behaviour(drip_headers=True)) as (base, _):
        with pytest.raises(hub.DownloadError, match="took longer than the 1 s allowed"):
            hub.download(f"{base}/w.pt", tmp_path / "w.pt", progress=False,
                         limits=dataclasses.replace(FAST, deadline=1.0))
    assert time.monotonic() - started < 3


def test_too_slow_a_transfer_is_abandoned(tmp_path):
    started = time.monotonic()
    slow = dataclasses.replace(FAST, deadline=30.0, min_rate=1000.0, rate_window=0.5)  # the drip: ~20 bytes/s
    with serving(Behaviour(body=os.urandom(10_000), drip_body=True)) as (base, _):
        with pytest.raises(hub.DownloadError, match=r"too slow: \d+ bytes/s over the last .*NASJAX_DOWNLOAD_MIN_RATE"):
            hub.download(f"{base}/w.pt", tmp_path / "w.pt", progress=False, limits=slow)
    assert time.monotonic() - started < 3


def test_endless_body_is_cut_at_the_bound_and_deleted(tmp_path):
    with serving(Behaviour(endless=True)) as (base, _):
        with pytest.raises(hub.DownloadError, match="sent more than the 1048576 bytes"):
            hub.download(f"{base}/w.pt", tmp_path / "w.pt", progress=False, limits=FAST, max_bytes=1 << 20)
    assert list(tmp_path.iterdir()) == []  # before: the .part grew until the disk was full


def test_oversized_announcement_is_refused_before_downloading(home):
    weights_entry = entry(ULTRALYTICS, "")
    bound = hub.weight_file_bound(weights_entry)
    with serving(Behaviour(body=b"x" * 1000, announce=bound + 1)) as (base, server):
        with pytest.raises(hub.WeightsUnavailableError, match=f"announces {bound + 1} bytes"):
            hub.fetch(dataclasses.replace(weights_entry, urls=(f"{base}/yolo_nas_s.pt",)), progress=False, limits=FAST)
    assert cache_files(home) == []


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("NASJAX_DOWNLOAD_TIMEOUT", "12.5")
    monkeypatch.setenv("NASJAX_DOWNLOAD_MIN_RATE", "0")
    monkeypatch.setenv("NASJAX_DOWNLOAD_RATE_WINDOW", "3")
    monkeypatch.delenv("NASJAX_LOCK_TIMEOUT", raising=False)
    assert hub.DownloadLimits.from_env() == hub.DownloadLimits(12.5, 0.0, 3.0, hub.DownloadLimits().lock_timeout)
    monkeypatch.setenv("NASJAX_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="NASJAX_DOWNLOAD_TIMEOUT='soon': expected a positive number of seconds"):
        hub.DownloadLimits.from_env()


# --- full and read-only disks -------------------------------------------------------------------------------

def test_disk_full_download_is_refused_up_front_and_leaves_nothing(tmp_path):
    with small_disk(tmp_path, "1m") as disk, serving(Behaviour(body=os.urandom(3 << 20))) as (base, _):
        with pytest.raises(hub.DiskFullError, match="the disk is full") as info:
            hub.download(f"{base}/w.pt", disk / "w.pt", progress=False, limits=FAST)
        assert info.value.errno == 28 and str(disk) in str(info.value)
        assert list(disk.iterdir()) == []


def test_disk_full_midway_removes_the_part(tmp_path):
    with small_disk(tmp_path, "1m") as disk, serving(Behaviour(body=os.urandom(3 << 20), send_length=False)) as (
            base, _):
        with pytest.raises(hub.DiskFullError, match="no space left for the download of"):
            hub.download(f"{base}/w.pt", disk / "w.pt", progress=False, limits=FAST)
        assert list(disk.iterdir()) == []  # before: an OSError traceback and a full disk


def test_read_only_cache_is_one_clear_error(tmp_path, monkeypatch):
    import nasjax

    with read_only_dir(tmp_path) as cache:
        monkeypatch.setenv("NASJAX_HOME", str(cache))
        monkeypatch.setitem(registry._ENTRIES, ULTRALYTICS, entry(ULTRALYTICS, refused_url()))
        with pytest.raises(hub.CacheWriteError, match=f"cannot write to {cache}/downloads: Read-only file system"):
            nasjax.load(ULTRALYTICS)


# --- two processes, one cache ------------------------------------------------------------------------------

CHILD = """
import dataclasses, os, pathlib, sys, time
from nasjax.weights import registry
registry._ENTRIES["yolo_nas_s.coco"] = dataclasses.replace(
    registry.get_entry("yolo_nas_s.coco"), urls=(os.environ["URL"],), sha256=os.environ["SHA256"])
import nasjax
pathlib.Path(os.environ["READY"]).touch()
go = pathlib.Path(os.environ["GO"])
while not go.exists():
    time.sleep(0.01)
detector = nasjax.load("yolo_nas_s")
print("loaded", detector.form, detector.num_classes)
"""


def test_two_processes_fill_an_empty_cache_at_once(tmp_path, weights):
    home = tmp_path / "home"
    go = tmp_path / "go"
    with serving(Behaviour(body=weights)) as (base, server):
        env = {**os.environ, "NASJAX_HOME": str(home), "URL": f"{base}/yolo_nas_s_coco.pth",
               "SHA256": hashlib.sha256(weights).hexdigest(), "GO": str(go), "JAX_PLATFORMS": "cpu"}
        children = [
            subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD)], cwd=REPO, text=True,
                             env={**env, "READY": str(tmp_path / f"r{i}")},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(2)
        ]
        try:
            deadline = time.monotonic() + 120
            while not all((tmp_path / f"r{i}").exists() for i in range(2)):
                assert time.monotonic() < deadline and all(c.poll() is None for c in children), [
                    c.communicate() for c in children if c.poll() is not None]
                time.sleep(0.05)
            go.touch()  # both are imported and start loading at the same moment
            results = [c.communicate(timeout=180) for c in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
        downloads = len(server.requests)
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err[-3000:]  # before: one of them died with FileNotFoundError
        assert "loaded full 80" in out
    converted = [p.name for p in (home / "converted").iterdir() if p.suffix != ".lock"]
    assert converted == [f"{SG}-{hashlib.sha256(weights).hexdigest()[:12]}-full"]
    assert [p.name for p in (home / "downloads").iterdir() if p.suffix != ".lock"] == ["yolo_nas_s_coco.pth"]
    assert downloads == 1  # the second process waited for the first and used its conversion
