"""Run the API with uvicorn: the socket is bound here first (a taken port or a bad host is an OSError
the command reports in one line), then uvicorn serves on it until SIGTERM / Ctrl-C, finishing the
requests in flight (app.py's lifespan then answers what the batchers accepted)."""
from __future__ import annotations

import signal
import socket

from nasjax.serve.app import ServeConfig, Service, create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(models: dict, config: ServeConfig = ServeConfig(), host: str = "127.0.0.1", port: int = 8000,
          announce=print, graceful_timeout: float = 30.0) -> None:
    """Serve `models` ({name: model}) on host:port until stopped; `announce` gets the URL line."""
    import uvicorn

    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    service = Service(models, config)
    app = create_app(service)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=graceful_timeout))
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    announce(f"serving {', '.join(models)} at http://{shown}:{bound_port} (compiling; GET /health says when "
             "ready; OpenAPI at /docs)", flush=True)
    # uvicorn re-raises the signal that stopped it once it has shut down; as a KeyboardInterrupt the
    # command ends with status 0 after a drained SIGTERM, instead of being killed by the signal.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
