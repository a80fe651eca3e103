"""nasjax.serve.ray_serve on a local 2-CPU Ray cluster: one replica behind Ray Serve's HTTP proxy answers
what the plain FastAPI app answers (the same endpoints, the same 4xx JSON errors) and what
nasjax.predict gives for the same image."""
from __future__ import annotations

import io
import socket
import time

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import nasjax
from compilation_cache import shared_compilation_cache
from nasjax.serve.app import ServeConfig, Service, create_app
from nasjax.serve.batcher import BatcherConfig, RequestSettings
from nasjax.serve.ray_serve import build, deployment, model_sources

IMGSZ, CONF = 64, 0.01
CONFIG = ServeConfig(batcher=BatcherConfig(max_batch=1, max_wait_ms=2, max_queue=8, imgsz=(IMGSZ,)),
                     decode_workers=1, request_timeout=60, max_body_bytes=2**20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model():
    return nasjax.load("yolo_nas_s", pretrained=False)


@pytest.fixture(scope="module")
def ray_url(tmp_path_factory):
    """Ray Serve's proxy URL, with the deployment running (its replica compiled). The replica and this
    process share JAX's persistent compilation cache (as tests/ray_test.py): one compile between them."""
    with shared_compilation_cache(tmp_path_factory.mktemp("jax_cache")) as cache:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": cache})
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            app = deployment(["yolo_nas_s"], config=CONFIG, pretrained=False, ray_actor_options={"num_cpus": 1},
                             health_check_period_s=1, graceful_shutdown_timeout_s=5)
            serve.run(app, name="nasjax", route_prefix="/")  # returns once the replica is constructed (compiled)
            yield f"http://127.0.0.1:{port}"
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()


@pytest.fixture(scope="module")
def plain(ray_url, model):
    """The plain server's app (what `nasjax serve` runs) in this process, for comparison."""
    import warnings

    with warnings.catch_warnings():  # Starlette's notice about its httpx-based client
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient

    service = Service({"yolo_nas_s": model}, CONFIG)
    service.start(background=False)
    with TestClient(create_app(service, manage=False)) as client:
        yield client
    service.close()


@pytest.fixture(scope="module")
def image_png() -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)
    pixels[20:40, 40:80] = (200, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_healthy(client, deadline_s: float = 30) -> dict:
    deadline = time.monotonic() + deadline_s
    while True:
        response = client.get("/health")
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()
        time.sleep(0.2)


def without_times(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "time_ms"}


def test_detect_through_ray_serve_matches_predict_and_the_plain_server(ray_url, plain, model, image_png):
    with httpx.Client(base_url=ray_url, timeout=60) as client:
        health = wait_healthy(client)
        assert health["status"] == "ok" and health["models"] == ["yolo_nas_s"]
        assert serve.status().applications["nasjax"].status == "RUNNING"
        # Ray Serve's health check is the service's readiness.
        models = client.get("/v1/models")
        assert models.status_code == 200 and models.json() == plain.get("/v1/models").json()
        assert models.json()["models"][0]["imgsz"] == [IMGSZ]
        assert client.get("/openapi.json").json()["paths"].keys() == plain.get("/openapi.json").json()["paths"].keys()

        multipart = client.post("/v1/detect", params={"conf": CONF}, files={"file": ("x.png", image_png, "image/png")})
        raw = client.post("/v1/detect", params={"conf": CONF}, content=image_png, headers={"content-type": "image/png"})
    assert multipart.status_code == raw.status_code == 200, (multipart.text, raw.text)
    got = multipart.json()
    assert without_times(raw.json()) == without_times(got)
    assert without_times(got) == without_times(plain.post("/v1/detect", params={"conf": CONF},
                                                          files={"file": ("x.png", image_png, "image/png")}).json())

    want = model.predict(np.asarray(Image.open(io.BytesIO(image_png)).convert("RGB")), imgsz=IMGSZ, conf=CONF,
                         batch_size=1)[0]  # the batch the server compiled (max_batch=1): no compile here
    assert (got["model"], got["height"], got["width"]) == ("yolo_nas_s", *want.orig_shape)
    detections = got["detections"]
    assert len(detections) == len(want.boxes) > 0
    assert [d["class"] for d in detections] == want.boxes.cls.tolist()
    assert [d["name"] for d in detections] == [want.names[c] for c in want.boxes.cls.tolist()]
    boxes = np.asarray([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in detections], np.float32)
    np.testing.assert_allclose(boxes, want.boxes.xyxy, atol=1e-3, rtol=0)
    np.testing.assert_allclose([d["confidence"] for d in detections], want.boxes.conf, atol=1e-5, rtol=0)


@pytest.mark.parametrize("request_args, status, kind", [
    ({"content": b"not an image", "headers": {"content-type": "image/png"}}, 400, "invalid_image"),
    ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
    ({"content": bytes(2**20 + 1), "headers": {"content-type": "image/png"}}, 413, "body_too_large"),
    ({"files": {"other": ("x.png", b"abc", "image/png")}}, 422, "missing_file"),
    ({"params": {"model": "yolo_nas_x"}, "content": b"abc", "headers": {"content-type": "image/png"}}, 404,
     "unknown_model"),
    ({"params": {"conf": "2"}, "content": b"abc", "headers": {"content-type": "image/png"}}, 422, "invalid_query"),
    ({"params": {"imgsz": "128"}, "content": b"abc", "headers": {"content-type": "image/png"}}, 422, "invalid_query"),
])
def test_client_errors_are_the_plain_servers(ray_url, plain, request_args, status, kind):
    with httpx.Client(base_url=ray_url, timeout=60) as client:
        response = client.post("/v1/detect", **request_args)
        assert client.get("/health").status_code == 200  # and the replica goes on serving
    expected = plain.post("/v1/detect", **request_args)
    assert (response.status_code, response.json()) == (expected.status_code, expected.json())
    assert response.json()["error"]["status"] == status and response.json()["error"]["type"] == kind


def test_replica_health_check_and_shutdown(ray_url, model):
    """The replica's Ray Serve hooks, called directly: check_health fails until the service is compiled
    and after it is closed; __del__ closes it (the batchers answer what they accepted, then stop)."""
    import asyncio
    import types

    from nasjax.serve.ray_serve import Replica

    replica = types.SimpleNamespace(service=Service({"yolo_nas_s": model}, CONFIG))  # without Ray Serve's constructor
    with pytest.raises(RuntimeError, match="starting"):
        Replica.check_health(replica)
    replica.service.start(background=False)  # compiled already in this process: quick
    Replica.check_health(replica)
    future = next(iter(replica.service.batchers.values())).submit(np.zeros((70, 50, 3), np.uint8),
                                                                      RequestSettings(imgsz=IMGSZ))
    asyncio.run(Replica.__del__(replica))
    assert future.done() and future.result().orig_shape == (70, 50)
    with pytest.raises(RuntimeError, match="not ready"):
        Replica.check_health(replica)


def test_model_sources_and_builder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best.pkl").write_bytes(b"")
    assert model_sources("yolo_nas_s, best.pkl") == {"yolo_nas_s": "yolo_nas_s", "best.pkl": str(tmp_path / "best.pkl")}
    assert model_sources({"main": "yolo_nas_m"}) == {"main": "yolo_nas_m"}
    with pytest.raises(ValueError, match="distinct"):
        model_sources(["a", "a"])
    app = build({"models": "yolo_nas_s", "num_replicas": "2", "imgsz": "64,128", "max_batch": "4", "num_gpus": "1",
                 "pretrained": "false"})
    bound = app._bound_deployment
    assert bound.num_replicas == 2 and bound.max_ongoing_requests == 64  # max_queue, not Ray Serve's 5
    assert bound.ray_actor_options["num_gpus"] == 1
    assert bound.init_args == ({"yolo_nas_s": "yolo_nas_s"}, bound.init_args[1], False, False)
    assert bound.init_args[1].batcher.imgsz == (64, 128) and bound.init_args[1].batcher.max_batch == 4
    with pytest.raises(ValueError, match="unknown keys"):
        build({"models": "yolo_nas_s", "replicas": "2"})
