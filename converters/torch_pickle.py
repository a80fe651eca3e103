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

Code is not the only danger: a small file can ask for gigabytes or hours (a deflate bomb, `bytearray(16e9)`,
one list copied a million times, a dict key whose hash visits 2**100 shared tuples). The unpickler is
therefore CPython's pure-Python one (`pickle._Unpickler`), whose opcodes are methods we can bound:
every opcode is counted, string and integer lengths are checked before they are read, every copy an
allowed call or BUILD makes is charged to a budget, only plain values may be dict keys, and BUILD,
APPEND and ADDITEMS act only on the objects pickle itself makes for them, never through an attribute
the file could have planted. The zip side checks sizes from the archive's directory and the pickle's
storage records before decompressing anything, and the CRC-32 of every member it reads. All bounds
are in `converters.limits` (docs/file_formats.md#limits). The pure-Python unpickler costs ~0.1 s for
a YOLO-NAS L pickle, about what the former pre-scan of the C unpickler's input cost.
"""
from __future__ import annotations

import collections
import errno
import functools
import io
import math
import os
import pickle
import reprlib
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np
from nasjax.converters.limits import (
    MAX_INT_BYTES,
    MAX_KEY_INT,
    MAX_MODULE_DEPTH,
    MAX_MODULE_VISITS,
    MAX_PICKLE_BYTES,
    MAX_PICKLE_COPIED_ITEMS,
    MAX_PICKLE_OPCODES,
    MAX_SMALL_MEMBER_BYTES,
    MAX_STORAGE_INFLATION_BYTES,
    MAX_STRING_BYTES,
    MAX_ZIP_MEMBERS,
    TENSOR_EXPANSION_FACTOR,
    TENSOR_EXPANSION_SLACK_BYTES,
)


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

class _TorchVersion(str):
    """`torch.torch_version.TorchVersion` (a str subclass, pickled by NEWOBJ): built from a str only,
    since `str(obj)` of a list of shared lists is a repr that grows exponentially."""

    __slots__ = ()

    def __new__(cls, value=""):
        if not isinstance(value, str):
            raise WeightFileError(f"a TorchVersion is built from a {type(value).__name__}, not a str")
        return super().__new__(cls, value)


# Globals that are plain containers: calling them cannot run file code because their arguments can
# only be objects the pickle built from this same closed table. They copy their argument, so calls go
# through `_RestrictedUnpickler._construct`, which charges the copy to the pickle's budget.
_CONTAINERS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "bytearray"): bytearray,
    # torch.Size is a tuple subclass that modules keep.
    ("torch", "Size"): tuple,
}
# Classes returned as themselves (pickle builds them with NEWOBJ, which needs a class); they copy nothing.
_PLAIN_CLASSES = {
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("torch.torch_version", "TorchVersion"): _TorchVersion,
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
_MAX_RANK = 64  # numpy's limit
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

    __slots__ = ("__dict__", "args", "kwargs", "slots", "state")
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

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: np.dtype):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, name, value):
        raise UnsafeFileError(f"the pickle tried to set attribute {name!r} on torch.{self.name}")


class _Function:
    """A rebuild function exposed to the pickle. Frozen, so that BUILD cannot replace what it calls."""

    __slots__ = ("fn", "name")

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

    def __init__(self, archive: _Archive, key: str, dtype: np.dtype, numel: int):
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel
        self._array: np.ndarray | None = None
        self.used = False  # whether a tensor already is this whole storage

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
    contiguous = tuple(math.prod(size[i + 1:]) for i in range(len(size)))
    whole = storage_offset == 0 and numel == storage.numel and stride == contiguous
    # Charged before anything is read: a copy, a broadcast view (whoever uses the tensor materializes
    # it) or a storage used again all cost memory beyond the file's own bytes.
    if not whole or storage.used:
        storage.archive.spend_expansion(numel * storage.dtype.itemsize, size)
    base = storage.array()
    if whole:
        storage.used = True
        return base.reshape(size)  # the usual case: the tensor is its whole storage, no copy
    view = np.lib.stride_tricks.as_strided(
        base[storage_offset:], shape=size, strides=tuple(s * base.itemsize for s in stride), writeable=False
    )
    if numel > storage.numel:
        return view  # a broadcast (stride-0) tensor, already charged: not copied here
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
    """The storages of one torch zip archive, read lazily by key, each checked against its zip entry
    (size before reading, CRC-32 after) and all of them against the file's own size."""

    def __init__(self, raw: BinaryIO, zf: zipfile.ZipFile, prefix: str, path: Path, file_size: int):
        self.raw, self.zf, self.prefix, self.path, self.file_size = raw, zf, prefix, path, file_size
        byteorder = self._member_bytes("byteorder", default=b"little").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise WeightFileError(f"{path}: unknown byte order {byteorder!r} in {prefix}byteorder")
        self.byteorder = byteorder
        self.storages: dict[str, _Storage] = {}
        # Storages beyond the file's own bytes can only come from compression or overlapping members.
        self.storage_budget = file_size + MAX_STORAGE_INFLATION_BYTES
        # Copies, broadcasts and reuses of storages are bounded: legitimate views rarely overlap more
        # than a few times, while a crafted pickle of a few megabytes could copy one large storage a
        # hundred thousand times, or broadcast one element to a 10-million-class head.
        self.expansion_budget = TENSOR_EXPANSION_FACTOR * file_size + TENSOR_EXPANSION_SLACK_BYTES

    def _member_bytes(self, name: str, default: bytes) -> bytes:
        try:
            info = self.zf.getinfo(self.prefix + name)
        except KeyError:
            return default
        if info.file_size > MAX_SMALL_MEMBER_BYTES:
            raise WeightFileError(f"{self.path}: member {info.filename} is {info.file_size} bytes, expected a few")
        return self.zf.read(info)

    def storage(self, key: str, dtype: np.dtype, numel: int) -> _Storage:
        storage = self.storages.get(key)
        if storage is None:
            self._check_member(key, dtype, numel)
            storage = self.storages[key] = _Storage(self, key, dtype, numel)
        elif storage.dtype != dtype or storage.numel != numel:
            raise WeightFileError(f"{self.path}: storage {key!r} is declared twice with different types or sizes")
        return storage

    def _check_member(self, key: str, dtype: np.dtype, numel: int) -> None:
        """A new storage record against its zip entry and the file, before anything is read."""
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise WeightFileError(f"{self.path}: the pickle refers to storage {key[:100]!r} but {name[:200]} is missing") from None
        nbytes = numel * dtype.itemsize
        if info.file_size != nbytes:
            raise WeightFileError(
                f"{self.path}: {name} holds {info.file_size} bytes, but the pickle declares "
                f"{numel} elements of {dtype} ({nbytes} bytes)"
            )
        self.storage_budget -= nbytes
        if self.storage_budget < 0:
            raise WeightFileError(
                f"{self.path}: its tensor storages add up to more than the file's {self.file_size:,} bytes plus "
                f"{MAX_STORAGE_INFLATION_BYTES >> 20} MiB (at {name}: {nbytes:,} bytes, member stored "
                f"{'uncompressed' if info.compress_type == zipfile.ZIP_STORED else f'compressed to {info.compress_size:,} bytes'}); "
                "torch stores tensors uncompressed, so this archive is corrupt or crafted (a decompression bomb). "
                "Save the weights again with torch.save"
            )

    def read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self.prefix}data/{key}"
        info = self.zf.getinfo(name)  # checked by _check_member: present, of the declared size
        nbytes = numel * dtype.itemsize
        array = np.empty(nbytes, dtype=np.uint8)  # writable, so callers get ordinary numpy arrays
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
            got = self._read_stored(info, memoryview(array))
        else:  # torch never compresses, but a re-packed archive may; zipfile stops at the declared size
            with self.zf.open(info) as member:
                got = member.readinto(memoryview(array))
        if got != nbytes:
            raise WeightFileError(f"{self.path}: {name} ended after {got} of {nbytes} bytes (truncated file?)")
        if zlib.crc32(array) != info.CRC:
            raise WeightFileError(
                f"{self.path}: member {name} fails its CRC-32 check: its bytes on disk differ from those "
                "written (a damaged download or disk); download or save the file again"
            )
        array = array.view(dtype)
        if self.byteorder == "big" and dtype.itemsize > 1:
            array = array.view(f"u{dtype.itemsize}").byteswap().view(dtype)
        return array

    def _read_stored(self, info: zipfile.ZipInfo, into: memoryview) -> int:
        """Read an uncompressed member straight into `into`: no intermediate bytes object (the caller
        checks the CRC-32 in one pass over `into`)."""
        self.raw.seek(info.header_offset)
        header = self.raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise WeightFileError(f"{self.path}: bad local header for {info.filename} (corrupt zip)")
        name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
        self.raw.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
        return self.raw.readinto(into)

    def spend_expansion(self, nbytes: int, size: tuple[int, ...]) -> None:
        self.expansion_budget -= nbytes
        if self.expansion_budget < 0:
            raise WeightFileError(
                f"{self.path}: its tensors (at one of size {size[:8]}) need more than "
                f"{TENSOR_EXPANSION_FACTOR}x the file's {self.file_size:,} bytes (+{TENSOR_EXPANSION_SLACK_BYTES >> 20} MiB) "
                "through copies, broadcast views or storages used again; the file is corrupt or crafted"
            )


def _short(value: Any, limit: int = 100) -> str:
    """A bounded repr of a value from the file, for messages."""
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxstring, short.maxother, short.maxlevel = limit, limit, 2
    return short.repr(value)


def _identity_hashed(value: Any) -> bool:
    return type(value).__hash__ is object.__hash__


class _RestrictedUnpickler(pickle._Unpickler):
    """CPython's pure-Python unpickler with a closed `find_class` and the bounds of the module
    docstring. Methods named `load_*` override the opcode of that name (the dispatch table below maps
    every opcode to the override, counted)."""

    def __init__(self, data: bytes, path: Path, archive: _Archive | None):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.path, self.archive = path, archive
        self.stand_ins: dict[tuple[str, str], type] = {}
        self.opcodes = 0
        self.copied = 0

    def _refuse(self, what: str, limit: str) -> WeightFileError:
        return WeightFileError(
            f"{self.path}: its pickle {what}, beyond the reader's limit ({limit}); weight files need far less, "
            "so the file is corrupt or crafted. Download or save it again"
        )

    def _charge(self, count: int, what: str) -> None:
        self.copied += count
        if self.copied > MAX_PICKLE_COPIED_ITEMS:
            raise self._refuse(f"copies more than {MAX_PICKLE_COPIED_ITEMS:,} items ({what})", "MAX_PICKLE_COPIED_ITEMS")

    def _check_key(self, key: Any) -> None:
        kind = type(key)
        if kind is str or kind is bytes or kind is float or kind is bool or key is None or kind is _TorchVersion:
            return
        if kind is int and -MAX_KEY_INT < key < MAX_KEY_INT:
            return
        if kind is not int and _identity_hashed(key):  # pickled objects, classes and storages
            return
        raise WeightFileError(
            f"{self.path}: its pickle uses a {kind.__name__} ({_short(key, 60)}) as a dict key or set member; "
            "weight files use strings and integers, and hashing other values can be made to take hours "
            "(see converters/limits.py), so the file is refused as corrupt or crafted"
        )

    def _exact(self, count: int) -> bytes:
        data = self.read(count)
        if len(data) != count:
            raise WeightFileError(f"{self.path}: its pickle ends inside a {count}-byte argument (truncated file?)")
        return data

    def _length(self, fmt: str, opcode: str, limit: int = MAX_STRING_BYTES) -> int:
        (count,) = struct.unpack(fmt, self._exact(struct.calcsize(fmt)))
        if count < 0:
            raise WeightFileError(f"{self.path}: its pickle has a {opcode} of negative length (corrupt file)")
        if count > limit:
            raise self._refuse(f"has a {opcode} of {count:,} bytes", f"{limit:,} bytes")
        return count

    # Strings, bytes and integers: the length is checked before anything is read or allocated.
    def load_binunicode(self):
        self.append(str(self._exact(self._length("<I", "BINUNICODE string")), "utf-8", "surrogatepass"))

    def load_binunicode8(self):
        self.append(str(self._exact(self._length("<Q", "BINUNICODE8 string")), "utf-8", "surrogatepass"))

    def load_binbytes(self):
        self.append(self._exact(self._length("<I", "BINBYTES object")))

    def load_binbytes8(self):
        self.append(self._exact(self._length("<Q", "BINBYTES8 object")))

    def load_bytearray8(self):
        self.append(bytearray(self._exact(self._length("<Q", "BYTEARRAY8 object"))))

    def load_binstring(self):
        self.append(self._decode_string(self._exact(self._length("<i", "BINSTRING"))))

    def load_long1(self):
        self.append(pickle.decode_long(self._exact(self._length("<B", "LONG1 integer", MAX_INT_BYTES))))

    def load_long4(self):
        self.append(pickle.decode_long(self._exact(self._length("<i", "LONG4 integer", MAX_INT_BYTES))))

    # Dict keys and set members: plain values only (converters/limits.py, MAX_KEY_INT).
    def load_setitem(self):
        stack = self.stack
        value, key = stack.pop(), stack.pop()
        self._setitems(stack[-1], [key, value])

    def load_setitems(self):
        items = self.pop_mark()
        self._setitems(self.stack[-1], items)

    def _setitems(self, target, items: list) -> None:
        if not isinstance(target, dict) or len(items) % 2:
            raise WeightFileError(f"{self.path}: its pickle sets items on a {type(target).__name__} (corrupt file)")
        for i in range(0, len(items), 2):
            self._check_key(items[i])
            target[items[i]] = items[i + 1]

    def load_dict(self):
        items = self.pop_mark()
        target: dict = {}
        self._setitems(target, items)
        self.append(target)

    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise WeightFileError(f"{self.path}: its pickle adds set items to a {type(target).__name__} (corrupt file)")
        for item in items:
            self._check_key(item)
        target.update(items)

    def load_frozenset(self):
        items = self.pop_mark()
        for item in items:
            self._check_key(item)
        self.append(frozenset(items))

    # APPEND(S) act on lists only: on anything else, pickle would call an `append`/`extend` attribute,
    # which a file could have planted.
    def load_append(self):
        value = self.stack.pop()
        self._list(self.stack[-1]).append(value)

    def load_appends(self):
        items = self.pop_mark()
        self._list(self.stack[-1]).extend(items)

    def _list(self, target):
        if type(target) is not list:
            raise WeightFileError(f"{self.path}: its pickle appends to a {type(target).__name__} (corrupt file)")
        return target

    # BUILD: only stand-ins (through StandIn's own method, never an instance attribute) and OrderedDicts
    # (torch state dicts carry `_metadata` this way); each copied item is charged.
    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, StandIn):
            self._charge(_state_size(state), f"BUILD state of {type(inst).qualified_name}")
            StandIn.__setstate__(inst, state)
            return
        if type(inst) is collections.OrderedDict and isinstance(state, dict):
            planted = [k for k in state if type(k) is not str or hasattr(collections.OrderedDict, k)]
            if not planted:
                self._charge(len(state), "BUILD state of an OrderedDict")
                inst.__dict__.update(state)
                return
            state = (state, None)
        raise UnsafeFileError(f"{self.path}: the pickle tried to {_build_target(inst, state)}; refusing it")

    # Calls: arguments are charged (Python copies them into the callee), NEWOBJ only on allowed classes.
    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        if type(args) is not tuple:
            raise WeightFileError(f"{self.path}: its pickle calls something with a {type(args).__name__} as arguments (corrupt file)")
        self._charge(len(args), "call arguments")
        stack[-1] = stack[-1](*args)

    def load_newobj(self):
        args = self.stack.pop()
        self.append(self._new(self.stack.pop(), args, {}))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.append(self._new(self.stack.pop(), args, kwargs))

    def _new(self, cls, args, kwargs):
        if not (isinstance(cls, type) and (issubclass(cls, StandIn) or cls in _PLAIN_CLASSES.values())):
            raise WeightFileError(f"{self.path}: its pickle creates an object of {_short(cls, 60)}, which is not a class it may create")
        if type(args) is not tuple or type(kwargs) is not dict:
            raise WeightFileError(f"{self.path}: its pickle creates an object with malformed arguments (corrupt file)")
        self._charge(len(args) + len(kwargs), "constructor arguments")
        return cls.__new__(cls, *args, **kwargs)

    def _instantiate(self, klass, args):
        self._charge(len(args), "constructor arguments")
        super()._instantiate(klass, args)

    def _construct(self, name: str, kind: type, *args):
        """A call of an allowed container (`set(list)`, `OrderedDict()`, `torch.Size(tuple)`, ...): the
        copy is charged and keys are checked before anything is hashed."""
        if kind is bytearray:
            return _bytearray(*args)
        if not args:
            return kind()
        source = args[0]
        if len(args) > 1 or not isinstance(source, (list, tuple, set, frozenset, dict, str, bytes)):
            raise WeightFileError(f"{self.path}: its pickle calls {name} on {_short(args, 60)} (corrupt file)")
        self._charge(len(source), f"{name} of {len(source):,} items")
        if kind in (set, frozenset):
            for item in source:
                self._check_key(item)
        elif kind in (dict, collections.OrderedDict) and not isinstance(source, dict):
            for pair in source:
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise WeightFileError(f"{self.path}: its pickle builds a {name} from {_short(pair, 60)} (corrupt file)")
                self._check_key(pair[0])
        return kind(source)

    def find_class(self, module, name):
        # Overriding find_class also skips pickle's own renaming of Python 2 module names.
        module = _PYTHON2_MODULES.get(module, module)
        key = (module, name)
        if key in _FUNCTIONS:
            return _Function(f"{module}.{name}", _FUNCTIONS[key])
        if key in _CONTAINERS:
            return _Function(f"{module}.{name}", functools.partial(self._construct, f"{module}.{name}", _CONTAINERS[key]))
        if key in _PLAIN_CLASSES:
            return _PLAIN_CLASSES[key]
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
            f"{self.path} asks to load the global {module[:200]}.{name[:200]}, which this reader refuses: only tensors, "
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


def _counted(step):
    def counted(self):
        self.opcodes += 1
        if self.opcodes > MAX_PICKLE_OPCODES:
            raise self._refuse(f"runs more than {MAX_PICKLE_OPCODES:,} opcodes", "MAX_PICKLE_OPCODES")
        step(self)

    return counted


_RestrictedUnpickler.dispatch = {
    code: _counted(getattr(_RestrictedUnpickler, step.__name__)) for code, step in pickle._Unpickler.dispatch.items()
}


def _state_size(state: Any) -> int:
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        return 1 + len(state[1]) + (len(state[0]) if isinstance(state[0], dict) else 0)
    return len(state) if isinstance(state, dict) else 1


def _build_target(inst: Any, state: Any) -> str:
    if isinstance(inst, (_Function, _StorageType)):
        what = inst.name if isinstance(inst, _Function) else f"torch.{inst.name}"
    elif isinstance(inst, type):
        what = f"class {getattr(inst, 'qualified_name', inst.__name__)}"
    else:
        what = f"a {type(inst).__name__}"
    names = [k for part in (state if isinstance(state, tuple) else (state,)) if isinstance(part, dict) for k in part]
    if names:
        return f"set attribute {_short(names[0], 60)} on {what}"
    return f"set the state of {what}"


def _bytearray(source=b"", encoding=None) -> bytearray:
    """`bytearray` as pickle writes it (from bytes, or from a str and 'latin-1' before protocol 3);
    `bytearray(16_000_000_000)` would allocate 16 GB."""
    if isinstance(source, (bytes, bytearray)) and encoding is None:
        return bytearray(source)
    if isinstance(source, str) and encoding in ("latin1", "latin-1"):
        return bytearray(source, "latin-1")
    raise WeightFileError(f"bytearray is only built from bytes (or a str and 'latin-1'), not from a {type(source).__name__}")


def _unpickle(data: bytes, path: Path, archive: _Archive | None) -> Any:
    return _RestrictedUnpickler(data, path, archive).load()


# ---------------------------------------------------------------------------------------------
# Entry points


_FILE_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


def regular_file_size(path) -> int:
    """The size of `path` when it is a regular file (links followed); otherwise a `WeightFileError`
    saying what it is: missing, a symlink loop, a dangling link, a FIFO, a directory, a device. Only
    stats the path: opening a FIFO with no writer would block forever."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise WeightFileError(
                f"{path} is a symlink loop (its links lead back to themselves, or nest deeper than the system "
                "follows); point it at the weight file itself"
            ) from error
        if error.errno == errno.ENOENT and os.path.islink(path):
            raise WeightFileError(
                f"{path} is a symbolic link to {os.readlink(path)!r}, which does not exist; fix the link or "
                "give the weight file's own path"
            ) from error
        raise WeightFileError(f"cannot read weight file {path}: {error.strerror or error}") from error
    for test, kind in _FILE_KINDS.items():
        if test(info.st_mode):
            raise WeightFileError(
                f"{path} is {kind}, not a weight file; give the path of a .pt, .pth or .safetensors file"
                + (" (save what the pipe carries to a file first)" if test is stat.S_ISFIFO else "")
            )
    return info.st_size


def _data_pickle_name(zf: zipfile.ZipFile, path: Path) -> str:
    names = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if not names:
        listed = ", ".join(n[:100] for n in zf.namelist()[:5]) or "none"
        raise WeightFileError(
            f"{path} is a zip archive but not a torch.save file: no <prefix>/data.pkl member (members: {listed})"
        )
    if len(set(names)) > 1:
        raise WeightFileError(f"{path} holds several torch archives ({', '.join(names[:4])}); expected one")
    return names[0]


def _check_member_count(raw: BinaryIO, path: Path) -> None:
    """The member count from the end-of-archive record, before zipfile parses the whole directory
    (`_EndRecData` is zipfile's own reader of that record; if a future Python drops it, the check is
    skipped and only the parsed directory is bounded)."""
    end_record = getattr(zipfile, "_EndRecData", lambda f: None)(raw)
    raw.seek(0)
    if end_record and end_record[4] > MAX_ZIP_MEMBERS:  # _ECD_ENTRIES_TOTAL
        raise WeightFileError(
            f"{path}: its zip directory lists {end_record[4]:,} members, more than the reader's limit "
            f"({MAX_ZIP_MEMBERS:,}; a torch file has one per tensor storage); the file is corrupt or crafted"
        )


def _load_zip(path: Path, file_size: int) -> Any:
    with open(path, "rb") as raw:
        _check_member_count(raw, path)
        with zipfile.ZipFile(raw) as zf:
            pickle_name = _data_pickle_name(zf, path)
            info = zf.getinfo(pickle_name)
            if info.file_size > MAX_PICKLE_BYTES:  # a compressed member could be a zip bomb
                raise WeightFileError(
                    f"{path}: {pickle_name} declares {info.file_size:,} bytes; the reader accepts pickles of up to "
                    f"{MAX_PICKLE_BYTES >> 20} MiB (a YOLO-NAS model's is under 1 MB, its tensors are separate members), "
                    "so the file is corrupt or crafted (a decompression bomb?)"
                )
            archive = _Archive(raw, zf, pickle_name[: -len("data.pkl")], path, file_size)
            # zipfile reads no further than the declared size and checks the CRC-32 of what it read.
            return _unpickle(zf.read(info), path, archive)


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
    file named) for anything malformed or beyond the bounds of `converters.limits`.
    """
    path = Path(path)
    size = regular_file_size(path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path, size)
        with open(path, "rb") as f:
            head = f.read(512)
            _refuse_legacy(head, path)
            if size > MAX_PICKLE_BYTES:
                raise WeightFileError(
                    f"{path} is {size:,} bytes and not a zip archive; as a bare pickle it cannot hold tensors, and "
                    f"the reader accepts pickles of up to {MAX_PICKLE_BYTES >> 20} MiB"
                )
            f.seek(0)
            data = f.read(MAX_PICKLE_BYTES + 1)
        return _unpickle(data, path, None)
    except WeightFileError as error:
        if str(path) in str(error):
            raise
        raise type(error)(f"{path}: {error}") from error  # raised where the file is not known
    except MemoryError:
        raise  # not a verdict on the file: the bounds above keep a crafted file far from this
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
    if id(module) in ancestors or len(ancestors) > MAX_MODULE_DEPTH or visits[0] > MAX_MODULE_VISITS:
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
