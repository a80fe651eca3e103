"""The HTTP detection API (app.py) as a Ray Serve deployment: replicas across the machines of a Ray cluster.

Needs the `ray` extra (Ray 2.60 with Ray Serve) and the `serve` extra (FastAPI).

Why: one `nasjax serve` process uses the devices of one machine. Ray Serve runs N replicas of the same
handler (each in its own actor, on any machine of the cluster, each with the devices Ray reserves for
it) behind one HTTP address, and routes each request to a replica with room for it. A replica is
exactly the plain server's `Service` and `create_app` endpoints (the same routes, the same 4xx JSON
errors, the same dynamic batching), so what a client sees does not depend on how it is deployed.

    from ray import serve
    from nasjax.serve.app import ServeConfig
    from nasjax.serve.batcher import BatcherConfig
    from nasjax.serve.ray_serve import deployment

    app = deployment(["yolo_nas_s", "yolo_nas_m"], config=ServeConfig(batcher=BatcherConfig(max_batch=8)),
                     num_replicas=4, ray_actor_options={"num_gpus": 1})
    serve.start(http_options={"host": "0.0.0.0", "port": 8000})   # Ray Serve's HTTP proxy
    serve.run(app, name="nasjax", route_prefix="/")               # returns once every replica compiled

or, blocking until Ctrl-C, with `ray.init` / RAY_ADDRESS as `nasjax.ray.session()` does (a local cluster,
or the cluster at RAY_ADDRESS=ray://head:10001 whose workers need nasjax installed):

    python -c "from nasjax.serve.ray_serve import run; run(['yolo_nas_s'], num_replicas=2, host='0.0.0.0')"

or with Ray Serve's CLI (`build` below; also for `serve deploy` config files):

    serve run nasjax.serve.ray_serve:build models=yolo_nas_s num_replicas=2 num_gpus=1

Then POST /v1/detect, GET /health, GET /v1/models, /docs on http://HOST:8000 as with `nasjax serve`.

How a replica lives:
- It loads its models with `nasjax.load` (names, or paths that every machine can read: a relative
  path is resolved on the driver, `nasjax.ray.worker_path`) and compiles every batch size at every
  served image size in its constructor. Ray Serve routes nothing to a replica before its constructor
  returns, so no request waits on a compile (serve.run returns when every replica is up).
- Ray Serve's health check (`check_health`, every `health_check_period_s`) fails while the service is
  not ready (its device thread stopped, or compiling failed); Ray Serve then replaces the replica.
  GET /health answers as the plain server does.
- On shutdown (serve.delete / serve.shutdown / a downscale) Ray Serve stops routing to the replica,
  waits for the requests in flight (`graceful_shutdown_timeout_s`), then the replica's batchers answer
  everything they accepted before they stop.

Batching: Ray Serve's own request batching (`@serve.batch`) is not used. Requests are batched inside
each replica by nasjax's `Batcher` (BatcherConfig: max_batch, max_wait_ms, max_queue), which
coalesces only the requests routed to that replica. `max_ongoing_requests` (Ray Serve: requests a
replica holds at once; more wait in Ray Serve's router, which also picks the least loaded replica) is
by default max(max_queue, 2 * max_batch): Ray Serve's own default of 5 would cap a replica's batches
at 5 images. So a replica seldom fills its batcher's queue (the 503 + Retry-After of the plain
server); requests beyond what the replicas hold wait in Ray Serve's router, without bound by default:
pass max_queued_requests=N (a deployment option) for Ray Serve to refuse more with its own 503 (not
nasjax's JSON error body). request_timeout (504) counts from a request's arrival at its replica.

Compilation cache: every replica compiles its models when it starts; with many replicas, or replicas
that restart, give them JAX's persistent compilation cache (docs/scale_out.md#compilation-cache), e.g.
ray_actor_options={"runtime_env": {"env_vars": {"JAX_COMPILATION_CACHE_DIR": "/shared/jax_cache"}}}.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from ray import serve

from nasjax.serve.app import ServeConfig, Service, create_app


@serve.ingress()  # late-bound: the FastAPI app is built per replica, around its own Service
class Replica:
    """One replica: `models` ({served name: nasjax.load source}) loaded and compiled in the constructor,
    served by app.py's endpoints."""

    def __init__(self, models: Mapping[str, str], config: ServeConfig = ServeConfig(), pretrained: bool = True,
                 trusted: bool = False):
        import nasjax

        detectors = {name: nasjax.load(source, pretrained=pretrained, trusted=trusted)
                     for name, source in models.items()}
        self.service = Service(detectors, config)
        self.service.start(background=False)  # compile every batch and image size before taking requests
        if self.service.error is not None:
            raise RuntimeError(f"compiling the models failed: {self.service.error!r}") from self.service.error

    def __serve_build_asgi_app__(self):
        # manage=False: this replica starts and closes the service (Ray Serve runs the app's lifespan,
        # which would start it a second time, in the background).
        return create_app(self.service, manage=False)

    def check_health(self) -> None:
        if not self.service.ready:
            _, body = self.service.health()
            raise RuntimeError(f"nasjax service not ready: {body}")

    async def __del__(self):
        service = getattr(self, "service", None)
        if service is not None:  # answers every accepted request, then stops the device threads
            queued = sum(b.queued for b in service.batchers.values())
            await asyncio.get_running_loop().run_in_executor(None, service.close)
            logging.getLogger("ray.serve").info(f"nasjax: service closed ({queued} queued image(s) answered)")


def model_sources(models: Sequence[str] | Mapping[str, str] | str) -> dict[str, str]:
    """{served name: what each replica passes to nasjax.load}: a name or path (or a list of them, or
    "a,b") is served under the name given; a path is made absolute when it names a file here."""
    from nasjax.ray import worker_path

    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(models, Mapping):
        names = [str(m) for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"models must be distinct, got {names}")
        models = {name: name for name in names}
    if not models:
        raise ValueError("no model to serve")
    return {str(name): worker_path(str(source)) for name, source in models.items()}


def deployment(models: Sequence[str] | Mapping[str, str] | str, *, config: ServeConfig = ServeConfig(),
               pretrained: bool = True, trusted: bool = False, num_replicas: int | str = 1,
               ray_actor_options: dict | None = None, max_ongoing_requests: int | None = None,
               name: str = "nasjax", **deployment_options):
    """The Ray Serve application (a bound deployment for `serve.run`) serving `models` with app.py's
    endpoints on `num_replicas` replicas ("auto" or autoscaling_config=... as Ray Serve takes them).
    models: names / paths for `nasjax.load` (served under those names; the first is the default), or
    {served name: name or path}. pretrained, trusted: as `nasjax.load`. ray_actor_options: what Ray
    reserves for each replica (num_cpus, num_gpus, resources, runtime_env). max_ongoing_requests: see the
    module docstring. deployment_options: any other `serve.deployment` option (health_check_period_s,
    graceful_shutdown_timeout_s, ...)."""
    sources = model_sources(models)
    batcher = config.batcher
    if max_ongoing_requests is None:
        max_ongoing_requests = max(batcher.max_queue, 2 * batcher.max_batch)
    options = dict(name=name, num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
                   **deployment_options)
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options
    return serve.deployment(Replica).options(**options).bind(sources, config, pretrained, trusted)


def run(models: Sequence[str] | Mapping[str, str] | str, *, host: str = "127.0.0.1", port: int = 8000,
        route_prefix: str = "/", announce=print, **options) -> None:
    """Serve `models` (deployment()'s options) through Ray Serve's HTTP proxy on host:port, on the
    cluster at RAY_ADDRESS or a local one (`nasjax.ray.session`), until Ctrl-C; then Ray Serve shuts
    down, each replica answering what it had accepted. (For a deployment that outlives this process on
    a cluster, call `serve.run(deployment(...))` yourself, or `serve run` / `serve deploy` with `build`.)"""
    import time

    from nasjax.ray import session

    app = deployment(models, **options)
    serve_logger = logging.getLogger("ray.serve")
    level = serve_logger.level
    serve_logger.setLevel(logging.WARNING)
    try:
        with session():
            serve.start(http_options={"host": host, "port": port})
            try:
                serve.run(app, name=options.get("name", "nasjax"), route_prefix=route_prefix)
                shown = f"[{host}]" if ":" in host else host
                announce(f"serving {', '.join(model_sources(models))} at http://{shown}:{port}"
                         f"{route_prefix.rstrip('/')} on Ray Serve ({options.get('num_replicas', 1)} replica(s); "
                         "Ctrl-C stops)", flush=True)
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
            finally:
                serve.shutdown()
    finally:
        serve_logger.setLevel(level)


def build(args: dict[str, str]):
    """An application builder for Ray Serve's own CLI and config files:

        serve run nasjax.serve.ray_serve:build models=yolo_nas_s,yolo_nas_m num_replicas=2 imgsz=640 \
            max_batch=8 num_gpus=1

    Keys (all optional but models): models, num_replicas, pretrained, trusted, imgsz (sizes, comma
    separated), max_batch, max_wait_ms, max_queue, preprocess, dtype, request_timeout, max_body_mb,
    num_cpus, num_gpus, max_ongoing_requests."""
    import dataclasses

    from nasjax.serve.batcher import BatcherConfig

    args = dict(args)
    known = {"models", "num_replicas", "pretrained", "trusted", "imgsz", "max_batch", "max_wait_ms", "max_queue",
             "preprocess", "dtype", "request_timeout", "max_body_mb", "num_cpus", "num_gpus", "max_ongoing_requests"}
    unknown = sorted(set(args) - known)
    if unknown or "models" not in args:
        raise ValueError(f"unknown keys {unknown}" if unknown else "models=NAME[,NAME...] is required")

    def flag(key: str, default: bool) -> bool:
        value = str(args.get(key, default)).lower()
        if value not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} must be true or false, got {args[key]!r}")
        return value in ("true", "1")

    batcher = {k: int(args[k]) for k in ("max_batch", "max_queue") if k in args}
    if "max_wait_ms" in args:
        batcher["max_wait_ms"] = float(args["max_wait_ms"])
    if "imgsz" in args:
        batcher["imgsz"] = tuple(int(s) for s in str(args["imgsz"]).split(","))
    for key in ("preprocess", "dtype"):
        if key in args:
            batcher[key] = args[key]
    config = ServeConfig(batcher=BatcherConfig(**batcher))
    if "request_timeout" in args:
        config = dataclasses.replace(config, request_timeout=float(args["request_timeout"]))
    if "max_body_mb" in args:
        config = dataclasses.replace(config, max_body_bytes=int(float(args["max_body_mb"]) * 2**20))
    actor = {k: float(args[k]) for k in ("num_cpus", "num_gpus") if k in args}
    replicas = args.get("num_replicas", 1)
    return deployment(args["models"], config=config, pretrained=flag("pretrained", True), trusted=flag("trusted", False),
                      num_replicas=replicas if replicas == "auto" else int(replicas), ray_actor_options=actor or None,
                      max_ongoing_requests=int(args["max_ongoing_requests"]) if "max_ongoing_requests" in args else None)
