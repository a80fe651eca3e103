"""Fuzzing of the weight-file reader: random corruptions of small valid files (byte flips, truncations,
and damage to zip members: central directory, local headers, storages, data.pkl, compressed data).
Every case must parse or fail with the reader's own `WeightFileError` / `UnsafeFileError`: any
other exception, a case slower than `CASE_SECONDS`, or one that raises the process's peak memory by
more than `CASE_MEMORY_MIB` is a failure.

The pytest test in hostile_files_test.py runs a small default (NASJAX_FUZZ_CASES, NASJAX_FUZZ_SEED);
long runs use this script, in chunks of seeds:

    nice .venv/bin/python tests/converters/fuzz_weight_files.py --cases 10000 --seed 1

which prints the counts per mutation and outcome as one JSON line and exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import collections
import faulthandler
import io
import json
import resource
import signal
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # run as a script: the tests' helpers and the repository
    sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from nasjax.converters import torch_pickle
from nasjax.converters.weight_file import (
    UnsafeFileError,
    WeightFileError,
    read_weight_file,
)

# A case using more CPU time than this is a failure; real small files take milliseconds. CPU time, not
# wall time, so that a machine busy with other work does not fail cases (the alarm below still ends a
# case that hangs, in wall time).
CASE_SECONDS = 5
HANG_SECONDS = 60  # the alarm that ends a hung case
CASE_MEMORY_MIB = 256  # the most one case may raise the process's peak resident memory
# How often each target is picked: the whole model is the most structure-rich and the slowest to read.
TARGET_WEIGHTS = {"state_dict": 3, "views": 2, "whole_model": 2, "checkpoint": 2, "bare_pickle": 2, "safetensors": 1,
                  "deflated": 2}  # fmt: skip


class CaseTimeout(BaseException):
    """Raised by the alarm inside a case that runs too long (BaseException: no `except Exception` in
    the reader may swallow it)."""


def _on_alarm(signum, frame):
    raise CaseTimeout


# ---------------------------------------------------------------------------------------------
# Valid files


def write_targets(directory: Path) -> dict[str, bytes]:
    """Valid files: a small state dict (odd dtypes), views, a whole S model with one-element tensors, a
    checkpoint, a bare pickle of containers, a safetensors file, and a deflated (re-packed) archive."""
    import torch
    import torch_files
    from conftest import reference_keys

    from nasjax.model.deterministic_weights import deterministic_state_dict

    small = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.array(7, np.int64), "h": np.ones(5, np.float16)}
    torch.save({"base": torch.arange(10.0), "view": torch.arange(10.0)[2:8:2]}, directory / "views.pt")
    tiny = torch_files.tiny_state_dict(deterministic_state_dict(reference_keys("yolo_nas_s", "training"), 0))
    paths = {
        "state_dict": torch_files.save_state_dict(directory / "small.pt", small),
        "views": directory / "views.pt",
        "whole_model": torch_files.save_whole_model(directory / "whole.pt", "yolo_nas_s", tiny, "training"),
        "checkpoint": torch_files.save_checkpoint(directory / "ckpt.pth", small, ema_net=small),
        "bare_pickle": torch_files.save_plain_pickle(directory / "plain.pkl"),
        "safetensors": torch_files.save_safetensors(directory / "small.safetensors", small),
    }
    targets = {name: path.read_bytes() for name, path in paths.items()}
    targets["deflated"] = _rezip(_members(targets["state_dict"]), zipfile.ZIP_DEFLATED)
    return targets


# ---------------------------------------------------------------------------------------------
# Mutations


def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def _rezip(members: list[tuple[zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicated members are one of the corruptions
        for info, data in members:
            zf.writestr(info.filename, data)
    return out.getvalue()


def _flip(rng, data: bytes, start: int = 0, end: int | None = None) -> bytes:
    out = bytearray(data)
    end = len(out) if end is None else end
    for _ in range(int(rng.integers(1, 9))):
        position = int(rng.integers(start, max(start + 1, end)))
        if position < len(out):
            out[position] ^= int(rng.integers(1, 256))
    return bytes(out)


def _edit_pickle(rng, data: bytes) -> bytes:
    """Flip, delete, duplicate or insert bytes inside the pickle."""
    choice = rng.integers(4)
    position = int(rng.integers(0, len(data)))
    length = int(rng.integers(1, 16))
    if choice == 0:
        return _flip(rng, data)
    if choice == 1:
        return data[:position] + data[position + length:]
    if choice == 2:
        return data[:position] + data[position:position + length] * 2 + data[position + length:]
    return data[:position] + bytes(rng.integers(0, 256, length, dtype=np.uint8)) + data[position:]


def _regions(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges of a zip: local headers, member data (storages, data.pkl), the central directory."""
    regions: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        directory_start = zf.start_dir
    for info in infos:
        name_length, extra_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
            int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
        body = info.header_offset + 30 + name_length + extra_length
        regions["local_header"].append((info.header_offset, body))
        kind = "pickle_bytes" if info.filename.endswith("data.pkl") else "storage_bytes" if "/data/" in info.filename else "other_member"
        regions[kind].append((body, body + info.compress_size))
        regions["member_boundary"].append((info.header_offset, info.header_offset + 1))
    regions["central_directory"].append((directory_start, len(data)))
    return regions


def mutate(rng, data: bytes) -> tuple[str, bytes]:
    """One random corruption of a file: (kind, bytes)."""
    is_zip = data[:4] == b"PK\x03\x04"
    kinds = ["flip", "truncate", "append", "flip_tail"]
    if is_zip:
        kinds += ["pickle", "pickle", "member", "member_size", "local_header", "central_directory", "storage_bytes",
                  "pickle_bytes", "member_boundary"]  # fmt: skip
    else:
        kinds += ["pickle"]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "flip":
        return kind, _flip(rng, data)
    if kind == "truncate":
        return kind, data[: int(rng.integers(0, len(data)))]
    if kind == "append":
        return kind, data + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    if kind == "flip_tail":  # zip central directory and end record, or a pickle's last opcodes
        return kind, _flip(rng, data, start=max(0, len(data) - 4096))
    if not is_zip:
        return kind, _edit_pickle(rng, data)
    if kind in ("local_header", "central_directory", "storage_bytes", "pickle_bytes", "member_boundary"):
        # Raw damage in place: the zip's own checks (signatures, sizes, CRC-32) must catch it.
        ranges = _regions(data).get(kind) or [(0, len(data))]
        start, end = ranges[int(rng.integers(len(ranges)))]
        if kind == "member_boundary":  # truncate at (or a few bytes around) a member's start
            return kind, data[: max(0, start + int(rng.integers(-8, 40)))]
        return kind, _flip(rng, data, start, max(start + 1, end))
    members = _members(data)
    compression = zipfile.ZIP_DEFLATED if members and members[0][0].compress_type == zipfile.ZIP_DEFLATED else zipfile.ZIP_STORED
    if kind == "pickle":  # corrupt data.pkl but keep the zip (and its CRC) valid
        members = [(i, _edit_pickle(rng, d) if i.filename.endswith("data.pkl") else d) for i, d in members]
    elif kind == "member":  # drop, duplicate or garble a member
        index = int(rng.integers(len(members)))
        action = rng.integers(3)
        if action == 0:
            members.pop(index)
        elif action == 1:
            members.insert(index, members[index])
        else:
            info, member = members[index]
            members[index] = (info, bytes(rng.integers(0, 256, len(member) or 1, dtype=np.uint8)))
    else:  # member_size: a storage one element short or long
        storages = [k for k, (i, _) in enumerate(members) if "/data/" in i.filename]
        if storages:
            index = storages[int(rng.integers(len(storages)))]
            info, member = members[index]
            members[index] = (info, member[:-1] if rng.integers(2) else member + b"\x00")
    return kind, _rezip(members, compression)


# ---------------------------------------------------------------------------------------------
# The run


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(targets: dict[str, bytes], cases: int, seed: int, directory: Path) -> tuple[collections.Counter, list[str]]:
    """(outcome counts, failures). Outcome keys: 'stage: outcome' and 'kind/outcome'."""
    rng = np.random.default_rng(seed)
    names = [n for n in TARGET_WEIGHTS if n in targets]
    weights = np.array([TARGET_WEIGHTS[n] for n in names], dtype=float)
    outcomes: collections.Counter = collections.Counter()
    failures: list[str] = []
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    # Hard backstop for a hang inside C code, where the alarm's Python handler cannot run.
    faulthandler.dump_traceback_later(HANG_SECONDS * 3, exit=True)
    # Warm up (the first successful read imports the model's tensor listing) before measuring memory.
    for target in names:
        path = directory / ("warm.safetensors" if target == "safetensors" else "warm.pt")
        path.write_bytes(targets[target])
        try:
            read_weight_file(path)
        except WeightFileError:
            pass
    baseline = _peak_mib()
    try:
        for case in range(cases):
            target = names[int(rng.choice(len(names), p=weights / weights.sum()))]
            kind, data = mutate(rng, targets[target])
            path = directory / ("case.safetensors" if target == "safetensors" else "case.pt")
            path.write_bytes(data)
            label = f"case {case} (seed {seed}, {target}/{kind})"
            start = time.process_time()
            signal.alarm(HANG_SECONDS)
            final = "?"
            try:
                # Two stages: the bare unpickling, then the whole reader (formats, YOLO-NAS checks).
                for stage, read in (("load", torch_pickle.load), ("read_weight_file", read_weight_file)):
                    if stage == "load" and target == "safetensors":
                        continue
                    try:
                        read(path)
                        final = "ok"
                    except UnsafeFileError:
                        final = "UnsafeFileError"
                    except WeightFileError:
                        final = "WeightFileError"
                    outcomes[f"{stage}: {final}"] += 1
                outcomes[f"{kind}/{final}"] += 1
            except CaseTimeout:
                failures.append(f"{label}: no result after {HANG_SECONDS} s")
            except BaseException as error:
                if isinstance(error, KeyboardInterrupt):
                    raise
                failures.append(f"{label}: {type(error).__name__}: {str(error)[:300]}")
            finally:
                signal.alarm(0)
            seconds = time.process_time() - start
            if seconds > CASE_SECONDS:
                failures.append(f"{label}: used {seconds:.1f} s of CPU (limit {CASE_SECONDS} s)")
            if _peak_mib() - baseline > CASE_MEMORY_MIB:
                failures.append(f"{label}: raised peak memory to {_peak_mib():.0f} MiB (baseline {baseline:.0f} MiB)")
                baseline = _peak_mib()  # report each further jump separately
            faulthandler.dump_traceback_later(HANG_SECONDS * 3, exit=True)
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)
    return outcomes, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nasjax-fuzz-") as tmp:
        directory = Path(tmp)
        targets = write_targets(directory)
        start = time.monotonic()
        outcomes, failures = run(targets, args.cases, args.seed, directory)
    report = {"cases": args.cases, "seed": args.seed, "seconds": round(time.monotonic() - start, 1),
              "failures": len(failures), "peak_rss_mib": round(_peak_mib()), "outcomes": dict(sorted(outcomes.items()))}
    print(json.dumps(report))
    for failure in failures[:50]:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
