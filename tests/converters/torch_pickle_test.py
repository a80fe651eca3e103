"""converters.torch_pickle against files written by torch itself: every storage dtype, views into shared
storages, byte order, archive prefixes, nn.Module state-dict semantics, and the legacy format."""
from __future__ import annotations

import contextlib
import pickle
import sys
import types
import zipfile
from collections import OrderedDict

import ml_dtypes
import numpy as np
import pytest
import torch
from torch import nn

from nasjax.converters import torch_pickle
from nasjax.converters.torch_pickle import WeightFileError
from torch_files import write_torch_zip

DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool,
]  # fmt: skip


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; compare the bits
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def assert_same(array: np.ndarray, tensor: torch.Tensor) -> None:
    expected = as_numpy(tensor.detach().contiguous())
    assert isinstance(array, np.ndarray)
    assert array.dtype == expected.dtype and array.shape == expected.shape
    assert np.ascontiguousarray(array).tobytes() == expected.tobytes()  # bit for bit


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_storage_dtype(tmp_path, dtype):
    values = (torch.arange(24) - 7).reshape(2, 3, 4) * 0.75
    tensor = values.to(dtype)
    path = tmp_path / "t.pt"
    torch.save({"x": tensor, "scalar": tensor[1, 2, 3].clone()}, path)
    loaded = torch_pickle.load(path)
    assert_same(loaded["x"], tensor)
    assert_same(loaded["scalar"], tensor[1, 2, 3])
    assert loaded["x"].flags.writeable and loaded["x"].flags.c_contiguous


def test_views_share_storages_as_in_torch(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    tensors = {
        "whole": base,
        "transposed": base.t(),
        "rows": base[2:5],
        "strided": base[::2, 1::3],
        "column": base[:, 7],
        "expanded": torch.tensor([1.5, 2.5]).expand(4, 2),
        "empty": base[3:3],
        "zero_dim": torch.tensor(4.0),
    }
    path = tmp_path / "views.pt"
    torch.save(tensors, path)
    loaded = torch_pickle.load(path)
    assert list(loaded) == list(tensors)
    for name, tensor in tensors.items():
        assert_same(loaded[name], tensor)
    # Only copies of views are independent; the whole-storage tensor is the storage itself.
    assert not np.shares_memory(loaded["rows"], loaded["whole"]) and loaded["rows"].flags.writeable


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)  # `bias` is None in _parameters: skipped
        self.bn = nn.BatchNorm2d(4)
        self.register_buffer("kept", torch.ones(2))
        self.register_buffer("dropped", torch.zeros(2), persistent=False)
        self.plain_tensor = torch.ones(3)  # an attribute, not a buffer: not in the state dict
        self.scale = nn.Parameter(torch.tensor([0.5]))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.shared = self.blocks[0]  # a module under two names appears under both, as in torch
        self.head = nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU())
        self.nothing = None


@contextlib.contextmanager
def pickled_as_super_gradients(*classes):
    """Give the test's classes a super_gradients.* module path (one the reader turns into stand-ins)
    while torch.save pickles them."""
    package, module = types.ModuleType("super_gradients"), types.ModuleType("super_gradients.test_models")
    package.test_models = module
    originals = {cls: cls.__module__ for cls in classes}
    for cls in classes:
        cls.__module__ = module.__name__
        setattr(module, cls.__qualname__, cls)
    saved = {name: sys.modules.get(name) for name in (package.__name__, module.__name__)}
    sys.modules.update({package.__name__: package, module.__name__: module})
    try:
        yield
    finally:
        for cls, name in originals.items():
            cls.__module__ = name
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = previous


def test_module_state_dict_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = Model()
    with torch.no_grad():
        model.blocks[1].bn.running_mean.uniform_()
    path = tmp_path / "model.pt"
    with pickled_as_super_gradients(Block, Model):
        torch.save(model, path)
    root = torch_pickle.load(path)
    assert torch_pickle.qualified_name(root) == "super_gradients.test_models.Model"
    state = torch_pickle.module_state_dict(root)
    expected = model.state_dict()
    assert list(state) == list(expected)
    for name, tensor in expected.items():
        assert_same(state[name], tensor)
    block = root.__dict__["_modules"]["blocks"].__dict__["_modules"]["0"]
    assert torch_pickle.qualified_name(block.__dict__["_modules"]["conv"]) == "torch.nn.modules.conv.Conv2d"
    assert_same(block.__dict__["plain_tensor"], model.blocks[0].plain_tensor)
    assert block.__dict__["_non_persistent_buffers_set"] == {"dropped"}


def test_module_without_non_persistent_set_keeps_every_buffer():
    """Modules pickled by torch < 1.6 have no `_non_persistent_buffers_set`."""
    old = torch_pickle.stand_in_class("torch.nn.modules.module", "Module")()
    old.__setstate__({"_parameters": OrderedDict(w=np.ones(2)), "_buffers": OrderedDict(b=np.zeros(1)), "_modules": {}})
    assert list(torch_pickle.module_state_dict(old)) == ["w", "b"]


def test_module_tree_with_a_cycle_is_an_error():
    module = torch_pickle.stand_in_class("super_gradients.x", "M")()
    module.__setstate__({"_parameters": {}, "_buffers": {}, "_modules": {"self": module}})
    with pytest.raises(WeightFileError, match="cycle"):
        torch_pickle.module_state_dict(module)


def test_module_tree_shared_exponentially_is_an_error():
    """Each level holds the next one twice: 2**40 paths, which a naive walk would try to visit."""
    child = None
    for level in range(40):
        module = torch_pickle.stand_in_class("super_gradients.x", "M")()
        module.__setstate__({"_parameters": {}, "_buffers": {}, "_modules": {"a": child, "b": child}})
        child = module
    with pytest.raises(WeightFileError, match="large"):
        torch_pickle.module_state_dict(child)


def test_stand_ins_record_and_never_call(tmp_path):
    cls = torch_pickle.stand_in_class("super_gradients.training.processing.processing", "ImagePermute")
    obj = cls((2, 0, 1), flag=True)
    assert obj.args == ((2, 0, 1),) and obj.kwargs == {"flag": True}
    obj.__setstate__(({"permutation": (2, 0, 1)}, {"slot": 1}))
    assert obj.permutation == (2, 0, 1) and obj.slots == {"slot": 1}
    with pytest.raises(WeightFileError):
        cls.__setstate__ = print  # a pickle's BUILD on the class itself must not plant methods


def test_archive_prefix_and_big_endian(tmp_path):
    """Older torch wrote `archive/`; a big-endian machine writes `byteorder` = big."""
    values = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    halves = values.astype(ml_dtypes.bfloat16)
    source = tmp_path / "src.pt"
    torch.save({"f": torch.from_numpy(values), "h": torch.from_numpy(values).bfloat16()}, source)
    with zipfile.ZipFile(source) as zf:
        prefix = zf.namelist()[0].split("/")[0] + "/"
        data_pkl = zf.read(prefix + "data.pkl")
        keys = {n[len(prefix) + 5:] for n in zf.namelist() if n.startswith(prefix + "data/")}
        storages = {k: zf.read(f"{prefix}data/{k}") for k in keys}
    swapped = {}
    for key, data in storages.items():
        width = 4 if len(data) == 24 else 2
        swapped[key] = np.frombuffer(data, dtype=f"<u{width}").astype(f">u{width}").tobytes()
    path = write_torch_zip(tmp_path / "big.pt", data_pkl, swapped, prefix="archive/", byteorder="big")
    loaded = torch_pickle.load(path)
    np.testing.assert_array_equal(loaded["f"], values)
    np.testing.assert_array_equal(loaded["h"].astype(np.float32), halves.astype(np.float32))


def test_legacy_torch_format_is_refused_with_advice(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"x": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightFileError, match="re-save it with a recent torch"):
        torch_pickle.load(path)


def test_bare_pickle_of_containers(tmp_path):
    value = {"a": [1, 2.5, "x", None], "b": (True,), "c": {1, 2}, "d": frozenset({3}), "e": OrderedDict(z=b"\x00")}
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(value, protocol=2))
    assert torch_pickle.load(path) == value


def test_view_outside_its_storage_is_an_error(tmp_path):
    data_pkl = _rebuild_pickle(offset=3, size=(4,), stride=(1,), numel=5)
    path = write_torch_zip(tmp_path / "oob.pt", data_pkl, {"0": np.zeros(5, np.float32).tobytes()})
    with pytest.raises(WeightFileError, match="reaches past the end"):
        torch_pickle.load(path)


def test_storage_member_size_must_match(tmp_path):
    data_pkl = _rebuild_pickle(offset=0, size=(5,), stride=(1,), numel=5)
    path = write_torch_zip(tmp_path / "short.pt", data_pkl, {"0": b"\x00" * 12})
    with pytest.raises(WeightFileError, match="holds 12 bytes"):
        torch_pickle.load(path)


def test_copies_may_not_exceed_the_storages(tmp_path):
    """A crafted pickle that copies a partial view of one storage over and over is stopped."""
    numel = 1 << 20  # 4 MiB: 30 copies exceed 2x the file plus 64 MiB (converters/limits.py)
    view = _rebuild_call(offset=1, size=(numel - 1,), stride=(1,), numel=numel)
    data_pkl = b"\x80\x02(" + view * 30 + b"l."
    path = write_torch_zip(tmp_path / "copies.pt", data_pkl, {"0": np.zeros(numel, np.float32).tobytes()})
    with pytest.raises(WeightFileError, match="through copies, broadcast views"):
        torch_pickle.load(path)


def test_huge_memo_index_costs_nothing(tmp_path):
    """The C unpickler allocates a memo array up to the largest index; the reader's memo is a dict."""
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x02N" + b"r" + (0xFFFFFFF0).to_bytes(4, "little") + b".")
    assert torch_pickle.load(path) is None


def _rebuild_call(offset: int, size: tuple, stride: tuple, numel: int) -> bytes:
    """Opcodes for `_rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', numel), offset, size,
    stride, False, OrderedDict())`."""
    def ints(values):
        return b"(" + b"".join(b"J" + v.to_bytes(4, "little") for v in values) + b"t"

    pid = b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu" + b"J" + numel.to_bytes(4, "little") + b"tQ"
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"J" + offset.to_bytes(4, "little") + ints(size) + ints(stride)
        + b"\x89ccollections\nOrderedDict\n)Rt" + b"R"
    )  # fmt: skip


def _rebuild_pickle(**kwargs) -> bytes:
    return b"\x80\x02" + _rebuild_call(**kwargs) + b"."


def test_zip_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("holiday/beach.jpg", b"\xff\xd8")
    with pytest.raises(WeightFileError, match="not a torch.save file"):
        torch_pickle.load(path)
