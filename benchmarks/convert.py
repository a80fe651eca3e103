"""Reading whole-model weight files: `converters.read_weight_file` against `torch.load(weights_only=False)`.

    .venv/bin/python benchmarks/convert.py [--variants yolo_nas_s yolo_nas_m yolo_nas_l] [--repeats 3]
        [--files DIR] [--json OUT]

Files: `DIR/<variant>_whole_training.pt`, the pickled super-gradients models that
`tests/reference/make_reference.py --whole-model-dir` writes (DIR defaults to $NASJAX_ORACLE_ARTIFACTS,
else /work/oracle_artifacts); for a variant without one, a file of the same kind is written to a
temporary directory with tests/torch_files.py (stand-in classes, deterministic weights).

Every measurement runs in a fresh Python process, the situation of a program starting up: it imports
what it needs (nasjax's converters; or torch plus stand-in super-gradients classes, which unpickling
the whole model needs), then reads the file once. Three readers: `read_weight_file` (everything: parse,
state dict, metadata, variant/form checks and the file's SHA-256, hashed in a thread alongside),
`torch_pickle.load` (the parse alone, the work torch.load does), and `torch.load`. Reported per reader,
median over `--repeats` processes: seconds for the read (imports excluded), and peak memory added by
the read = ru_maxrss after the read minus ru_maxrss just before it (both high-water marks, so the
import footprint is excluded). The files are read once beforehand so that every reader finds them in
the page cache.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FILES = Path(os.environ.get("NASJAX_ORACLE_ARTIFACTS", "/work/oracle_artifacts"))
VARIANTS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")
TOOLS = ("read_weight_file", "torch_pickle.load", "torch.load")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _child(tool: str, path: str) -> None:
    """In the fresh process: import, then time one read and print JSON."""
    if tool == "read_weight_file":
        from nasjax.converters.weight_file import read_weight_file

        def read():
            return read_weight_file(path)

    elif tool == "torch_pickle.load":
        from nasjax.converters import torch_pickle

        def read():
            return torch_pickle.load(path)

    else:
        sys.path.insert(0, str(REPO / "tests"))
        import torch
        import torch_files

        def read():
            with torch_files.fake_super_gradients():
                return torch.load(path, weights_only=False)

    baseline = _max_rss_bytes()
    started = time.perf_counter()
    result = read()
    seconds = time.perf_counter() - started
    peak = _max_rss_bytes()
    del result
    print(json.dumps({"seconds": seconds, "peak_added": peak - baseline, "baseline": baseline}))


def measure(tool: str, path: Path) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", tool, str(path)], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def whole_model_file(variant: str, files: Path, scratch: Path) -> tuple[Path, str]:
    """(path, origin): the super-gradients file when present, else one written with stand-in classes
    (in a subprocess: on Linux a child inherits its parent's ru_maxrss high-water mark, so this
    process must stay small for the measurements to mean anything)."""
    path = files / f"{variant}_whole_training.pt"
    if path.is_file():
        return path, "super-gradients"
    path = scratch / f"{variant}_whole_training.pt"
    subprocess.run([sys.executable, __file__, "--write", variant, str(path)], cwd=REPO, check=True)
    return path, "stand-in classes"


def _write(variant: str, path: str) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import torch_files
    from conftest import reference_keys
    from nasjax.model.deterministic_weights import deterministic_state_dict

    state_dict = deterministic_state_dict(reference_keys(variant, "training"), 0)
    torch_files.save_whole_model(Path(path), variant, state_dict, "training")


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=Path, default=DEFAULT_FILES)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("TOOL", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    if args.write:
        _write(*args.write)
        return

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for variant in args.variants:
            path, origin = whole_model_file(variant, args.files, Path(scratch))
            warm_page_cache(path)
            runs = {tool: [] for tool in TOOLS}
            for _ in range(args.repeats):
                for tool in TOOLS:  # interleaved, so drifts in machine load hit both alike
                    runs[tool].append(measure(tool, path))
            size = path.stat().st_size
            row = {"variant": variant, "file": str(path), "origin": origin, "file_bytes": size}
            for tool, results in runs.items():
                row[tool] = {
                    "seconds": statistics.median(r["seconds"] for r in results),
                    "peak_added_bytes": statistics.median(r["peak_added"] for r in results),
                    "runs": results,
                }
            rows.append(row)

    mib = 2**20
    header = ("variant", "file MiB", "read_weight_file s", "torch_pickle.load s", "torch.load s",
              "read_weight_file peak MiB", "torch.load peak MiB")  # fmt: skip
    table = [header]
    for row in rows:
        ours, parse, reference = row["read_weight_file"], row["torch_pickle.load"], row["torch.load"]
        size = row["file_bytes"]
        table.append((
            row["variant"],
            f"{size / mib:.1f}",
            f"{ours['seconds']:.3f} ({ours['seconds'] / reference['seconds']:.2f}x torch)",
            f"{parse['seconds']:.3f} ({parse['seconds'] / reference['seconds']:.2f}x torch)",
            f"{reference['seconds']:.3f}",
            f"{ours['peak_added_bytes'] / mib:.1f} ({ours['peak_added_bytes'] / size:.2f}x file)",
            f"{reference['peak_added_bytes'] / mib:.1f} ({reference['peak_added_bytes'] / size:.2f}x file)",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print(" | ".join(cell.rjust(width) for cell, width in zip(line, widths)))
    print(f"median of {args.repeats} fresh processes per tool; files from: {', '.join(sorted({r['origin'] for r in rows}))}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
