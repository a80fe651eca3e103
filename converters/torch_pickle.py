"""Read `torch.save` files without torch and without running anything the file names.

A `torch.save` file is a zip archive: `<prefix>/data.pkl` is a pickle of the saved object, and each
tensor's bytes sit in `<prefix>/data/<key>`, referenced from the pickle through persistent ids
`('storage', torch.FloatStorage, key, 'cpu', numel)` and rebuilt by `torch._utils._rebuild_tensor_v2`.
A pickle can name any importable callable, so unpickling an untrusted file with the standard
machinery can execute arbitrary code. Here `find_class` is a closed table:

* the few torch functions and storage types needed to rebuild tensors map to our own numpy code;
* a handful of containers (`collections.OrderedDict`, `set`, `frozenset`, ...) map to themselves;
* classes of the model (`super_gradients.*`, `torch.nn.*`, a few harmless library types) map to
  inert stand-in classes that only record what the pickle hands them (NEWOBJ / REDUCE arguments and
  BUILD state) and never import or call anything;
* every other name raises `UnsafeFileError`.

Pickle opcodes that call something (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ, BUILD's `__setstate__`,
EXT*) can only reach objects that came out of that table, so the code a file can run is exactly the
functions in this module and the constructors of those containers. Tensors come back as numpy arrays; storages are read lazily,
one member at a time, so the peak memory stays near the size of the tensors themselves.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np


class WeightFileError(ValueError):
    """A weight file that cannot be read; the message names the file, what is wrong and what to do."""


class UnsafeFileError(WeightFileError):
    """A file whose pickle asks for something this reader refuses to run (a global outside the
    allow-list, or a persistent id that is not a tensor storage)."""


# torch.<Name>Storage → the numpy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}

# Globals that are plain containers, returned as themselves: calling them cannot run file code
# because their arguments can only be objects the pickle built from this same closed table.
_CONTAINERS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    # torch.Size and TorchVersion are tuple / str subclasses that modules and checkpoints keep.
    ("torch", "Size"): tuple,
    ("torch.torch_version", "TorchVersion"): str,
}

# Module prefixes whose classes become inert stand-ins: the model's own classes and library types
# that checkpoints carry as attributes. Never imported, so the name alone decides nothing dangerous.
_STAND_IN_PREFIXES = ("super_gradients.", "torch.nn.", "omegaconf.")
_STAND_IN_NAMES = {
    ("torch", "device"),
    ("torch", "dtype"),
    ("argparse", "Namespace"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "timedelta"),
    # numpy scalars and arrays kept as checkpoint attributes (e.g. a metric): recorded, not rebuilt,
    # because numpy's reconstructors accept object dtypes, which would turn file bytes into pointers.
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
}
_PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_TORCH_DTYPE_NAMES = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"}

# The number of the first object of a pre-1.6 torch file (a sequence of pickles, not a zip).
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_MAX_MODULE_DEPTH = 200
# A module reachable along many paths is visited once per path (as nn.Module.state_dict does); a
# crafted tree of shared modules could otherwise ask for 2**depth visits. YOLO-NAS L has ~600 modules.
_MAX_MODULE_VISITS = 100_000
_MAX_PICKLE_BYTES = 1 << 30
_MAX_RANK = 64  # numpy's limit
_COPY_BUDGET_FACTOR = 4
_COPY_BUDGET_SLACK = 64 << 20
# A zip local file header: signature, 5 shorts, CRC, 2 sizes, name length, extra-field length.
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


# ---------------------------------------------------------------------------------------------
# Inert stand-ins


class _FrozenClass(type):
    """Metaclass of stand-in classes: a BUILD opcode applied to the class itself must not be able to
    plant attributes (such as `__setstate__`) on it."""

    def __setattr__(cls, name, value):
        raise UnsafeFileError(f"the pickle tried to set attribute {name!r} on class {cls.qualified_name}")


class StandIn(metaclass=_FrozenClass):
    """An object of a class the reader does not import. It records what the pickle gave it:

    * `args` / `kwargs`: the arguments of NEWOBJ / NEWOBJ_EX / REDUCE / INST / OBJ;
    * its `__dict__`: a dict BUILD state (for an `nn.Module`, `_parameters`, `_modules`, ...);
    * `state`: BUILD state of any other shape, and `slots`: slot state.

    `type(obj).qualified_name` is the pickled global, e.g. 'torch.nn.modules.conv.Conv2d'.
    """

    __slots__ = ("__dict__", "args", "kwargs", "state", "slots")
    qualified_name = "StandIn"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "kwargs", kwargs)
        object.__setattr__(self, "state", None)
        object.__setattr__(self, "slots", None)
        return self

    def __init__(self, *args, **kwargs):
        """Calling a stand-in class (REDUCE) only records the arguments, in `__new__`."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state, slots = state
            object.__setattr__(self, "slots", slots)
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif state is not None:
            object.__setattr__(self, "state", state)

    def __repr__(self) -> str:
        return f"<stand-in {type(self).qualified_name}>"


def stand_in_class(module: str, name: str) -> type:
    """A fresh stand-in class for the global `module.name` (made per file, so nothing a file does to
    its classes outlives the load)."""
    namespace = {"__slots__": (), "__module__": module, "__qualname__": name, "qualified_name": f"{module}.{name}"}
    return _FrozenClass(name, (StandIn,), namespace)


def qualified_name(obj: Any) -> str | None:
    """The pickled class name of a stand-in object, or None for anything else."""
    return type(obj).qualified_name if isinstance(obj, StandIn) else None


class _StorageType:
    """What `torch.FloatStorage` etc. unpickle to: a dtype tag for persistent ids, nothing callable."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, name, value):
        raise UnsafeFileError(f"the pickle tried to set attribute {name!r} on torch.{self.name}")


class _Function:
    """A rebuild function exposed to the pickle. Frozen, so that BUILD cannot replace what it calls."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args):
        return self.fn(*args)

    def __setattr__(self, name, value):
        raise UnsafeFileError(f"the pickle tried to set attribute {name!r} on {self.name}")


# ---------------------------------------------------------------------------------------------
# Tensors


class _Storage:
    """One `data/<key>` member, read on first use."""

    def __init__(self, archive: "_Archive", key: str, dtype: np.dtype, numel: int):
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self.archive.read_storage(self.key, self.dtype, self.numel)
        return self._array


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and v >= 0 for v in value):
        raise WeightFileError(f"tensor {what} is not a tuple of non-negative ints")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> np.ndarray:
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])`
    as a numpy array, after checking that the view stays inside its storage."""
    if not isinstance(storage, _Storage):
        raise WeightFileError(f"a tensor refers to a {type(storage).__name__} instead of a storage")
    if type(storage_offset) is not int or storage_offset < 0:
        raise WeightFileError("tensor storage offset is not a non-negative int")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or len(size) > _MAX_RANK:
        raise WeightFileError(f"tensor size {size[:8]} and stride {stride[:8]}: ranks {len(size)}, {len(stride)}")
    numel = math.prod(size)
    if numel == 0:
        return np.zeros(size, dtype=storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.numel:
        raise WeightFileError(
            f"tensor of size {size}, stride {stride}, offset {storage_offset} reaches past the end of "
            f"storage {storage.key!r} ({storage.numel} elements)"
        )
    base = storage.array()
    contiguous = tuple(math.prod(size[i + 1:]) for i in range(len(size)))
    if storage_offset == 0 and numel == storage.numel and stride == contiguous:
        return base.reshape(size)  # the usual case: the tensor is its whole storage, no copy
    view = np.lib.stride_tricks.as_strided(
        base[storage_offset:], shape=size, strides=tuple(s * base.itemsize for s in stride), writeable=False
    )
    if numel > storage.numel:
        return view  # a broadcast (stride-0) tensor: copying could multiply the file's size
    storage.archive.spend_copy_budget(numel * base.itemsize)
    return np.array(view, order="C")  # always a copy: writable, and independent of the storage


def _rebuild_parameter(data, *_ignored) -> np.ndarray:
    """`torch._utils._rebuild_parameter(data, requires_grad, hooks[, state])`: the array itself."""
    if not isinstance(data, np.ndarray):
        raise WeightFileError(f"a parameter wraps a {type(data).__name__} instead of a tensor")
    return data


def _encode_latin1(text, encoding="latin1"):
    """`_codecs.encode` as protocol-2 pickles use it for bytes objects, restricted to that use (a
    general codec lookup could import modules named by the file)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeFileError("_codecs.encode is only allowed as pickle uses it: (str, 'latin1')")
    return text.encode("latin1")


_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _encode_latin1,
}


# ---------------------------------------------------------------------------------------------
# The archive and the unpickler


class _Archive:
    """The storages of one torch zip archive, read lazily by key."""

    def __init__(self, raw: BinaryIO, zf: zipfile.ZipFile, prefix: str, path: Path):
        self.raw, self.zf, self.prefix, self.path = raw, zf, prefix, path
        byteorder = self._member_bytes("byteorder", default=b"little").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise WeightFileError(f"{path}: unknown byte order {byteorder!r} in {prefix}byteorder")
        self.byteorder = byteorder
        self.storages: dict[str, _Storage] = {}
        # Copies of views are bounded: legitimate views rarely overlap more than a few times, while a
        # crafted pickle of a few megabytes could copy one large storage a hundred thousand times.
        data_prefix = prefix + "data/"
        stored = sum(i.file_size for i in zf.infolist() if i.filename.startswith(data_prefix))
        self.copy_budget = _COPY_BUDGET_FACTOR * stored + _COPY_BUDGET_SLACK

    def _member_bytes(self, name: str, default: bytes) -> bytes:
        try:
            info = self.zf.getinfo(self.prefix + name)
        except KeyError:
            return default
        if info.file_size > 64:
            raise WeightFileError(f"{self.path}: member {info.filename} is {info.file_size} bytes, expected a few")
        return self.zf.read(info)

    def storage(self, key: str, dtype: np.dtype, numel: int) -> _Storage:
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(self, key, dtype, numel)
        elif storage.dtype != dtype or storage.numel != numel:
            raise WeightFileError(f"{self.path}: storage {key!r} is declared twice with different types or sizes")
        return storage

    def read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise WeightFileError(f"{self.path}: the pickle refers to storage {key!r} but {name} is missing") from None
        nbytes = numel * dtype.itemsize
        if info.file_size != nbytes:
            raise WeightFileError(
                f"{self.path}: {name} holds {info.file_size} bytes, but the pickle declares "
                f"{numel} elements of {dtype} ({nbytes} bytes)"
            )
        array = np.empty(nbytes, dtype=np.uint8)  # writable, so callers get ordinary numpy arrays
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
            got = self._read_stored(info, memoryview(array))
        else:  # torch never compresses, but a re-packed archive may
            with self.zf.open(info) as member:
                got = member.readinto(memoryview(array))
        if got != nbytes:
            raise WeightFileError(f"{self.path}: {name} ended after {got} of {nbytes} bytes (truncated file?)")
        array = array.view(dtype)
        if self.byteorder == "big" and dtype.itemsize > 1:
            array = array.view(f"u{dtype.itemsize}").byteswap().view(dtype)
        return array

    def _read_stored(self, info: zipfile.ZipInfo, into: memoryview) -> int:
        """Read an uncompressed member straight into `into`: no intermediate bytes object and, as in
        torch's own reader, no CRC pass over tensor bytes (`WeightFile.sha256` covers the file)."""
        self.raw.seek(info.header_offset)
        header = self.raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise WeightFileError(f"{self.path}: bad local header for {info.filename} (corrupt zip)")
        name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
        self.raw.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
        return self.raw.readinto(into)

    def spend_copy_budget(self, nbytes: int) -> None:
        self.copy_budget -= nbytes
        if self.copy_budget < 0:
            raise WeightFileError(
                f"{self.path}: its tensors copy more than {_COPY_BUDGET_FACTOR}x the bytes its storages hold; "
                "the file is corrupt or crafted"
            )


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path, archive: _Archive | None):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.path, self.archive = path, archive
        self.stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module, name):
        # Overriding find_class also skips pickle's own renaming of Python 2 module names.
        module = _PYTHON2_MODULES.get(module, module)
        key = (module, name)
        if key in _FUNCTIONS:
            return _Function(f"{module}.{name}", _FUNCTIONS[key])
        if key in _CONTAINERS:
            return _CONTAINERS[key]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        if (
            module.startswith(_STAND_IN_PREFIXES)
            or key in _STAND_IN_NAMES
            or (module == "torch" and name in _TORCH_DTYPE_NAMES)
        ):
            if key not in self.stand_ins:
                self.stand_ins[key] = stand_in_class(module, name)
            return self.stand_ins[key]
        raise UnsafeFileError(
            f"{self.path} asks to load the global {module}.{name}, which this reader refuses: only tensors, "
            "plain containers and inert stand-ins for model classes are allowed. Do not open this file with "
            "torch.load(weights_only=False) unless you trust where it came from."
        )

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[3], str)
            and type(pid[4]) is int
            and pid[4] >= 0
        ):
            raise UnsafeFileError(
                f"{self.path} contains a persistent id that is not a tensor storage "
                f"(got a {type(pid).__name__}); refusing it"
            )
        if self.archive is None:
            raise WeightFileError(
                f"{self.path} is a bare pickle that refers to tensor storages; only torch zip archives carry them"
            )
        _, storage_type, key, _location, numel = pid
        return self.archive.storage(key, storage_type.dtype, numel)


def _check_memo_indices(data: bytes, path: Path) -> None:
    """Refuse memo indices beyond the number of opcodes: no pickler writes them, and CPython's
    unpickler allocates (and clears) memory for every index up to the largest one it sees."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # genops decoding odd protocol-0 string escapes
        for count, (opcode, arg, _pos) in enumerate(pickletools.genops(data), start=1):
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (isinstance(arg, int) and 0 <= arg <= count):
                raise WeightFileError(
                    f"{path}: the pickle uses memo index {arg} after {count} opcodes; corrupt or crafted"
                )


def _unpickle(data: bytes, path: Path, archive: _Archive | None) -> Any:
    _check_memo_indices(data, path)
    return _RestrictedUnpickler(data, path, archive).load()


# ---------------------------------------------------------------------------------------------
# Entry points


def _data_pickle_name(zf: zipfile.ZipFile, path: Path) -> str:
    names = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if not names:
        listed = ", ".join(zf.namelist()[:5]) or "none"
        raise WeightFileError(
            f"{path} is a zip archive but not a torch.save file: no <prefix>/data.pkl member (members: {listed})"
        )
    if len(set(names)) > 1:
        raise WeightFileError(f"{path} holds several torch archives ({', '.join(names[:4])}); expected one")
    return names[0]


def _load_zip(path: Path) -> Any:
    with open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
        pickle_name = _data_pickle_name(zf, path)
        if zf.getinfo(pickle_name).file_size > _MAX_PICKLE_BYTES:  # a compressed member could be a zip bomb
            raise WeightFileError(f"{path}: {pickle_name} claims more than {_MAX_PICKLE_BYTES >> 30} GiB")
        archive = _Archive(raw, zf, pickle_name[: -len("data.pkl")], path)
        return _unpickle(zf.read(pickle_name), path, archive)


def _refuse_legacy(head: bytes, path: Path) -> None:
    legacy = head.startswith(b"\x80\x02\x8a\x0a") and int.from_bytes(head[4:14], "little") == _LEGACY_TORCH_MAGIC
    if legacy or head[257:262] == b"ustar":
        raise WeightFileError(
            f"{path} was written by torch < 1.6 (legacy {'tar' if not legacy else 'pickle-sequence'} format), "
            "which this reader does not support; re-save it with a recent torch "
            "(torch.save(torch.load(path), new_path), only if you trust the file)"
        )


def load(path) -> Any:
    """The object a `torch.save` zip archive (or a bare pickle) holds: dicts, lists, numpy arrays for
    tensors and `StandIn` objects for classes, with nothing from the file imported or run.

    Raises `UnsafeFileError` for a global outside the allow-list and `WeightFileError` (with the
    file named) for anything malformed.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with open(path, "rb") as f:
            head = f.read(512)
            _refuse_legacy(head, path)
            f.seek(0)
            data = f.read()
        return _unpickle(data, path, None)
    except WeightFileError as error:
        if str(path) in str(error):
            raise
        raise type(error)(f"{path}: {error}") from error  # raised where the file is not known
    except OSError as error:
        raise WeightFileError(f"{path}: could not be read ({error})") from error
    except Exception as error:  # any other failure while parsing untrusted bytes means a malformed file
        raise WeightFileError(
            f"{path}: corrupt or truncated ({type(error).__name__}: {str(error)[:200]}); download or save it again"
        ) from error


def module_state_dict(module: Any) -> dict[str, np.ndarray]:
    """`state_dict()` of a pickled `nn.Module` tree of stand-ins, by nn.Module's own rules: each
    module's `_parameters`, then its `_buffers` except `_non_persistent_buffers_set`, then its
    `_modules` recursively, with dotted names; None entries are skipped. Tensors that are plain
    attributes (not registered) are not part of it, as in PyTorch."""
    out: dict[str, np.ndarray] = {}
    _collect(module, "", out, ancestors=(), visits=[0])
    return out


def _collect(module: Any, prefix: str, out: dict, ancestors: tuple[int, ...], visits: list[int]) -> None:
    where = prefix[:-1] or "the root module"
    if not isinstance(module, StandIn):
        raise WeightFileError(f"{where} is a {type(module).__name__}, not a pickled nn.Module")
    visits[0] += 1
    if id(module) in ancestors or len(ancestors) > _MAX_MODULE_DEPTH or visits[0] > _MAX_MODULE_VISITS:
        raise WeightFileError(f"{where}: the module tree contains a cycle or is implausibly deep or large")
    attributes = module.__dict__
    non_persistent = attributes.get("_non_persistent_buffers_set", set())  # absent before torch 1.6
    if not isinstance(non_persistent, (set, frozenset)):
        raise WeightFileError(f"{where}._non_persistent_buffers_set is a {type(non_persistent).__name__}, not a set")
    for group in ("_parameters", "_buffers"):
        tensors = attributes.get(group, {})
        if not isinstance(tensors, dict):
            raise WeightFileError(f"{where}.{group} is a {type(tensors).__name__}, not a dict")
        for name, value in tensors.items():
            if value is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, np.ndarray):
                raise WeightFileError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            out[f"{prefix}{name}"] = value
    children = attributes.get("_modules", {})
    if not isinstance(children, dict):
        raise WeightFileError(f"{where}._modules is a {type(children).__name__}, not a dict")
    for name, child in children.items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", out, ancestors + (id(module),), visits)
