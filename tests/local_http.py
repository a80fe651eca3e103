"""A real HTTP server on 127.0.0.1 for download tests, and a URL on which nothing listens.

    with http_server(Handler) as base:      # base = "http://127.0.0.1:PORT"
        hub.download(f"{base}/w.pt", ...)
"""
from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from typing import Iterator


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free local port for the block; yields the base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True  # a handler still sleeping or dripping must not hold up the test's end
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def refused_url(name: str = "w.pt") -> str:
    """A URL on a local port nothing listens on (bound, then released): the connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
