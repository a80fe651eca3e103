"""Requests per second and latency of `nasjax serve` (HTTP, dynamic batching) beside plain offline
`predict` on the same images and CPUs, and beside the PyTorch port's FastAPI server (the
`modern-yolonas[serve]` package, the same random-weight model).

    python benchmarks/serve.py                          # 64 generated 640x480 JPEGs, YOLO-NAS S, imgsz 640
    python benchmarks/serve.py --requests 96 --repeats 2 --cpus 0,1 --torch both
    python benchmarks/serve.py --requests 96 --torch-requests 16 --warmup 4   # fewer to the slow PyTorch server
    python benchmarks/serve.py --imgsz 64 --images 4 --requests 8 --concurrency 1 8 --batch 2   # a smoke run

The images are generated in memory (a colour gradient with random rectangles and discs, JPEG quality
90, --images of 640x480); nothing is downloaded. Every row gets the same JPEG bytes, in the same order.

Rows (YOLO-NAS S, --imgsz, conf 0.25, IoU 0.7, multi-label, 300 detections, deterministic random
weights: the figures are about the serving paths, not the detections):
- offline predict, batch B: `model.predict(paths, stream=True, batch_size=B)` in this process over the
  JPEG files (the same bytes written to a temporary folder): predict's reading pool decodes them with
  `preprocessing.read_image_file`, the function the server decodes request bodies with, so both do the
  same work per image (decode, resize, pad, device, map boxes back). --requests images (the set
  cycled), images/s, compiled before timing.
- nasjax serve, concurrency C: `python -m nasjax serve model=yolo_nas_s random_weights=true port=0
  imgsz=.. batch=B max_wait_ms=.. max_queue=..` in a subprocess; the client waits for GET /health
  (every batch size compiled), then POSTs --requests images to /v1/detect (multipart field `file`)
  from C concurrent connections (httpx.AsyncClient, each connection sends its next request when the
  previous one is answered): requests/s = answered requests / wall time from the first send to the
  last answer; p50 / p99 = per-request latency as the client sees it (upload, queueing, decode,
  device, JSON). The server's own split (time_ms: decode, queue and device) is noted under the table.
- modern-yolonas server, concurrency C: `modern_yolonas.serve.app.create_app(device="cpu")` under
  uvicorn in a subprocess, its POST /detect with the same multipart field `file`. Its startup hook
  builds a `YoloNASDetector`; the subprocess swaps that class for one returning a detector holding
  nasjax's deterministic weights (benchmarks/video.py `torch_detector`: the very same tensors load
  into it, strict). --torch shipped: its blocks as the package ships them (QARepVGG not fused; the
  headline comparison: the server a user gets); fused: every block `full_fusion()`-ed (the form
  nasjax runs); both; off. Its endpoint runs the detector inside the event loop, one image at a
  time, so concurrency only queues requests.

Same CPUs: this process pins itself to --cpus (default: the CPUs it may use now) before JAX starts;
both servers are its children and inherit the pinning (XLA sizes its thread pool to it; the PyTorch
server calls `torch.set_num_threads(len(cpus))`). THE CLIENT RUNS ON THE SAME CPUs, in this process:
HTTP encoding, the event loop and JSON parsing compete with the servers (and with nothing in the
offline row); on a machine with spare CPUs, pin the client elsewhere with --client-cpus. Both servers
are up for the whole run (the idle one uses no CPU); rows run one after another.

Measured: each server first answers a warm-up round (--warmup requests at the largest concurrency:
torch's first calls, thread pools, connections), then for every repeat: offline, then each server at
each concurrency (interleaved, so that a slow spell of the machine hits every row). req/s is the
median over --repeats (range shown); p50 / p99 are over every request of every repeat. Ratios: req/s
over offline images/s, and over the PyTorch server's req/s at the same concurrency.

Caveats: a 2-core machine is a small budget for a client, an event loop, decode threads and XLA;
the client's share is not negligible at high request rates. On a machine shared with other jobs
(load average above the CPU count) every figure drops, PyTorch's most (its OpenMP threads spin and
wait on one another when they lose their CPU): compare runs only at similar load averages (in the
table's first line). A dynamic batch runs at the smallest compiled size that holds it (powers of
two), so at moderate concurrency batches of 3 or 5 are padded to 4 or 8: the JSON has the server's
own time split per row; the batch sizes formed are not visible over HTTP. A request the server refuses (503 when
its queue is full, 504) is counted as an error, not in req/s; the table says how many. With random
weights many boxes pass conf 0.25 (the heavier NMS case, and long JSON answers). If torchvision's
compiled ops do not load beside this torch, modern-yolonas's batched_nms is replaced by
benchmarks/video.py's numpy version (the table says which).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.util
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 640, 480


# --- images ------------------------------------------------------------------------------------------------


def make_images(count: int, size=(WIDTH, HEIGHT), seed: int = 0) -> list[bytes]:
    """JPEG bytes of a colour gradient with a few random rectangles and discs each."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)
    images = []
    for _ in range(count):
        image = background.copy()
        for _ in range(rng.integers(2, 7)):
            colour = rng.integers(0, 256, 3, dtype=np.uint8)
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            if rng.random() < 0.5:
                image[y:y + int(rng.integers(20, 200)), x:x + int(rng.integers(20, 200))] = colour
            else:
                image[(xx - x) ** 2 + (yy - y) ** 2 < int(rng.integers(10, 90)) ** 2] = colour
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


# --- servers ------------------------------------------------------------------------------------------------


class Server:
    """A server subprocess: started, its URL read from its output, /health awaited, stopped."""

    def __init__(self, name: str, command: list[str], detect_path: str):
        self.name, self.command, self.detect_path = name, command, detect_path
        self.lines: list[str] = []
        self.url: str | None = None
        self._found = threading.Event()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        cwd=str(HERE.parent), start_new_session=True)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            match = re.search(r"http://(\[[^\]]+\]|[^\s:]+):(\d+)", line)
            if match and self.url is None:
                self.url = f"http://{match.group(1)}:{match.group(2)}"
                self._found.set()
        self._found.set()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from now until GET /health is 200; RuntimeError with the output's tail if it dies."""
        import httpx

        start = time.perf_counter()
        deadline = start + timeout
        self._found.wait(timeout)
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                break
            if self.url is not None:
                try:
                    if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                        return time.perf_counter() - start
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        tail = "\n".join(self.lines[-20:])
        raise RuntimeError(f"{self.name} did not become ready (exit code {self.process.poll()}):\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def nasjax_command(args) -> list[str]:
    return [sys.executable, "-m", "nasjax", "serve", "model=yolo_nas_s", "random_weights=true", "host=127.0.0.1",
            "port=0", f"imgsz={args.imgsz}", f"batch={args.batch}", f"max_wait_ms={args.max_wait_ms}",
            f"max_queue={args.max_queue}"] + ([f"workers={args.workers}"] if args.workers else [])


def torch_command(args, fused: bool) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--torch-server-child", "--imgsz", str(args.imgsz),
            "--conf", str(args.conf)] + (["--fused"] if fused else [])


def _load_video_benchmark():
    spec = importlib.util.spec_from_file_location("video_benchmark", HERE / "video.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_server_child(argv) -> None:
    """modern-yolonas's FastAPI app under uvicorn, its detector holding nasjax's deterministic weights."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--torch-server-child", action="store_true")
    parser.add_argument("--imgsz", type=int, required=True)
    parser.add_argument("--conf", type=float, required=True)
    parser.add_argument("--fused", action="store_true")
    args = parser.parse_args(argv)
    import torch
    import uvicorn

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    video = _load_video_benchmark()
    detector, nms = video.torch_detector(args.imgsz, args.conf, args.fused)
    import modern_yolonas.inference.detect as detect_module

    # create_app's startup hook does `from modern_yolonas.inference.detect import YoloNASDetector` and
    # calls it with (model, device, conf_threshold, iou_threshold): hand it the detector built above.
    detect_module.YoloNASDetector = lambda *a, **k: detector
    from modern_yolonas.serve.app import create_app

    app = create_app("yolo_nas_s", device="cpu", conf_threshold=args.conf, iou_threshold=0.7)
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    print(f"modern-yolonas server (fused={args.fused}, NMS: {nms}, torch threads {torch.get_num_threads()}) "
          f"at http://127.0.0.1:{port}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


# --- the client ---------------------------------------------------------------------------------------------


async def _load(url: str, images: list[bytes], concurrency: int, requests: int) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies, errors, server_ms = [], collections.Counter(), []
    indices = iter(range(requests))

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:
        async def worker():
            for i in indices:  # shared: each connection takes the next request when it is free
                files = {"file": (f"image{i % len(images)}.jpg", images[i % len(images)], "image/jpeg")}
                start = time.perf_counter()
                try:
                    response = await client.post(url, files=files)
                except httpx.HTTPError as error:
                    errors[type(error).__name__] += 1
                    continue
                elapsed = time.perf_counter() - start
                if response.status_code != 200:
                    errors[str(response.status_code)] += 1
                    continue
                latencies.append(elapsed)
                timing = response.json().get("time_ms")
                if isinstance(timing, dict):
                    server_ms.append(timing)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    record = {"requests": requests, "answered": len(latencies), "errors": dict(errors), "wall_s": wall,
              "req_per_s": len(latencies) / wall, "latencies_s": latencies}
    if server_ms:
        record["server_ms"] = {k: float(np.mean([t[k] for t in server_ms])) for k in server_ms[0]}
    return record


def load_level(url: str, images: list[bytes], concurrency: int, requests: int) -> dict:
    return asyncio.run(_load(url, images, concurrency, requests))


# --- the run ------------------------------------------------------------------------------------------------


def offline_run(model, paths: list[str], options: dict) -> dict:
    start = time.perf_counter()
    timings: dict = {}
    count = sum(1 for _ in model.predict(paths, stream=True, timings=timings, **options))
    wall = time.perf_counter() - start
    return {"requests": len(paths), "answered": count, "errors": {}, "wall_s": wall, "req_per_s": count / wall,
            "timings": timings}


def summarise(runs: list[dict]) -> dict:
    rates = [r["req_per_s"] for r in runs]
    latencies = [x for r in runs for x in r.get("latencies_s", [])]
    errors = collections.Counter()
    for r in runs:
        errors.update(r["errors"])
    summary = {"req_per_s": statistics.median(rates), "rates": rates, "errors": dict(errors),
               "answered": sum(r["answered"] for r in runs)}
    if latencies:
        summary["p50_ms"] = float(np.percentile(latencies, 50) * 1e3)
        summary["p99_ms"] = float(np.percentile(latencies, 99) * 1e3)
    server = [r["server_ms"] for r in runs if "server_ms" in r]
    if server:
        summary["server_ms"] = {k: float(np.mean([s[k] for s in server])) for k in server[0]}
    if runs and "timings" in runs[-1]:
        summary["timings"] = runs[-1]["timings"]
    return summary


def table(report: dict) -> str:
    s, rows, load = report["settings"], report["rows"], report["machine"]["load_average"]
    offline = rows.get(f"offline predict, batch {s['batch']}", {}).get("req_per_s")
    port = {name.split(", concurrency ")[1]: r["req_per_s"] for name, r in rows.items()
            if name.startswith("modern-yolonas server, concurrency")}
    fused = {name.split(", concurrency ")[1]: r["req_per_s"] for name, r in rows.items()
             if name.startswith("modern-yolonas server fused, concurrency")}
    lines = [(f"{s['images']} JPEGs {s['width']}x{s['height']}, {s['requests']} requests per row "
              f"({s['torch_requests']} per PyTorch-server row), YOLO-NAS S "
              f"(random weights), imgsz {s['imgsz']}, conf {s['conf']}; nasjax serve batch={s['batch']} "
              f"max_wait_ms={s['max_wait_ms']} max_queue={s['max_queue']} workers={s['workers'] or 'default'}; "
              f"{len(s['cpus'])} CPUs {s['cpus']} for every server, offline and the client "
              f"(client CPUs {s['client_cpus']}); median of {s['repeats']}; PyTorch NMS: "
              f"{report.get('torch_nms') or 'n/a'}; load average (1 min) before/after "
              f"{load['before'][0]:.1f}/{load['after'][0]:.1f}"),
             "",
             "| row | req/s | range | p50 ms | p99 ms | errors | vs offline | vs port server | vs port server fused |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ratio(a, b):
        return f"{a / b:.2f}" if b else "n/a"

    for name, r in rows.items():
        level = name.split(", concurrency ")[1] if ", concurrency " in name else None
        rate = r["req_per_s"]
        errors = sum(r["errors"].values())
        p50 = f"{r['p50_ms']:.0f}" if "p50_ms" in r else "-"
        p99 = f"{r['p99_ms']:.0f}" if "p99_ms" in r else "-"
        lines.append(f"| {name} | {rate:.2f} | {min(r['rates']):.2f}-{max(r['rates']):.2f} | {p50} | {p99} | "
                     f"{errors} | {ratio(rate, offline)} | {ratio(rate, port.get(level)) if level else '-'} | "
                     f"{ratio(rate, fused.get(level)) if level else '-'} |")
    if report.get("interrupted"):
        lines += ["", "(interrupted: rows and repeats not measured are missing)"]
    if report.get("torch_unavailable"):
        lines += ["", f"(no PyTorch rows: {report['torch_unavailable']})"]
    notes = []
    for name, r in rows.items():
        if "server_ms" in r:
            t = r["server_ms"]
            notes.append(f"{name}: server time per request (mean) decode {t.get('decode', 0):.1f} ms, queue and device "
                         f"{t.get('queue_and_device', 0):.1f} ms, total {t.get('total', 0):.1f} ms")
        if r.get("timings", {}).get("images"):
            t = r["timings"]
            notes.append(f"{name}: per image, device {1e3 * t['inference'] / t['images']:.1f} ms, reading+"
                         f"pre-processing {1e3 * t['preprocess'] / t['images']:.1f} ms (pool threads, overlapped) "
                         "(last run)")
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def measure(args, model, paths, options, servers, images, cpus, runs) -> None:
    """Every row --repeats times, interleaved; records appended to runs[name]."""
    for repeat in range(args.repeats):  # interleaved, so that a slow spell hits every row
        if args.client_cpus:
            os.sched_setaffinity(0, cpus)
        name = f"offline predict, batch {args.batch}"
        runs[name].append(offline_run(model, paths, options))
        print(f"[{repeat + 1}/{args.repeats}] {name}: {runs[name][-1]['req_per_s']:.2f} images/s", flush=True)
        if args.client_cpus:
            os.sched_setaffinity(0, [int(c) for c in args.client_cpus.split(",")])
        for server_name, server in servers.items():
            for c in args.concurrency:
                name = f"{server_name}, concurrency {c}"
                count = args.requests if server is servers["nasjax serve"] else (args.torch_requests
                                                                                  or args.requests)
                record = load_level(server.url + server.detect_path, images, c, count)
                runs[name].append(record)
                print(f"[{repeat + 1}/{args.repeats}] {name}: {record['req_per_s']:.2f} req/s"
                      + (f", errors {record['errors']}" if record["errors"] else ""), flush=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="generated 640x480 JPEGs (cycled)")
    parser.add_argument("--requests", type=int, default=96, help="requests per row (offline: images)")
    parser.add_argument("--torch-requests", type=int, default=None,
                        help="requests per PyTorch-server row (default --requests; it answers one at a time)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=8, help="offline batch_size and the server's batch=")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="the server's decode threads (workers=)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every row, interleaved; the median")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up requests per server (default: the largest concurrency)")
    parser.add_argument("--cpus", default=None, help="CPUs to pin to, e.g. 0,1 (default: the current affinity)")
    parser.add_argument("--client-cpus", default=None,
                        help="pin the client (this process, after the servers start) elsewhere, e.g. 2,3")
    parser.add_argument("--torch", choices=("shipped", "fused", "both", "off"), default="shipped",
                        help="the modern-yolonas server(s): as the package ships the model, QARepVGG-fused, both")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for /health")
    parser.add_argument("--json", type=Path, default=Path("runs/benchmarks/serve.json"))
    args = parser.parse_args(argv)

    if threading.current_thread() is threading.main_thread():  # SIGTERM (e.g. `timeout`): as Ctrl-C
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.cpus:
        os.sched_setaffinity(0, [int(c) for c in args.cpus.split(",")])  # before JAX starts; children inherit
    cpus = sorted(os.sched_getaffinity(0))
    if args.cpus and "jax" in sys.modules:
        print("(jax was imported before pinning: XLA's thread pool may not match --cpus)")
    images = make_images(args.images)
    report = {"machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
              "settings": {"images": args.images, "width": WIDTH, "height": HEIGHT, "requests": args.requests,
                           "torch_requests": args.torch_requests or args.requests,
                           "concurrency": args.concurrency, "imgsz": args.imgsz, "conf": args.conf,
                           "batch": args.batch, "max_wait_ms": args.max_wait_ms, "max_queue": args.max_queue,
                           "workers": args.workers, "repeats": args.repeats, "cpus": cpus,
                           "client_cpus": args.client_cpus or "the same"},
              "rows": {}}
    servers: dict[str, Server] = {}
    try:
        # Both servers compile / load while this process compiles the offline model.
        servers["nasjax serve"] = Server("nasjax serve", nasjax_command(args), "/v1/detect")
        torch_variants = {"shipped": [False], "fused": [True], "both": [False, True], "off": []}[args.torch]
        for fused in torch_variants:
            name = "modern-yolonas server" + (" fused" if fused else "")
            servers[name] = Server(name, torch_command(args, fused), "/detect")

        import nasjax

        options = {"imgsz": args.imgsz, "conf": args.conf, "batch_size": args.batch, "progress": False}
        with tempfile.TemporaryDirectory(prefix="nasjax-serve-bench-") as folder:
            files = []
            for k, data in enumerate(images):
                files.append(str(Path(folder) / f"image{k:05d}.jpg"))
                Path(files[-1]).write_bytes(data)
            paths = [files[i % len(files)] for i in range(args.requests)]
            model = nasjax.load("yolo_nas_s", pretrained=False)
            start = time.perf_counter()
            offline_run(model, paths[: args.batch], options)  # compiles batch_size
            print(f"warm-up offline predict: {time.perf_counter() - start:.1f} s", flush=True)

            for name, server in list(servers.items()):
                try:
                    print(f"{name}: ready after {server.wait_ready(args.ready_timeout):.1f} s more ({server.url})",
                          flush=True)
                except RuntimeError as error:
                    if name == "nasjax serve":
                        raise
                    report["torch_unavailable"] = str(error)[-600:]
                    print(f"(no {name} rows: {error})", flush=True)
                    server.stop()
                    del servers[name]
            torch_line = next((line for s in servers.values() if s.name.startswith("modern") for line in s.lines
                               if "NMS:" in line), None)
            if torch_line:
                report["torch_nms"] = torch_line.split("NMS: ")[1].split(", torch threads")[0]
            if args.client_cpus:
                os.sched_setaffinity(0, [int(c) for c in args.client_cpus.split(",")])
            for name, server in servers.items():
                warm = args.warmup or max(args.concurrency)
                start = time.perf_counter()
                record = load_level(server.url + server.detect_path, images, max(args.concurrency), warm)
                if record["errors"]:
                    raise RuntimeError(f"{name} failed warm-up requests: {record['errors']}; "
                                       + "\n".join(server.lines[-10:]))
                print(f"warm-up {name}: {warm} requests, {time.perf_counter() - start:.1f} s", flush=True)

            runs: dict[str, list[dict]] = collections.defaultdict(list)
            load_before = os.getloadavg()
            try:
                measure(args, model, paths, options, servers, images, cpus, runs)
            except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the table of what was measured
                report["interrupted"] = True
                print("(interrupted: the table has the rows measured so far)", flush=True)
            report["machine"]["load_average"] = {"before": load_before, "after": os.getloadavg()}
            report["rows"] = {name: summarise(r) for name, r in runs.items()}
    finally:
        for server in servers.values():
            server.stop()
    return _load_video_benchmark().publish(report, table(report), args.json)


if __name__ == "__main__":
    if "--torch-server-child" in sys.argv[1:]:
        _torch_server_child(sys.argv[1:])
    else:
        main()
