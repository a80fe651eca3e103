"""benchmarks/accelerator.py stays runnable: a CPU run at a tiny size, both dtypes, both modes, JSON and
table written; and its end-to-end program gives exactly the detections of `Network.detect_batch`, the
call predict makes (the benchmark compiles the same jit_detect ahead of time)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("accelerator_benchmark", REPO / "benchmarks" / "accelerator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_accelerator_benchmark_runs_on_cpu_at_a_tiny_size(tmp_path):
    accelerator = load_benchmark()
    report = accelerator.main(["--variants", "yolo_nas_s", "--dtypes", "float32", "bfloat16", "--batches", "2",
                               "--imgsz", "64", "--seconds", "0.05", "--torch", "off",
                               "--json", str(tmp_path / "a.json"), "--table", str(tmp_path / "a.md")])
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(json.dumps(report))
    measured = {(r["dtype"], r["mode"]): r for r in report["results"]}
    assert set(measured) == {(d, m) for d in ("float32", "bfloat16") for m in ("model", "end_to_end")}
    for record in measured.values():
        assert "error" not in record, record
        assert record["images_per_s"] > 0 and record["compile_s"] > 0 and record["program_mib"] > 1
    assert report["environment"]["platform"] == "cpu" and not report["skipped"]
    table = (tmp_path / "a.md").read_text()
    assert table.count("| nasjax | yolo_nas_s |") == 4

    # The end-to-end program is detect_batch: the same detections for the same uint8 batch.
    bench = accelerator.NasjaxBench("yolo_nas_s", 64)
    call, _, _ = bench.program(2, "float32", "end_to_end")
    ours = call()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    reference = bench.network.detect_batch(pixels)
    for name in ("boxes", "scores", "classes", "count"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(reference, name))


def test_over_budget_measurements_are_listed_as_skipped(tmp_path):
    accelerator = load_benchmark()
    report = accelerator.main(["--variants", "yolo_nas_s", "--dtypes", "float32", "--batches", "1", "--imgsz", "64",
                               "--torch", "off", "--budget-s", "0", "--json", str(tmp_path / "a.json")])
    assert report["results"] == [] and len(report["skipped"]) == 2
    assert "Skipped (over --budget-s): 2" in accelerator.table(report)


def test_video_benchmark_prints_its_table_at_a_tiny_size(tmp_path, capsys):
    """benchmarks/video.py stays runnable: an 8-frame clip at imgsz 64, one compiled batch size; the
    modern-yolonas rows run too when that package and torch import (else they are reported missing)."""
    spec = importlib.util.spec_from_file_location("video_benchmark", REPO / "benchmarks" / "video.py")
    video = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(video)
    report = video.main(["--imgsz", "64", "--frames", "8", "--batch", "1", "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    assert "| row | frames/s | range | vs PyTorch port | vs port fused | vs nasjax image loop |" in out
    assert "| nasjax video, batch 1 |" in out and "| nasjax image loop, per frame |" in out
    assert "| nasjax video + write, batch 1 |" in out
    assert json.loads((tmp_path / "v.json").read_text())["settings"]["frames"] == 8
    assert all(r["frames_per_s"] > 0 for r in report["rows"].values())
    if "torch_unavailable" not in report:
        assert "| modern-yolonas detect_video |" in out and "| modern-yolonas detect_video, fused |" in out


def test_serve_benchmark_prints_its_table_at_a_tiny_size(tmp_path, capsys):
    """benchmarks/serve.py stays runnable: `nasjax serve` in a subprocess at imgsz 64 (batch sizes 1 and
    2 compiled) against offline predict, at concurrency 1 and 8. The modern-yolonas server is left out
    (--torch off): on a CPU its calls at this size cost seconds each, too slow for a smoke test."""
    spec = importlib.util.spec_from_file_location("serve_benchmark", REPO / "benchmarks" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    report = serve.main(["--imgsz", "64", "--images", "2", "--requests", "8", "--concurrency", "1", "8",
                         "--batch", "2", "--torch", "off", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert "| row | req/s | range | p50 ms | p99 ms | errors | vs offline | vs port server |" in out
    assert "| offline predict, batch 2 |" in out
    assert "| nasjax serve, concurrency 1 |" in out and "| nasjax serve, concurrency 8 |" in out
    assert json.loads((tmp_path / "s.json").read_text())["settings"]["requests"] == 8
    for name, row in report["rows"].items():
        assert row["req_per_s"] > 0 and not row["errors"], (name, row)
        assert row["answered"] == 8
