"""Throughput of YOLO-NAS S/M/L on one accelerator: nasjax (jit, float32 and bfloat16) beside PyTorch.

    python benchmarks/accelerator.py                  # a GPU/TPU machine: S/M/L x float32/bfloat16 x batch 1/8/64/256
    python benchmarks/accelerator.py --variants yolo_nas_s --batches 1 --imgsz 64 --seconds 0.2   # a CPU smoke run
    options: --dtypes float32 bfloat16  --torch auto|eager|off  --budget-s 420  --json OUT  --table OUT.md

One process, one device (the first of `jax.local_devices()`; nasjax's own batch splitting over several
devices is not what is measured here). For each (variant, dtype, batch), with deterministic random
weights (`nasjax.build`, fully fused, the inference form):
- model: the jitted forward on images already on the device in the compute dtype → decoded boxes and
  class scores, blocked on. The network alone.
- end_to_end: uint8 images in host memory → device (the transfer is timed) → /255, forward, decoding,
  NMS on the device (super-gradients' settings: conf 0.25, IoU 0.7, top-k 1024, 300 detections,
  multi-label) → the padded detections back in host memory. This is `Network.detect_batch`, the call
  predict and validate make; here compiled ahead of time from the same `jit_detect` with the same
  arguments, so that compile time and memory are measured once (tests/benchmarks_test.py checks that
  its detections equal detect_batch's).
Reported: images/s (batch x calls / seconds, over a timed loop of at least --seconds after two warm-up
calls), compile seconds, device memory of the compiled program (XLA's memory analysis: arguments +
outputs + temporaries) and the device's running peak where the backend reports one.

PyTorch side, on the same device when torch and a PyTorch YOLO-NAS import (the `modern-yolonas` wheel,
pure Python, verified with 0.5.0: `pip install --no-deps modern-yolonas==0.5.0` beside torch; or
super-gradients): the same architecture, random weights, eval mode, QARepVGG blocks
fused, in float16 on a GPU (float32 on a CPU, where half precision is not a fair baseline), eager and
`torch.compile`; model (forward on device tensors) and end_to_end (uint8 host images → device →
/255 → forward → torchvision's batched NMS per image → host), when torchvision imports. Ratios
nasjax / PyTorch are printed side by side, same variant, batch and mode.

--budget-s ends the run cleanly: the configurations run in order of interest (S first, bfloat16
first, the largest batch first; the PyTorch twin right after each nasjax one) and whatever the budget
does not reach is listed as skipped in the JSON and the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

VARIANTS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")
DTYPES = ("float32", "bfloat16")
BATCHES = (1, 8, 64, 256)
MODES = ("model", "end_to_end")


# --- timing -----------------------------------------------------------------------------------------------


def timed_loop(call, seconds: float, warmup: int = 2) -> tuple[int, float]:
    """Run `call()` (which must block until its work is done) `warmup` times, then for at least `seconds`;
    (timed calls, elapsed seconds)."""
    for _ in range(warmup):
        call()
    calls, start = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls, elapsed


# --- nasjax ------------------------------------------------------------------------------------------------


class NasjaxBench:
    """One variant on one device; its compiled programs per (dtype, batch, mode)."""

    def __init__(self, variant: str, imgsz: int):
        import jax
        from jax.sharding import Mesh

        import nasjax

        self.jax = jax
        self.variant, self.imgsz = variant, imgsz
        self.network = nasjax.build(variant, form="full")
        self.device = jax.local_devices()[0]
        self.mesh = Mesh([self.device], ("data",))  # the axis name of nasjax.utils.devices

    def _inputs(self, batch: int, dtype: str, mode: str):
        import jax.numpy as jnp
        import numpy as np
        from jax.sharding import NamedSharding, PartitionSpec

        from nasjax.model import core

        compute = jnp.dtype(dtype)
        variables = core.placed_variables(self.network, self.mesh, compute)
        sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (batch, self.imgsz, self.imgsz, 3), dtype=np.uint8)
        if mode == "model":
            images = self.jax.device_put((pixels / np.float32(255)).astype(compute), sharding)
            return compute, variables, sharding, pixels, images
        return compute, variables, sharding, pixels, None

    def program(self, batch: int, dtype: str, mode: str):
        """(call, compile seconds, compiled program bytes): call() runs one batch and blocks."""
        import numpy as np

        from nasjax.model import core, nms
        from nasjax.model.nms import NMSSettings

        compute, variables, sharding, pixels, images = self._inputs(batch, dtype, mode)
        graphdef = self.network.graphdef
        start = time.perf_counter()
        if mode == "model":
            compiled = core.jit_forward.lower(graphdef, variables, images).compile()
            compile_s = time.perf_counter() - start

            def call():
                out = compiled(variables, images)
                out.boxes.block_until_ready()
                out.scores.block_until_ready()
        else:
            settings = NMSSettings()
            conf, iou = np.float32(settings.conf), nms.iou_compare_threshold(settings.iou)
            placed = self.jax.device_put(pixels, sharding)
            compiled = core.jit_detect.lower(graphdef, variables, placed, conf, iou, **settings.static(),
                                             compute_dtype=compute).compile()
            compile_s = time.perf_counter() - start

            def call():  # what Network.detect_batch does: host uint8 in, host detections out
                batch_on_device = self.jax.device_put(pixels, sharding)
                return self.jax.device_get(compiled(variables, batch_on_device, conf, iou))
        return call, compile_s, program_bytes(compiled)

    def peak_bytes(self) -> int | None:
        stats = self.device.memory_stats() or {}
        return stats.get("peak_bytes_in_use")


def program_bytes(compiled) -> int | None:
    """Device bytes a compiled program needs: arguments + outputs + temporaries - aliased (XLA's analysis)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 — not every backend reports it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


# --- PyTorch -----------------------------------------------------------------------------------------------


def _modern_yolonas_model(variant: str):
    """modern-yolonas's YoloNAS, imported without its package __init__ (which needs torchvision for
    its predict helpers; the network itself does not)."""
    import importlib.util

    spec = importlib.util.find_spec("modern_yolonas")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("modern_yolonas is not installed")
    if "modern_yolonas" not in sys.modules:
        package = types.ModuleType("modern_yolonas")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["modern_yolonas"] = package
    from modern_yolonas.model import YoloNAS

    model = YoloNAS.from_config(variant, num_classes=80).eval()
    for module in model.modules():
        if hasattr(module, "full_fusion"):
            module.full_fusion()
        elif hasattr(module, "fuse_block_residual_branches"):
            module.fuse_block_residual_branches()
    return model, "modern-yolonas"


def _super_gradients_model(variant: str, imgsz: int):
    from super_gradients.training import models

    model = models.get(variant, num_classes=80)
    model.eval()
    model.prep_model_for_conversion(input_size=(1, 3, imgsz, imgsz))
    return model, "super-gradients"


def torch_model(variant: str, imgsz: int):
    """(model, implementation name) or raises ImportError with the reasons."""
    reasons = []
    for make in (lambda: _modern_yolonas_model(variant), lambda: _super_gradients_model(variant, imgsz)):
        try:
            return make()
        except Exception as error:  # noqa: BLE001 — an import or build failure: try the next
            reasons.append(f"{type(error).__name__}: {error}")
    raise ImportError("; ".join(reasons))


class TorchBench:
    def __init__(self, variant: str, imgsz: int):
        import torch

        self.torch = torch
        self.imgsz = imgsz
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        model, self.implementation = torch_model(variant, imgsz)
        self.model = model.eval().to(self.device, self.dtype)
        self.compiled_model = None
        try:
            from torchvision.ops import batched_nms  # noqa: F401

            self.nms = True
        except Exception:  # noqa: BLE001 — absent, or built for another torch (RuntimeError)
            self.nms = False

    def label(self, compiled: bool) -> str:
        precision = "fp16" if self.dtype == self.torch.float16 else "fp32"
        return f"torch {precision} {'compile' if compiled else 'eager'}"

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def program(self, batch: int, mode: str, compiled: bool):
        import numpy as np

        torch = self.torch
        if compiled and self.compiled_model is None:
            self.compiled_model = torch.compile(self.model)
        model = self.compiled_model if compiled else self.model
        pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, self.imgsz, self.imgsz, 3),
                                                                      dtype=np.uint8))
        images = (pixels.to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 255).contiguous()

        def forward(x):
            with torch.inference_mode():
                out = model(x)
            return out[0] if isinstance(out, (tuple, list)) and isinstance(out[0], (tuple, list)) else out

        if mode == "model":
            def call():
                forward(images)
                self._sync()
        else:
            if not self.nms:
                return None
            from torchvision.ops import batched_nms

            def call():
                x = (pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype) / 255)
                boxes, scores = forward(x)
                results = []
                with torch.inference_mode():
                    for b in range(boxes.shape[0]):  # super-gradients' multi-label NMS, per image
                        s = scores[b].float()
                        idx, cls = (s > 0.25).nonzero(as_tuple=True)
                        keep = batched_nms(boxes[b][idx].float(), s[idx, cls], cls, 0.7)[:300]
                        results.append((boxes[b][idx][keep].cpu(), s[idx, cls][keep].cpu(), cls[keep].cpu()))
                self._sync()
                return results

        start = time.perf_counter()
        call()  # the first call compiles (torch.compile) or warms the kernels
        self._sync()
        return call, time.perf_counter() - start

    def peak_bytes(self) -> int | None:
        if self.device.type != "cuda":
            return None
        return int(self.torch.cuda.max_memory_allocated())


# --- the run -----------------------------------------------------------------------------------------------


def plan(variants, dtypes, batches) -> list[tuple[str, str, int]]:
    """(variant, dtype, batch) in order of interest: the listed variant order, bfloat16 first, largest
    batch first."""
    order = sorted(dtypes, key=lambda d: d != "bfloat16")
    return [(v, d, b) for v in variants for d in order for b in sorted(batches, reverse=True)]


def environment() -> dict:
    import jax

    device = jax.local_devices()[0]
    info = {"platform": device.platform, "device": getattr(device, "device_kind", str(device)),
            "devices": jax.local_device_count(), "jax": jax.__version__, "python": platform.python_version(),
            "host": platform.node(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["torch_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = None
    return info


def run(args) -> dict:
    started = time.perf_counter()
    report = {"environment": environment(), "imgsz": args.imgsz, "seconds_per_measurement": args.seconds,
              "results": [], "skipped": [], "torch": None}
    print(json.dumps(report["environment"]))

    def over_budget() -> bool:
        return time.perf_counter() - started > args.budget_s

    benches: dict[str, NasjaxBench] = {}
    torch_benches: dict[str, TorchBench | None] = {}
    for variant, dtype, batch in plan(args.variants, args.dtypes, args.batches):
        for mode in MODES:
            if over_budget():
                report["skipped"].append({"framework": "nasjax", "variant": variant, "dtype": dtype,
                                          "batch": batch, "mode": mode})
                continue
            bench = benches.get(variant) or benches.setdefault(variant, NasjaxBench(variant, args.imgsz))
            record = {"framework": "nasjax", "variant": variant, "dtype": dtype, "batch": batch, "mode": mode}
            try:
                call, compile_s, program = bench.program(batch, dtype, mode)
                calls, elapsed = timed_loop(call, args.seconds)
                record.update(images_per_s=batch * calls / elapsed, compile_s=compile_s, program_mib=_mib(program),
                              peak_mib=_mib(bench.peak_bytes()), ms_per_batch=1000 * elapsed / calls)
            except Exception as error:  # noqa: BLE001 — out of memory at a large batch: recorded, go on
                record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            report["results"].append(record)
            _print(record)
        # The PyTorch twin, once per (variant, batch): its own precision, not the nasjax dtype's.
        if args.torch == "off" or dtype != sorted(args.dtypes, key=lambda d: d != "bfloat16")[0]:
            continue
        if variant not in torch_benches:
            try:
                torch_benches[variant] = TorchBench(variant, args.imgsz)
                report["torch"] = torch_benches[variant].implementation
            except ImportError as error:
                torch_benches[variant] = None
                report["torch_unavailable"] = str(error)[:500]
                print(f"(no PyTorch side: {error})")
        tb = torch_benches[variant]
        if tb is None:
            continue
        for compiled in (False, True) if args.torch == "auto" else (False,):
            for mode in MODES:
                record = {"framework": tb.label(compiled), "variant": variant, "dtype": str(tb.dtype).split(".")[-1],
                          "batch": batch, "mode": mode}
                if over_budget():
                    report["skipped"].append(record)
                    continue
                try:
                    program = tb.program(batch, mode, compiled)
                    if program is None:
                        record["error"] = "no working torchvision (its NMS) beside this torch"
                    else:
                        call, compile_s = program
                        calls, elapsed = timed_loop(call, args.seconds, warmup=1)
                        record.update(images_per_s=batch * calls / elapsed, compile_s=compile_s,
                                      peak_mib=_mib(tb.peak_bytes()), ms_per_batch=1000 * elapsed / calls)
                except Exception as error:  # noqa: BLE001
                    record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                report["results"].append(record)
                _print(record)
    report["ratios"] = ratios(report["results"])
    report["wall_s"] = time.perf_counter() - started
    return report


def _mib(n) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def _print(record: dict) -> None:
    if "error" in record:
        print(f"{record['framework']:<22} {record['variant']:<11} {record['dtype']:<9} b{record['batch']:<4} "
              f"{record['mode']:<11} error: {record['error']}")
        return
    print(f"{record['framework']:<22} {record['variant']:<11} {record['dtype']:<9} b{record['batch']:<4} "
          f"{record['mode']:<11} {record['images_per_s']:10.1f} img/s  compile {record['compile_s']:6.1f} s")
    sys.stdout.flush()


def ratios(results: list[dict]) -> list[dict]:
    """nasjax images/s over the PyTorch side's, for each nasjax dtype and PyTorch flavour, same variant,
    batch and mode."""
    measured = [r for r in results if "images_per_s" in r]
    out = []
    for n in (r for r in measured if r["framework"] == "nasjax"):
        for t in (r for r in measured if r["framework"].startswith("torch")):
            if (t["variant"], t["batch"], t["mode"]) == (n["variant"], n["batch"], n["mode"]):
                out.append({"variant": n["variant"], "batch": n["batch"], "mode": n["mode"], "nasjax": n["dtype"],
                            "torch": t["framework"], "ratio": n["images_per_s"] / t["images_per_s"]})
    return out


def table(report: dict) -> str:
    env = report["environment"]
    lines = [f"Device: {env['device']} ({env['platform']}), jax {env['jax']}, torch {env.get('torch')}, "
             f"input {report['imgsz']}x{report['imgsz']}, PyTorch side: {report.get('torch') or 'none'}", "",
             "| framework | variant | dtype | batch | mode | images/s | ms/batch | compile s | program MiB | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['framework']} | {r['variant']} | {r['dtype']} | {r['batch']} | {r['mode']} | "
                         f"{r['error'][:80]} | | | | |")
            continue
        lines.append(f"| {r['framework']} | {r['variant']} | {r['dtype']} | {r['batch']} | {r['mode']} | "
                     f"{r['images_per_s']:.1f} | {r['ms_per_batch']:.2f} | {r['compile_s']:.1f} | "
                     f"{r.get('program_mib') or ''} | {r.get('peak_mib') or ''} |")
    if report["ratios"]:
        lines += ["", "| variant | batch | mode | nasjax | vs | nasjax / PyTorch |", "|---|---|---|---|---|---|"]
        lines += [f"| {q['variant']} | {q['batch']} | {q['mode']} | {q['nasjax']} | {q['torch']} | {q['ratio']:.2f}x |"
                  for q in report["ratios"]]
    if report["skipped"]:
        lines += ["", f"Skipped (over --budget-s): {len(report['skipped'])} measurements, e.g. "
                  + ", ".join(f"{s['framework']} {s['variant']} {s['dtype']} b{s['batch']} {s['mode']}"
                              for s in report["skipped"][:6])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--torch", choices=("auto", "eager", "off"), default="auto",
                        help="auto: eager and torch.compile when a PyTorch YOLO-NAS imports; eager: no torch.compile")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting measurements after this")
    parser.add_argument("--json", type=Path, default=Path("runs/benchmarks/accelerator.json"))
    parser.add_argument("--table", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    report = run(args)
    text = table(report)
    print("\n" + text)
    for path, content in ((args.json, json.dumps(report, indent=1)), (args.table, text)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(content)
            os.replace(tmp, path)
    return report


if __name__ == "__main__":
    main()
