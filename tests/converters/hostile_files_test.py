"""Files made to attack the reader: pickles that try to reach code-running globals through every opcode
that calls something, and random corruptions of valid files. Each hostile file is tried as a bare
pickle and as the `archive/data.pkl` of a torch-style zip; the reader must refuse it with
`UnsafeFileError`, and the file the payload would create must not exist. Corrupted files must either
parse or fail with one of the reader's own errors, never with a raw low-level exception or a hang.

NASJAX_FUZZ_CASES sets the number of corrupted files (default 300), NASJAX_FUZZ_SEED their seed; long
runs use tests/converters/fuzz_weight_files.py (its docstring has the command).
"""
from __future__ import annotations

import copyreg
import os
import pickle
import zipfile
from pathlib import Path

import fuzz_weight_files
import numpy as np
import pytest
import torch_files
from nasjax.converters import torch_pickle
from nasjax.converters.weight_file import (
    UnsafeFileError,
    read_weight_file,
)

FUZZ_CASES = int(os.environ.get("NASJAX_FUZZ_CASES", "300"))
FUZZ_SEED = int(os.environ.get("NASJAX_FUZZ_SEED", "20240607"))
WRAPPERS = ("bare", "zip")


# ---------------------------------------------------------------------------------------------
# Hand-made pickles (raw opcodes; protocol 0 text opcodes where the attack needs them)


def text(value: str) -> bytes:
    """BINUNICODE: a str argument."""
    data = value.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def short_text(value: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4), as STACK_GLOBAL expects its operands."""
    data = value.encode()
    return b"\x8c" + bytes([len(data)]) + data


def glob(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def shell_command(sentinel: Path) -> str:
    return f"touch {sentinel}"


def python_code(sentinel: Path) -> str:
    return f"open({str(sentinel)!r}, 'w').close()"


def via_global_reduce(module, name, arg):
    return b"\x80\x02" + glob(module, name) + text(arg) + b"\x85R."


def via_stack_global(module, name, arg):
    return b"\x80\x04" + short_text(module) + short_text(name) + b"\x93" + text(arg) + b"\x85R."


def via_inst(module, name, arg):
    # protocol 0: MARK, args, INST module name → klass(*args)
    return b"(" + f"V{arg}\n".encode() + f"i{module}\n{name}\n".encode() + b"."


def via_obj(module, name, arg):
    # protocol 1: MARK, class, args, OBJ → cls(*args)
    return b"(" + glob(module, name) + text(arg) + b"o."


def via_newobj(module, name, arg):
    return b"\x80\x02" + glob(module, name) + text(arg) + b"\x85\x81."


def via_newobj_ex(module, name, arg):
    return b"\x80\x04" + glob(module, name) + text(arg) + b"\x85}\x92."


def via_build_setstate(module, name, arg):
    # An allowed stand-in whose BUILD state plants `__setstate__` = the target, then a second BUILD
    # that would call it.
    target = glob(module, name)
    stand_in = glob("argparse", "Namespace") + b")\x81"
    return b"\x80\x02" + stand_in + b"N}" + text("__setstate__") + target + b"s\x86b" + text(arg) + b"b."


OPCODE_ROUTES = {
    "GLOBAL+REDUCE": via_global_reduce,
    "STACK_GLOBAL+REDUCE": via_stack_global,
    "INST": via_inst,
    "OBJ": via_obj,
    "NEWOBJ": via_newobj,
    "NEWOBJ_EX": via_newobj_ex,
    "BUILD(__setstate__)": via_build_setstate,
}

# (module, name, argument builder): globals that run code, reached with one string argument.
TARGETS = {
    "os.system": ("os", "system", shell_command),
    "posix.system": ("posix", "system", shell_command),
    "nt.system": ("nt", "system", shell_command),
    "builtins.eval": ("builtins", "eval", python_code),
    "__builtin__.exec": ("__builtin__", "exec", python_code),
    "subprocess.Popen": ("subprocess", "Popen", shell_command),
    "subprocess.getoutput": ("subprocess", "getoutput", shell_command),
    "importlib.import_module": ("importlib", "import_module", lambda s: "os"),
    "builtins.getattr": ("builtins", "getattr", lambda s: "system"),
    "builtins.__import__": ("builtins", "__import__", lambda s: "os"),
    "functools.partial": ("functools", "partial", lambda s: "x"),
    "operator.attrgetter": ("operator", "attrgetter", lambda s: "system"),
    "pickle.loads": ("pickle", "loads", lambda s: "x"),
    "runpy._run_code": ("runpy", "_run_code", python_code),
    "torch.load": ("torch", "load", lambda s: str(s)),
    "torch._utils._rebuild_from_type_v2": ("torch._utils", "_rebuild_from_type_v2", lambda s: "x"),
    "numpy.load": ("numpy", "load", lambda s: str(s)),
    "copyreg._reconstructor": ("copyreg", "_reconstructor", lambda s: "x"),
}


def wrap(payload: bytes, wrapper: str, path: Path) -> Path:
    if wrapper == "bare":
        path.write_bytes(payload)
        return path
    return torch_files.write_torch_zip(path, payload)


def assert_refused(path: Path, sentinel: Path, names: str) -> None:
    for read in (torch_pickle.load, read_weight_file):
        with pytest.raises(UnsafeFileError) as info:
            read(path)
        assert names in str(info.value) and str(path) in str(info.value)
    assert not sentinel.exists(), "the payload ran"


@pytest.mark.parametrize("route", ["GLOBAL+REDUCE", "STACK_GLOBAL+REDUCE", "INST", "OBJ", "BUILD(__setstate__)"])
def test_payloads_are_live(tmp_path, route):
    """Control: the standard unpickler does run these payloads, so the refusals below mean something."""
    sentinel = tmp_path / "pwned"
    pickle.loads(OPCODE_ROUTES[route]("os", "system", shell_command(sentinel)))
    assert sentinel.exists()


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("route", list(OPCODE_ROUTES))
@pytest.mark.parametrize("target", list(TARGETS))
def test_code_running_globals_are_refused(tmp_path, target, route, wrapper):
    module, name, argument = TARGETS[target]
    sentinel = tmp_path / "pwned"
    payload = OPCODE_ROUTES[route](module, name, argument(sentinel))
    path = wrap(payload, wrapper, tmp_path / "evil.pt")
    # The unpickler sees Python 2 names as written; the message names the global as Python 3 spells it.
    assert_refused(path, sentinel, f"{'builtins' if module == '__builtin__' else module}.{name}")


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_extension_registry_goes_through_the_allow_list(tmp_path, wrapper):
    """EXT1 looks its global up in copyreg's extension registry, then through find_class."""
    sentinel = tmp_path / "pwned"
    copyreg.add_extension("os", "system", 0xF0)
    try:
        payload = b"\x80\x02\x82\xf0" + text(shell_command(sentinel)) + b"\x85R."
        assert_refused(wrap(payload, wrapper, tmp_path / "evil.pt"), sentinel, "os.system")
    finally:
        copyreg.remove_extension("os", "system", 0xF0)


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("frozen", ["torch._utils\n_rebuild_parameter", "torch\nFloatStorage"])
def test_build_cannot_replace_what_an_allowed_global_calls(tmp_path, frozen, wrapper):
    """BUILD with slot state on an allowed callable (here: planting OrderedDict as its function)."""
    payload = (
        b"\x80\x02c" + frozen.encode() + b"\nN}" + text("fn") + glob("collections", "OrderedDict") + b"s\x86b."
    )  # fmt: skip
    assert_refused(wrap(payload, wrapper, tmp_path / "evil.pt"), tmp_path / "pwned", "tried to set attribute 'fn'")


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_codecs_encode_only_as_pickle_uses_it(tmp_path, wrapper):
    """Protocol 2 writes bytes as _codecs.encode(str, 'latin1'); any other codec is a module import."""
    payload = b"\x80\x02" + glob("_codecs", "encode") + text("payload") + text("rot13") + b"\x86R."
    assert_refused(wrap(payload, wrapper, tmp_path / "evil.pt"), tmp_path / "pwned", "_codecs.encode")


BAD_PERSISTENT_IDS = {
    "string": b"\x80\x02" + text("os.system") + b"Q.",
    "protocol0-string": b"Pos.system\n.",
    "module-tuple": b"\x80\x02(" + text("module") + text("os") + b"tQ.",
    "storage-with-a-class": b"\x80\x02(" + text("storage") + glob("super_gradients.x", "Y")
    + text("0") + text("cpu") + b"K\x01tQ.",
    "storage-short": b"\x80\x02(" + text("storage") + b"tQ.",
}  # fmt: skip


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("pid", list(BAD_PERSISTENT_IDS))
def test_persistent_ids_other_than_storages_are_refused(tmp_path, pid, wrapper):
    path = wrap(BAD_PERSISTENT_IDS[pid], wrapper, tmp_path / "evil.pt")
    assert_refused(path, tmp_path / "pwned", "persistent id")


def test_refused_global_inside_an_otherwise_valid_state_dict(tmp_path):
    """A real torch file with one extra entry that reaches os.system."""
    sentinel = tmp_path / "pwned"
    source = torch_files.save_state_dict(tmp_path / "sd.pt", {"w": np.ones(3, np.float32)})
    with zipfile.ZipFile(source) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    name = next(n for n in members if n.endswith("/data.pkl"))
    # ... SETITEMS STOP → ... SETITEM('x', os.system(cmd)) SETITEMS STOP
    evil = text("x") + glob("os", "system") + text(shell_command(sentinel)) + b"\x85Rs"
    members[name] = members[name][:-1] + evil + b"."
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    assert_refused(path, sentinel, "os.system")


# ---------------------------------------------------------------------------------------------
# Fuzzing (the engine, and the script for long runs, is fuzz_weight_files.py)


@pytest.fixture(scope="module")
def fuzz_targets(tmp_path_factory) -> dict[str, bytes]:
    return fuzz_weight_files.write_targets(tmp_path_factory.mktemp("fuzz_targets"))


def test_fuzzed_files_parse_or_fail_cleanly(tmp_path, fuzz_targets):
    """Byte flips, truncations and member damage: each case parses or fails with the reader's own
    error, within fuzz_weight_files.CASE_SECONDS and CASE_MEMORY_MIB."""
    outcomes, failures = fuzz_weight_files.run(fuzz_targets, FUZZ_CASES, FUZZ_SEED, tmp_path)
    print(f"fuzz: {FUZZ_CASES} cases, seed {FUZZ_SEED}: {dict(sorted(outcomes.items()))}")
    assert not failures, "\n".join(failures[:20])
    assert sum(n for k, n in outcomes.items() if k.startswith("read_weight_file")) == FUZZ_CASES
