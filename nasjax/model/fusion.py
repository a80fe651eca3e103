"""QARepVGG re-parameterisation on variables: training → partial → full (docs/architecture.md#fusion).

partial:  K = W3 * s_a + pad(W1) + I,  b = beta_a - mean_a * s_a + b1,  s_a = gamma_a / sqrt(var_a + eps)
full:     K' = K * s_p,                b' = (b - mean_p) * s_p + beta_p,  s_p from post_bn
Only QARepVGG blocks change; every other variable is copied. The arithmetic is done in float64 and
rounded once to float32, so fused variables are at least as exact as super-gradients' own fusion.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nasjax.model import yolo_nas as models

_ORDER = {form: i for i, form in enumerate(models.FORMS)}


def _bn_scale_shift(flat: dict, prefix: tuple, eps: float) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (np.asarray(flat[prefix + (n,)], np.float64) for n in ("scale", "bias", "mean", "var"))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _partial_kernel(flat: dict, p: tuple, block: models.QARepVGGBlock, eps: float):
    scale, shift = _bn_scale_shift(flat, p + ("branch_3x3", "bn"), eps)
    kernel = np.asarray(flat[p + ("branch_3x3", "conv", "kernel")], np.float64) * scale  # HWIO, per O
    kernel[1, 1] += np.asarray(flat[p + ("branch_1x1", "kernel")], np.float64)[0, 0]
    if block.use_residual_connection:
        kernel[1, 1] += np.eye(block.in_channels, block.out_channels)
    bias = shift + np.asarray(flat[p + ("branch_1x1", "bias")], np.float64)
    return kernel, bias


def _full_kernel(kernel: np.ndarray, bias: np.ndarray, flat: dict, p: tuple, eps: float):
    scale, shift = _bn_scale_shift(flat, p + ("post_bn",), eps)
    return kernel * scale, bias * scale + shift


def fuse_variables(variables: nnx.State, model: models.YoloNAS, target_form: str) -> tuple[nnx.GraphDef, nnx.State]:
    """Fuse `variables` of `model`'s form into `target_form`; returns the target model's (graphdef, variables).

    `model` may be abstract (`nnx.eval_shape`): only its structure is read.
    """
    source_form = model.form
    if target_form not in _ORDER:
        raise ValueError(f"unknown QARepVGG form {target_form!r}; expected one of {models.FORMS}")
    if _ORDER[target_form] < _ORDER[source_form]:
        raise ValueError(f"cannot un-fuse: a {source_form}-form model cannot become {target_form}-form")
    flat = {path: v.get_value() for path, v in nnx.to_flat_state(variables)}
    target = nnx.eval_shape(lambda: models.YoloNAS(model.config, target_form, rngs=nnx.Rngs(0)))
    graphdef, target_state = nnx.split(target)
    eps = model.config.bn_eps
    new_values: dict[tuple, np.ndarray] = {}
    for path, block in nnx.iter_modules(model):
        if not isinstance(block, models.QARepVGGBlock) or source_form == target_form:
            continue
        if source_form == "training":
            kernel, bias = _partial_kernel(flat, path, block, eps)
        else:
            kernel = np.asarray(flat[path + ("rbr_reparam", "kernel")], np.float64)
            bias = np.asarray(flat[path + ("rbr_reparam", "bias")], np.float64)
        if target_form == "full":
            kernel, bias = _full_kernel(kernel, bias, flat, path, eps)
        new_values[path + ("rbr_reparam", "kernel")] = kernel
        new_values[path + ("rbr_reparam", "bias")] = bias
    filled = []
    for path, variable in nnx.to_flat_state(target_state):
        value = new_values[path] if path in new_values else flat[path]
        filled.append((path, variable.replace(jnp.asarray(np.asarray(value, np.float32) if path in new_values else value))))
    return graphdef, nnx.from_flat_state(filled)


def fuse(model: models.YoloNAS, target_form: str = "full") -> models.YoloNAS:
    """A new model in `target_form` computing the same function as `model` (to float rounding)."""
    graphdef, state = fuse_variables(nnx.state(model), model, target_form)
    return nnx.merge(graphdef, state)
