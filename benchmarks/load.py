"""First load (read + convert + fuse + cache) versus later loads (orbax restore) of `nasjax.load`.

    .venv/bin/python benchmarks/load.py [--variants yolo_nas_s yolo_nas_m yolo_nas_l] [--repeats 3] [--json OUT]

For each variant a training-form state dict of deterministic weights (seed 0) is written with
`torch.save` straight into the download cache of a temporary NASJAX_HOME, as a file the user copied
in by hand would be, and the registry entry is pointed at it (its SHA-256, no URLs), so no network is
involved. Each load runs in a fresh Python process, the situation of a user starting a program: the
first one converts and writes the orbax checkpoint, the following `--repeats` ones restore it.
Reported: seconds inside `nasjax.load` (imports excluded; median of the repeats for later loads),
the sizes of the source file and of the checkpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _child(variant: str, sha256: str) -> None:
    """Runs in the fresh process: point the registry at the cached file, time one load, print JSON."""
    import dataclasses

    import nasjax
    from nasjax.weights import registry

    name = registry.get_entry(variant).name
    registry._ENTRIES[name] = dataclasses.replace(registry.get_entry(name), urls=(), sha256=sha256)
    started = time.perf_counter()
    detector = nasjax.load(variant)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "form": detector.form}))


def _timed_load(variant: str, sha256: str, home: Path) -> float:
    env = {**os.environ, "NASJAX_HOME": str(home), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, __file__, "--child", variant, sha256], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode:
        raise RuntimeError(f"load of {variant} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]


def _write_source(variant: str, home: Path) -> tuple[str, int]:
    import torch

    from nasjax.model.state_dict import reference_key_shapes
    from nasjax.model.deterministic_weights import deterministic_state_dict
    from nasjax.weights import registry

    path = home / "downloads" / registry.get_entry(variant).filename
    path.parent.mkdir(parents=True)
    state_dict = deterministic_state_dict(reference_key_shapes(variant, "training"), 0)
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["yolo_nas_s", "yolo_nas_m", "yolo_nas_l"])
    parser.add_argument("--repeats", type=int, default=3, help="later loads to time (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "SHA256"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    rows = []
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            sha256, source_bytes = _write_source(variant, home)
            first = _timed_load(variant, sha256, home)
            later = [_timed_load(variant, sha256, home) for _ in range(args.repeats)]
            (checkpoint_dir,) = (home / "converted").iterdir()
            rows.append({
                "variant": variant,
                "source_mib": source_bytes / 2**20,
                "checkpoint_mib": _tree_size(checkpoint_dir) / 2**20,
                "first_s": first,
                "later_s": statistics.median(later),
                "later_all_s": later,
            })  # fmt: skip

    header = ("variant", "source MiB", "ckpt MiB", "first load s", "later load s", "speed-up")
    print(f"{header[0]:<12} {header[1]:>10} {header[2]:>9} {header[3]:>13} {header[4]:>13} {header[5]:>9}")
    for r in rows:
        print(
            f"{r['variant']:<12} {r['source_mib']:>10.1f} {r['checkpoint_mib']:>9.1f} {r['first_s']:>13.2f} "
            f"{r['later_s']:>13.2f} {r['first_s'] / r['later_s']:>8.1f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
