"""super-gradients state dict (name -> array) → nasjax variables, in any of the three QARepVGG forms.

The Flax modules mirror the reference's module paths, so the mapping is mechanical:
`a.b.0.c.weight` is the variable at path ('a', 'b', 0, 'c', LEAF), where LEAF renames PyTorch's
parameter names (conv `weight` → `kernel`, transposed OIHW → HWIO; ConvTranspose `weight` IOHW → HWIO;
BatchNorm `weight`/`running_mean`/`running_var` → `scale`/`mean`/`var`). It is computed from the model's
own variables, never kept as a table.

Two kinds of reference tensors are consumed without becoming variables, and said so in `IGNORED`:
BatchNorm `num_batches_tracked` counters and, in the training form, the `rbr_reparam` placeholders
(random values that super-gradients registers but never uses before fusion).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nasjax.configs import VARIANTS, YoloNASConfig, get_config

IGNORED = {
    "num_batches_tracked": "BatchNorm step counter; unused because the momentum is fixed",
    "rbr_reparam": "training-form placeholder: random values super-gradients never uses before fusion",
}

_BN_LEAVES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


class StateDictError(ValueError):
    """A state dict that does not fit a YOLO-NAS model; the message names the offending tensors."""


def _models():
    from nasjax.model import yolo_nas as models  # late: converters must import without building modules

    return models


@functools.lru_cache(maxsize=None)
def _abstract(variant: str, form: str, num_classes: int):
    models = _models()
    config = get_config(variant, num_classes=num_classes)
    model = nnx.eval_shape(lambda: models.YoloNAS(config, form, rngs=nnx.Rngs(0)))
    modules = {path: module for path, module in nnx.iter_modules(model)}
    graphdef, state = nnx.split(model)
    return config, graphdef, state, modules


def _torch_name(path: tuple, modules: Mapping[tuple, Any]) -> tuple[str, str]:
    """(reference tensor name, kind) for the variable at `path`; kind picks the transpose."""
    *module_path, leaf = path
    module = modules[tuple(module_path)]
    prefix = ".".join(str(p) for p in module_path)
    if isinstance(module, nnx.BatchNorm):
        return f"{prefix}.{_BN_LEAVES[leaf]}", "vector"
    if leaf == "kernel":
        kind = "conv_transpose" if isinstance(module, _models().ConvTranspose2x2) else "conv"
        return f"{prefix}.weight", kind
    return ".".join(str(p) for p in path), "vector"


def _to_torch_layout(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # HWIO -> OIHW
        return np.transpose(value, (3, 2, 0, 1))
    if kind == "conv_transpose":  # HWIO -> IOHW
        return np.transpose(value, (2, 3, 0, 1))
    return value


def _from_torch_layout(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # OIHW -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    if kind == "conv_transpose":  # IOHW -> HWIO
        return np.transpose(value, (2, 3, 0, 1))
    return value


def _torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    return tuple(_to_torch_layout(np.empty(shape, dtype=np.bool_), kind).shape)


def reference_key_shapes(variant: str, form: str, num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """Every tensor of super-gradients' state dict for this model (names and PyTorch shapes),
    including the entries nasjax ignores, so it can be checked against a reference listing."""
    _, _, state, modules = _abstract(variant, form, num_classes)
    shapes: dict[str, tuple[int, ...]] = {}
    for path, variable in nnx.to_flat_state(state):
        name, kind = _torch_name(path, modules)
        shapes[name] = _torch_shape(tuple(variable.get_value().shape), kind)
    models = _models()
    for path, module in modules.items():
        prefix = ".".join(str(p) for p in path)
        if isinstance(module, nnx.BatchNorm):
            shapes[f"{prefix}.num_batches_tracked"] = ()
        if isinstance(module, models.QARepVGGBlock) and module.form == "training":
            shapes[f"{prefix}.rbr_reparam.weight"] = (module.out_channels, module.in_channels, 3, 3)
            shapes[f"{prefix}.rbr_reparam.bias"] = (module.out_channels,)
    return shapes


def detect_form(keys) -> str:
    keys = list(keys)
    if any(k.endswith("branch_3x3.conv.weight") for k in keys):
        return "training"
    if any(k.endswith("post_bn.weight") for k in keys):
        return "partial"
    if any(k.endswith("rbr_reparam.weight") for k in keys):
        return "full"
    raise StateDictError(
        "this is not a YOLO-NAS state dict: no QARepVGG tensors (`...branch_3x3.conv.weight`, "
        "`...post_bn.weight` or `...rbr_reparam.weight`) found among its "
        f"{len(keys)} keys (first: {', '.join(keys[:3]) or 'none'})"
    )


def detect_num_classes(shapes: Mapping[str, tuple[int, ...]]) -> int:
    key = "heads.head1.cls_pred.weight"
    if key not in shapes:
        raise StateDictError(f"missing {key!r}: cannot tell the number of classes; is this a YOLO-NAS state dict?")
    return int(shapes[key][0])


def _mismatches(expected: Mapping[str, tuple], shapes: Mapping[str, tuple]) -> list[str]:
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k}: expected {expected[k]}, got {shapes[k]}" for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    return [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected] + [f"wrong shape {w}" for w in wrong]


def detect_variant(shapes: Mapping[str, tuple[int, ...]], form: str | None = None) -> str:
    """The variant whose full key/shape set equals the state dict's; errors name what differs."""
    form = form or detect_form(shapes)
    num_classes = detect_num_classes(shapes)
    # Building a variant's full key list costs an abstract model (seconds for L); try first the variant
    # whose first CSP width matches, so a well-formed file builds one list instead of all three.
    hint = shapes.get("backbone.stage1.blocks.conv1.conv.weight", (None,))[0]
    candidates = sorted(VARIANTS, key=lambda v: get_config(v).stages[0].hidden_channels != hint)
    report = {}
    for variant in candidates:
        problems = _mismatches(reference_key_shapes(variant, form, num_classes), shapes)
        if not problems:
            return variant
        report[variant] = problems
    closest = min(report, key=lambda v: len(report[v]))
    details = "; ".join(report[closest][:8])
    more = len(report[closest]) - 8
    raise StateDictError(
        f"the {form}-form state dict ({len(shapes)} tensors, {num_classes} classes) matches no YOLO-NAS variant. "
        f"Closest is {closest}, with {len(report[closest])} differences: {details}"
        + (f" ... and {more} more" if more > 0 else "")
    )


def state_dict_to_variables(
    state_dict: Mapping[str, Any], variant: str | None = None, form: str | None = None
) -> tuple[YoloNASConfig, str, nnx.GraphDef, nnx.State]:
    """(config, form, graphdef, variables) for a reference state dict. Every key is consumed or ignored
    for a reason in `IGNORED`; anything else is a `StateDictError` naming the tensors."""
    if not isinstance(state_dict, Mapping):
        raise StateDictError(f"expected a mapping from tensor names to arrays, got {type(state_dict).__name__}")
    arrays = {str(k): np.asarray(v) for k, v in state_dict.items()}
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    form = form or detect_form(arrays)
    num_classes = detect_num_classes(shapes)
    if variant is None:
        variant = detect_variant(shapes, form)
    elif variant not in VARIANTS:
        raise StateDictError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    expected = reference_key_shapes(variant, form, num_classes)
    problems = _mismatches(expected, shapes)
    if problems:
        raise StateDictError(
            f"state dict does not fit {variant} ({form} form, {num_classes} classes): "
            + "; ".join(problems[:10])
            + (f" ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        )
    config, graphdef, abstract_state, modules = _abstract(variant, form, num_classes)
    filled = []
    for path, variable in nnx.to_flat_state(abstract_state):
        name, kind = _torch_name(path, modules)
        value = _from_torch_layout(arrays[name], kind).astype(variable.get_value().dtype)
        filled.append((path, variable.replace(jnp.asarray(value))))
    return config, form, graphdef, nnx.from_flat_state(filled)


def variables_to_state_dict(model) -> dict[str, np.ndarray]:
    """The inverse: a reference-named state dict (numpy, PyTorch layouts) of a nasjax model's variables.
    Ignored entries (`IGNORED`) are not produced."""
    config = model.config
    _, _, _, modules = _abstract(config.name, model.form, config.num_classes)
    out = {}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        name, kind = _torch_name(path, modules)
        out[name] = np.ascontiguousarray(_to_torch_layout(np.asarray(variable.get_value()), kind))
    return out
