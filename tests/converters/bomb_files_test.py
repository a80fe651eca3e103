"""Weight files that ask for gigabytes or hours from a few kilobytes or megabytes on disk (issue 12):
each must end in the reader's own error, naming the file and the problem, within bounded memory and
a few seconds. The files are generated here, small on disk (deflate, or a pickle that repeats a cheap
opcode), and read in a child process under an address-space limit and a timeout (`tests/hostile.py`),
so that a regression kills the child, not the test run. The child imports only `nasjax.converters`,
which needs neither jax nor torch.

Also: CRC-32 of stored members, and what a FIFO or a symlink loop given as a weight file is called.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_files
from conftest import reference_keys
from hostile import run_bounded
from nasjax.converters import limits, torch_pickle
from nasjax.converters.weight_file import (
    WeightFileError,
    read_weight_file,
)

# What the child may use beyond the interpreter (numpy and the reader: ~150 MiB of address space).
CHILD_MEMORY_MIB = 1024
CHILD_TIMEOUT_S = 30
# A refused bomb costs at most this much resident memory, and this much time, in the child.
REFUSED_PEAK_MIB = 400
REFUSED_SECONDS = 5


# ---------------------------------------------------------------------------------------------
# Pickle opcodes


def glob(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def long1(value: int) -> bytes:
    data = pickle.encode_long(value)
    return b"\x8a" + bytes([len(data)]) + data


def put(index: int) -> bytes:
    return b"q" + bytes([index])


def get(index: int) -> bytes:
    return b"h" + bytes([index])


NAMESPACE = glob("argparse", "Namespace") + b")\x81"  # an allowed stand-in object (NEWOBJ)
SIXTEEN_GB = 16 * 10**9


# ---------------------------------------------------------------------------------------------
# The bombs: name -> bytes of data.pkl (each is tried inside a torch-style zip)


def bytearray_call() -> bytes:
    """bytearray(16e9) through REDUCE: 30 bytes."""
    return b"\x80\x02" + glob("builtins", "bytearray") + long1(SIXTEEN_GB) + b"\x85R."


def bytearray_planted_setstate() -> bytes:
    """BUILD plants `__setstate__ = bytearray` on a stand-in; the next BUILD calls bytearray(16e9)."""
    return (b"\x80\x02" + NAMESPACE + b"}" + text("__setstate__") + glob("builtins", "bytearray") + b"sb"
            + long1(SIXTEEN_GB) + b"b.")  # fmt: skip


def bytearray_planted_append() -> bytes:
    """BUILD plants `append = bytearray`; APPEND then calls it with 16e9."""
    return b"\x80\x02" + NAMESPACE + b"}" + text("append") + glob("builtins", "bytearray") + b"sb" + long1(SIXTEEN_GB) + b"a."


def bytearray8() -> bytes:
    """Protocol 5's BYTEARRAY8 declaring 16 GB (the C unpickler allocates before reading): 11 bytes."""
    return b"\x80\x05\x96" + struct.pack("<Q", SIXTEEN_GB) + b"."


def list_copies() -> bytes:
    """A list of a million Nones, then list(that list) 4,000 times (6 bytes each): 32 GB of pointers."""
    items = 1_000_000
    big = b"(N" + b"2" * (items - 1) + b"l" + put(0)
    return b"\x80\x02" + big + glob("builtins", "list") + put(1) + b"(" + (get(1) + get(0) + b"\x85R") * 4000 + b"l."


def build_state_copies() -> bytes:
    """A dict of 300,000 entries given as BUILD state to 2,000 fresh stand-ins (7 bytes each)."""
    entries = b"".join(b"J" + struct.pack("<i", i) + b"N" for i in range(300_000))
    state = b"}(" + entries + b"u" + put(0)
    stand_in = glob("argparse", "Namespace") + put(1)
    return b"\x80\x02" + state + stand_in + b"0(" + (get(1) + b")\x81" + get(0) + b"b") * 2000 + b"l."


def tuple_key_laughs() -> bytes:
    """{T: None} where T = (T', T'), 100 levels deep: hashing T visits 2**100 tuples."""
    levels = b"".join(get(0) + get(0) + b"\x86" + put(0) for _ in range(100))
    return b"\x80\x02N\x85" + put(0) + levels + b"}" + get(0) + b"Ns."


def version_string_laughs() -> bytes:
    """TorchVersion(L) where L = [L', L'], 60 levels: str(L) is an exabyte-long repr."""
    levels = b"".join(b"(" + get(0) + get(0) + b"l" + put(0) for _ in range(60))
    return b"\x80\x02]" + put(0) + levels + glob("torch.torch_version", "TorchVersion") + get(0) + b"\x85R."


def processing_laughs() -> bytes:
    """A whole model whose image processor lists a million steps, each a dict of shared dicts 40 deep:
    turning it into metadata visits budget x steps nodes unless one budget covers all steps."""
    shared = b"}" + put(0) + b"".join(b"}(" + text("a") + get(0) + text("b") + get(0) + b"u" + put(0) for _ in range(40))
    step = glob("super_gradients.training.processing.processing", "Step") + b")\x81}" + text("p") + get(0) + b"sb" + put(1)
    processor = (glob("super_gradients.training.processing.processing", "ComposeProcessing") + b")\x81}" + text("processings")
                 + b"(" + get(1) * 1_000_000 + b"l" + b"sb" + put(2))  # fmt: skip
    model = (glob("super_gradients.training.models.detection_models.yolo_nas.yolo_nas_variants", "YoloNAS_S") + b")\x81}("
             + text("_modules") + b"}" + text("_image_processor") + get(2) + b"ub")  # fmt: skip
    return b"\x80\x02" + shared + step + processor + b"0" + model + b"."


def opcode_flood() -> bytes:
    """Five million DUPs: 5 MB that the unpickler would turn into 40 MB of pointers and seconds."""
    return b"\x80\x02(N" + b"2" * 5_000_000 + b"l."


PICKLE_BOMBS = {
    "bytearray(16e9)": (bytearray_call, "bytearray is only built from bytes"),
    # BUILD calls StandIn's own __setstate__, never one planted on the instance: a harmless Namespace.
    "BUILD __setstate__=bytearray": (bytearray_planted_setstate, "holds a pickled argparse.Namespace object"),
    "APPEND via planted append": (bytearray_planted_append, "appends to a Namespace"),
    "BYTEARRAY8 16 GB": (bytearray8, "BYTEARRAY8 object of 16,000,000,000 bytes"),
    "list() copies": (list_copies, "copies more than 4,000,000 items"),
    "BUILD state copies": (build_state_copies, "copies more than 4,000,000 items"),
    "tuple-key billion laughs": (tuple_key_laughs, "uses a tuple .* as a dict key"),
    "TorchVersion of shared lists": (version_string_laughs, "TorchVersion is built from a list"),
    "opcode flood": (opcode_flood, "runs more than 4,000,000 opcodes"),
}


def _child(path: Path, read: str = "read_weight_file") -> str:
    """Code for the bounded child: read `path`, print one JSON line with the outcome."""
    return f"""
import json, sys, time
from nasjax.converters import torch_pickle, weight_file
start = time.monotonic()
try:
    if {read!r} == "interpret":
        weight_file._interpret_pickle(torch_pickle.load({str(path)!r}), {str(path)!r})
    else:
        getattr(weight_file, {read!r}, getattr(torch_pickle, {read!r}, None))({str(path)!r})
    outcome, message = "loaded", ""
except weight_file.WeightFileError as error:
    outcome, message = type(error).__name__, str(error)
print(json.dumps({{"outcome": outcome, "message": message, "seconds": time.monotonic() - start,
                  "jax": "jax" in sys.modules, "torch": "torch" in sys.modules}}))
"""


def read_bounded(path: Path, read: str = "read_weight_file") -> dict:
    child = run_bounded(_child(path, read), memory_mib=CHILD_MEMORY_MIB, timeout_s=CHILD_TIMEOUT_S,
                        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert not child.timed_out, f"{path.name}: no result after {CHILD_TIMEOUT_S} s"
    assert child.returncode == 0, f"{path.name}: child failed ({child.returncode}): {child.stderr[-2000:]}"
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["peak_mib"] = child.peak_rss_mib
    return result


def assert_refused(result: dict, path: Path, pattern: str) -> None:
    import re

    assert result["outcome"] in ("WeightFileError", "UnsafeFileError"), result
    assert str(path) in result["message"] and re.search(pattern, result["message"]), result["message"]
    assert "MemoryError" not in result["message"], result["message"]
    assert result["seconds"] < REFUSED_SECONDS and result["peak_mib"] < REFUSED_PEAK_MIB, result
    assert not result["jax"] and not result["torch"], "the reader pulled in jax or torch"


@pytest.mark.parametrize("bomb", list(PICKLE_BOMBS))
def test_pickle_bombs_are_refused_within_bounds(tmp_path, bomb):
    make, pattern = PICKLE_BOMBS[bomb]
    path = torch_files.write_torch_zip(tmp_path / "bomb.pt", make())
    assert path.stat().st_size < 8 << 20
    assert_refused(read_bounded(path), path, pattern)


def test_shared_references_in_metadata_stay_bounded(tmp_path):
    """A billion-laughs image processor: the metadata walk shares one budget across all steps."""
    path = torch_files.write_torch_zip(tmp_path / "laughs.pt", processing_laughs())
    result = read_bounded(path, "interpret")
    assert result["outcome"] == "loaded", result  # a model without tensors, its metadata walked without a hang
    assert result["seconds"] < REFUSED_SECONDS and result["peak_mib"] < REFUSED_PEAK_MIB, result


# ---------------------------------------------------------------------------------------------
# Decompression bombs: deflated members declaring a gigabyte


def _deflated_zip(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    """A torch-style zip whose members are `head` followed by `zeros` zero bytes, deflated (a few MB on
    disk per GiB)."""
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, (head, zeros) in members.items():
            with zf.open(name, "w", force_zip64=True) as member:
                member.write(head)
                for start in range(0, zeros, len(chunk)):
                    member.write(chunk[:zeros - start])
        zf.writestr("archive/byteorder", "little")
    return path


def _tensor_pickle(numel: int) -> bytes:
    """`_rebuild_tensor_v2` of storage '0' with `numel` float32 elements, the whole storage."""
    pid = b"(" + text("storage") + glob("torch", "FloatStorage") + text("0") + text("cpu") + long1(numel) + b"tQ"
    return (b"\x80\x02" + glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"K\x00(" + long1(numel) + b"t(K\x01t"
            + b"\x89" + glob("collections", "OrderedDict") + b")Rt" + b"R.")  # fmt: skip


def test_gigabyte_deflated_data_pkl_is_refused_before_decompression(tmp_path):
    """1 GiB of pickle (one BINUNICODE8 string) deflated to ~5 MB: exactly the former limit."""
    head = b"\x80\x04\x8d" + struct.pack("<Q", (1 << 30) - 12)
    path = _deflated_zip(tmp_path / "pkl_bomb.pt", {"archive/data.pkl": (head, (1 << 30) - len(head))})
    assert path.stat().st_size < 8 << 20
    assert_refused(read_bounded(path), path, r"data\.pkl declares 1,073,741,824 bytes; the reader accepts pickles of up to 64 MiB")


def test_gigabyte_deflated_storage_is_refused_before_decompression(tmp_path):
    """A storage of 1 GiB of float32 zeros deflated to ~5 MB: refused from the pickle's storage record and
    the file's size, before a byte is inflated."""
    numel = (1 << 30) // 4
    path = _deflated_zip(tmp_path / "storage_bomb.pt", {"archive/data.pkl": (_tensor_pickle(numel), 0),
                                                         "archive/data/0": (b"", numel * 4)})
    assert path.stat().st_size < 8 << 20
    assert_refused(read_bounded(path), path, r"tensor storages add up to more than the file's .* plus 512 MiB")


def test_too_many_zip_members_are_refused_before_parsing(tmp_path, monkeypatch):
    """The count comes from the end-of-archive record (a real bomb would need 200,000 members; the
    limit is lowered here to keep the file small)."""
    monkeypatch.setattr(torch_pickle, "MAX_ZIP_MEMBERS", 2)
    path = torch_files.write_torch_zip(tmp_path / "members.pt", b"\x80\x02N.")
    with pytest.raises(WeightFileError, match="its zip directory lists 3 members, more than the reader's limit"):
        torch_pickle.load(path)


def test_limits_on_lengths_are_checked_before_reading(tmp_path):
    """A string or an integer declaring more than its bound is refused from its length field."""
    cases = {
        "string": b"\x80\x04\x8d" + struct.pack("<Q", limits.MAX_STRING_BYTES + 1) + b"x.",
        "bytes": b"\x80\x04\x8e" + struct.pack("<Q", 5 << 30) + b"x.",
        "integer": b"\x80\x02\x8b" + struct.pack("<i", 1 << 30) + b"\x01.",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        with pytest.raises(WeightFileError, match="beyond the reader's limit") as info:
            torch_pickle.load(path)
        assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# A whole model declaring 10 million classes with broadcast (stride-0) tensors


def _broadcast_whole_model(path: Path, num_classes: int) -> Path:
    """`torch.save` of a YOLO-NAS S module tree (the stand-in classes of torch_files) whose every
    tensor is one element expanded to its full shape, with `num_classes` classes: a few hundred KB."""
    keys = reference_keys("yolo_nas_s", "training")
    shapes = {k: ((num_classes,) + tuple(s[1:]) if ".cls_pred." in k else tuple(s)) for k, s in keys.items()}
    tiny = torch_files.tiny_state_dict({k: np.zeros(s, np.float32) if len(s) < 2 else np.zeros((1,) * len(s), np.float32)
                                        for k, s in shapes.items()})
    with torch_files.fake_super_gradients() as classes:
        model = torch_files.stand_in_model(classes, "yolo_nas_s", tiny, "training")
        for name, module in model.named_modules():
            for group in ("_parameters", "_buffers"):
                for leaf, tensor in list(getattr(module, group).items()):
                    key = f"{name}.{leaf}" if name else leaf
                    if tensor is None or key not in shapes:
                        continue
                    expanded = torch.zeros(1, dtype=tensor.dtype).expand(*shapes[key]) if shapes[key] else tensor
                    getattr(module, group)[leaf] = torch.nn.Parameter(expanded, requires_grad=False) if group == "_parameters" else expanded
        torch.save(model, path)
    return path


def test_ten_million_classes_are_refused_before_building_anything(tmp_path):
    path = _broadcast_whole_model(tmp_path / "classes.pt", 10_000_000)
    assert path.stat().st_size < 4 << 20
    assert_refused(read_bounded(path), path, r"through copies, broadcast views|declares 10,000,000 classes")


def test_implausible_class_count_from_real_tensors(tmp_path):
    """A head whose class tensor really has 200,000 rows (800 KB): refused by the class-count bound
    before the model's shapes are looked up."""
    path = torch_files.save_state_dict(tmp_path / "wide.pt", {"heads.head1.cls_pred.bias": np.zeros(200_000, np.float32)})
    with pytest.raises(WeightFileError, match="declares 200,000 classes, more than any plausible detector"):
        read_weight_file(path)


# ---------------------------------------------------------------------------------------------
# CRC-32 of stored members


def test_corrupted_stored_member_fails_its_crc(tmp_path):
    """1,024 float32 values changed on disk inside an uncompressed storage member."""
    path = torch_files.save_state_dict(tmp_path / "sd.pt", {"w": np.arange(4096, dtype=np.float32)})
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    values = np.frombuffer(data, np.float32, 1024, start).copy() + 1
    data[start:start + 4096] = values.tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match=f"member {info.filename} fails its CRC-32 check") as error:
        torch_pickle.load(path)
    assert str(path) in str(error.value)


def test_corrupted_deflated_member_fails(tmp_path):
    """The same for a re-packed (deflated) archive: zipfile's checks or ours, never a silent load."""
    source = torch_files.save_state_dict(tmp_path / "sd.pt", {"w": np.arange(4096, dtype=np.float32)})
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 40] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFileError) as error:
        torch_pickle.load(path)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------------------------------------
# What a FIFO or a symlink loop is called


def test_fifo_is_named_and_never_opened(tmp_path):
    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    outcome = {}

    def read():
        for reader in (torch_pickle.load, read_weight_file):
            try:
                reader(fifo)
            except WeightFileError as error:
                outcome[reader.__name__] = str(error)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # blocked in open(): release it by opening the write end
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    for message in outcome.values():
        assert message == f"{fifo} is a FIFO (named pipe), not a weight file; give the path of a .pt, .pth or " \
                          ".safetensors file (save what the pipe carries to a file first)"
    assert len(outcome) == 2


def test_symlink_loop_and_dangling_link_are_named(tmp_path):
    loop_a, loop_b, dangling = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "gone.pt"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    dangling.symlink_to(tmp_path / "missing.pt")
    for reader in (torch_pickle.load, read_weight_file):
        with pytest.raises(WeightFileError, match=f"^{loop_a} is a symlink loop"):
            reader(loop_a)
        with pytest.raises(WeightFileError, match=f"^{dangling} is a symbolic link to .*missing.pt.*, which does not exist"):
            reader(dangling)


def test_load_names_a_symlink_loop_and_a_fifo(tmp_path):
    """`nasjax.load` resolves a path before reading it: a loop used to be 'not found'."""
    from nasjax.loading import load_network

    loop_a, loop_b, fifo = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "pipe.pt"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=f"{loop_a} is a symlink loop"):
        load_network(str(loop_a))
    with pytest.raises(ValueError, match=f"{fifo} is a FIFO"):
        load_network(str(fifo))
