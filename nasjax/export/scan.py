"""What a SavedModel's graph may contain before nasjax runs it (docs/export.md#trusted).

A SavedModel is a program, not data: loading one runs its initialisers and `predict` runs its
functions, and TensorFlow has ops that read and write arbitrary files (`ReadFile`, `WriteFile`,
`SaveV2`, ...), print to files or run Python (`PyFunc`). So before `tf.saved_model.load`, the
runner parses `saved_model.pb` (the protobuf only, as TensorFlow's loader reads it; nothing is built
or run) and refuses an op type that nasjax's own exports never contain. An allowlist rather than
TensorFlow's own denylist (`saved_model_cli scan`: WriteFile, ReadFile, PrintV2), because the
denylist misses most of the dangerous ops and every new one.

`trusted=True` (nasjax.load, the runners) skips the scan for SavedModels made by other tools.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from nasjax.export.metadata import ExportedModelError

# The op types of every SavedModel nasjax exports (listed from the exports of tests/export: symbolic
# and fixed batch, with and without NMS; jax2tf puts the network itself in XlaCallModule ops, whose
# StableHLO XLA compiles and runs without file or Python access).
SAVED_MODEL_OPS = frozenset({
    # the main graph: inputs and variables
    "Placeholder", "VarHandleOp", "ReadVariableOp", "Const", "NoOp", "Identity",
    # calls of the library's functions
    "StatefulPartitionedCall", "PartitionedCall",
    # the network and NMS (jax2tf native serialisation)
    "XlaCallModule", "PreventGradient",
    # the per-image map of NMS with a symbolic batch (tf.map_fn)
    "While", "Less", "LogicalAnd", "AddV2", "Shape", "StridedSlice", "TensorListReserve",
    "TensorListFromTensor", "TensorListGetItem", "TensorListSetItem", "TensorListStack",
})

# The variable checkpoint ops (reading and writing files named by a tensor). Allowed only in the two
# functions TensorFlow writes for the checkpoint (`__inference__traced_save_N`, `..._restore_N`, called
# by the nodes the SaverDef names); never in, or called from, a function the model can run.
CHECKPOINT_OPS = frozenset({
    "SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin", "StaticRegexFullMatch",
    "Select", "Pack", "DisableCopyOnRead", "AssignVariableOp",
})

_CHECKPOINT_FUNCTION = re.compile(r"__inference__traced_(save|restore)_\d+")


class UntrustedSavedModelError(ExportedModelError):
    """A SavedModel whose graph holds ops that nasjax's exports never contain."""


def _function_names(value) -> list[str]:
    """The functions an AttrValue names (a `func` attr, a list of them, and nested in their attrs)."""
    found = []
    pending = ([value.func] if value.HasField("func") else []) + list(value.list.func)
    while pending:
        func = pending.pop()
        found.append(func.name)
        for inner in func.attr.values():
            pending += ([inner.func] if inner.HasField("func") else []) + list(inner.list.func)
    return found


def _calls(node) -> list[str]:
    """What a NodeDef runs: its op type and the functions its attrs name (While bodies, call targets)."""
    names = [node.op]
    for value in node.attr.values():
        names += _function_names(value)
    return names


def parse_saved_model(path: str | os.PathLike):
    """The `SavedModel` protobuf of a directory, read as TensorFlow's loader reads it (nothing run)."""
    from nasjax.export.versions import import_tf

    import_tf()
    from tensorflow.python.saved_model import loader_impl

    try:
        return loader_impl.parse_saved_model(str(path))
    except (OSError, ValueError) as e:  # missing, unreadable or not a SavedModel protobuf
        raise ExportedModelError(f"{path} is not a readable SavedModel ({str(e).strip()[:300]}); "
                                 "export it again (nasjax export)") from e


def check_saved_model_ops(path: str | os.PathLike) -> None:
    """Refuse (UntrustedSavedModelError, naming every such op) a SavedModel directory whose graph, in
    any meta graph, holds an op type outside SAVED_MODEL_OPS, or checkpoint ops (CHECKPOINT_OPS) where
    a model function can run them. Every function of the library is checked, called or not (the loader
    builds them all)."""
    path = Path(path)
    saved_model = parse_saved_model(path)
    found: dict[str, str] = {}  # a refused op → where it was first seen

    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        library = {f.signature.name: f for f in graph.library.function}
        # The checkpoint functions: those the SaverDef's save and restore nodes call.
        saver = meta_graph.saver_def
        saver_nodes = {saver.save_tensor_name.split(":")[0], saver.restore_op_name.split(":")[0]} - {""}
        checkpoint = set()
        for node in graph.node:
            for op in _calls(node):
                if op in library:
                    if node.name in saver_nodes and _CHECKPOINT_FUNCTION.fullmatch(op):
                        checkpoint.add(op)
                elif op not in SAVED_MODEL_OPS:
                    found.setdefault(op, f"the main graph, node '{node.name}'")
        callable_functions = set(meta_graph.object_graph_def.concrete_functions)
        for node in meta_graph.object_graph_def.nodes:
            kind = node.WhichOneof("kind")
            if kind == "function":
                callable_functions.update(node.function.concrete_functions)
            elif kind == "bare_concrete_function":
                callable_functions.add(node.bare_concrete_function.concrete_function_name)
        for name in sorted(checkpoint & callable_functions):
            found.setdefault(name, "the object graph (a checkpoint function the model can call)")
        for name, function in library.items():
            allowed = SAVED_MODEL_OPS | CHECKPOINT_OPS if name in checkpoint else SAVED_MODEL_OPS
            for node in function.node_def:
                for op in _calls(node):
                    # an op outside the allowlist, or a model function calling the checkpoint writer or reader
                    if op in checkpoint or (op not in library and op not in allowed):
                        found.setdefault(op, f"function '{name}', node '{node.name}'")
    if found:
        ops = ", ".join(f"'{op}' ({where})" for op, where in sorted(found.items()))
        raise UntrustedSavedModelError(
            f"{path / 'saved_model.pb'}: its graph runs {ops}, which nasjax exports never contain (a SavedModel "
            "is a program; this one may read or write files or run code). Refusing to load it; if you trust "
            "its source, load it with trusted=True (nasjax.load(path, trusted=True); docs/export.md#trusted)")
