"""Downloads against a local HTTP server on 127.0.0.1: success, resume, servers ignoring Range, checksum
mismatch, HTTP errors, timeouts, refused connections, and the cache layout."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import time

import pytest

import local_http
from local_http import http_server

from nasjax.loading import hub
from nasjax.weights import get_entry

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)  # several read chunks
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves PAYLOAD at any path; the attributes pick a misbehaviour. `ranges` logs each request's Range."""

    def __init__(self, *, honour_range=True, cut_first=False, delay=0.0, status=200):
        self.honour_range, self.cut_first, self.delay, self.status = honour_range, cut_first, delay, status
        self.ranges: list[str | None] = []

    def handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                if server.status != 200:
                    self.send_error(server.status)
                    return
                time.sleep(server.delay)
                start = int(requested[len("bytes="):].rstrip("-")) if requested and server.honour_range else 0
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first and len(server.ranges) == 1:
                    self.wfile.write(body[: len(body) // 3])  # then drop the connection mid-body
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler


def serving(server: Server):
    return http_server(server.handler())


def refused_url() -> str:
    return local_http.refused_url("yolo_nas_s_coco.pth")


def test_download_verifies_and_renames(tmp_path):
    server = Server()
    with serving(server) as base:
        dest = hub.download(f"{base}/f.pth", tmp_path / "sub" / "f.pth", PAYLOAD_SHA256, progress=True)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "f.pth.part").exists()
    assert server.ranges == [None]


def test_cut_transfer_is_resumed_with_a_range_request(tmp_path):
    server = Server(cut_first=True)
    with serving(server) as base:
        dest = hub.download(f"{base}/f.pth", tmp_path / "f.pth", PAYLOAD_SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges[0] is None and len(server.ranges) == 2
    assert server.ranges[1].startswith("bytes=") and int(server.ranges[1][6:-1]) > 0


def test_cut_transfer_with_no_attempts_left_keeps_the_part_for_later(tmp_path):
    server = Server(cut_first=True)
    dest = tmp_path / "f.pth"
    with serving(server) as base:
        with pytest.raises(hub.DownloadError, match="connection closed after"):
            hub.download(f"{base}/f.pth", dest, PAYLOAD_SHA256, attempts=1, progress=False)
        assert not dest.exists()
        part_size = (tmp_path / "f.pth.part").stat().st_size
        assert 0 < part_size < len(PAYLOAD)
        hub.download(f"{base}/f.pth", dest, PAYLOAD_SHA256, attempts=1, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges[1] == f"bytes={part_size}-"


def test_leftover_part_is_resumed(tmp_path):
    (tmp_path / "f.pth.part").write_bytes(PAYLOAD[:1000])
    server = Server()
    with serving(server) as base:
        hub.download(f"{base}/f.pth", tmp_path / "f.pth", PAYLOAD_SHA256, progress=False)
    assert server.ranges == ["bytes=1000-"]
    assert (tmp_path / "f.pth").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    (tmp_path / "f.pth.part").write_bytes(b"stale bytes from another file")
    server = Server(honour_range=False)
    with serving(server) as base:
        hub.download(f"{base}/f.pth", tmp_path / "f.pth", PAYLOAD_SHA256, progress=False)
    assert server.ranges == ["bytes=29-"]
    assert (tmp_path / "f.pth").read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(tmp_path):
    wrong = "0" * 64
    with serving(Server()) as base:
        with pytest.raises(hub.ChecksumMismatchError) as info:
            hub.download(f"{base}/f.pth", tmp_path / "f.pth", wrong, progress=False)
    message = str(info.value)
    assert wrong in message and PAYLOAD_SHA256 in message and f"{base}/f.pth" in message
    assert list(tmp_path.iterdir()) == []


def test_http_error(tmp_path):
    with serving(Server(status=404)) as base:
        with pytest.raises(hub.DownloadError, match="HTTP 404"):
            hub.download(f"{base}/f.pth", tmp_path / "f.pth", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_timeout(tmp_path):
    started = time.perf_counter()
    with serving(Server(delay=3.0)) as base:
        with pytest.raises(hub.DownloadError, match="timed out"):
            hub.download(f"{base}/f.pth", tmp_path / "f.pth", timeout=0.3, progress=False)
    assert time.perf_counter() - started < 2.5
    assert not (tmp_path / "f.pth").exists()


def test_refused_connection(tmp_path):
    with pytest.raises(hub.DownloadError, match="Connection ?Refused|refused"):
        hub.download(refused_url(), tmp_path / "f.pth", progress=False)


def test_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("NASJAX_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_home() == tmp_path / "xdg" / "nasjax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.cache_home() == tmp_path / "user" / ".cache" / "nasjax"
    monkeypatch.setenv("NASJAX_HOME", str(tmp_path / "mine"))
    assert hub.cache_home() == tmp_path / "mine"
    assert hub.downloads_dir() == tmp_path / "mine" / "downloads"
    converted = hub.converted_dir("yolo_nas_s.coco", "ab" * 32, "full")
    assert converted == tmp_path / "mine" / "converted" / "yolo_nas_s.coco-abababababab-full"


def test_fetch_tries_urls_in_order(home):
    with serving(Server(status=404)) as dead, serving(Server()) as live:
        urls = (refused_url(), f"{dead}/yolo_nas_s_coco.pth", f"{live}/yolo_nas_s_coco.pth")
        entry = dataclasses.replace(get_entry("yolo_nas_s"), urls=urls, sha256=PAYLOAD_SHA256)
        path = hub.fetch(entry, progress=False)
    assert path == home / "downloads" / "yolo_nas_s_coco.pth"
    assert path.read_bytes() == PAYLOAD


def test_fetch_reuses_and_checks_a_file_already_there(home):
    entry = dataclasses.replace(get_entry("yolo_nas_s"), urls=(refused_url(),), sha256=PAYLOAD_SHA256)
    (home / "downloads").mkdir(parents=True)
    (home / "downloads" / entry.filename).write_bytes(PAYLOAD)  # copied in by hand
    assert hub.fetch(entry, progress=False).read_bytes() == PAYLOAD
    (home / "downloads" / entry.filename).write_bytes(b"something else")
    with pytest.raises(ValueError, match=f"published with {PAYLOAD_SHA256}"):
        hub.fetch(entry, progress=False)


def test_offline_names_the_file_every_url_and_where_to_put_it(home):
    with serving(Server(status=404)) as dead:
        urls = (refused_url(), f"{dead}/yolo_nas_s_coco.pth")
        entry = dataclasses.replace(get_entry("yolo_nas_s"), urls=urls)
        with pytest.raises(hub.WeightsUnavailableError) as info:
            hub.fetch(entry, progress=False)
    message = str(info.value)
    destination = home / "downloads" / "yolo_nas_s_coco.pth"
    assert "yolo_nas_s_coco.pth" in message and str(destination) in message
    assert all(url in message for url in urls) and "HTTP 404" in message
    assert entry.sha256 in message
    assert info.value.destination == destination and len(info.value.failures) == 2
    assert not destination.exists()
