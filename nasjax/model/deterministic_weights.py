"""Deterministic, seeded weights for any YOLO-NAS state dict, keyed by tensor name.

Pure numpy on purpose: the reference script (`tests/reference/make_reference.py`) loads this file by
path inside the super-gradients environment, where jax is not installed, and the tests regenerate
the very same tensors without torch. Each tensor gets its own generator seeded from
sha256(seed, name), so a value depends only on the seed, the tensor's name and its shape, never on the
order in which keys are visited or on which other keys exist.

The distributions make every parameter matter: BatchNorm statistics and affine terms away from the
identity, bottleneck `alpha`s away from 1, biases away from 0. Conv kernels are scaled by fan-in so
activations stay in a range where float32 comparisons are meaningful through ~100 layers, and the
class-logit bias is chosen so that scores spread over (0, 1) instead of all sitting near 0.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

import numpy as np

# Mean of the class-prediction bias. super-gradients initialises it to -ln(99) (prior 0.01); with
# random kernels a less negative value gives a useful spread of scores around the usual
# confidence thresholds (0.01 .. 0.5), so post-processing tests see hundreds of candidates.
CLS_BIAS_MEAN = -4.5
# Kernel std is gain * sqrt(1 / fan_in). The three-branch QARepVGG sum and the residual bottlenecks
# grow activations by more than BatchNorm (with random statistics) takes back, so the body uses a gain
# below 1; the two prediction convs use a large one so that DFL softmaxes are far from uniform and the
# class logits spread over several units.
CONV_GAIN = 0.5
PRED_GAIN = 6.0


def _rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def deterministic_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The tensor stored under `name` (a super-gradients state-dict key) for this seed."""
    rng = _rng(seed, name)
    shape = tuple(int(s) for s in shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.asarray(rng.integers(0, 100_000), dtype=np.int64).reshape(shape)
    if leaf == "running_mean":
        return rng.normal(0.0, 0.2, shape).astype(np.float32)
    if leaf == "running_var":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if leaf == "alpha":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf == "weight" and len(shape) == 4:
        if ".upsample." in f".{name}":
            # ConvTranspose2d (in, out, 2, 2), stride 2: each output pixel sees one tap per input channel.
            fan_in = shape[0]
        else:
            fan_in = shape[1] * shape[2] * shape[3]
        gain = PRED_GAIN if name.endswith(("cls_pred.weight", "reg_pred.weight")) else CONV_GAIN
        return rng.normal(0.0, gain * np.sqrt(1.0 / fan_in), shape).astype(np.float32)
    if leaf == "weight":  # BatchNorm gamma
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf == "bias":
        if name.endswith("cls_pred.bias"):
            return rng.normal(CLS_BIAS_MEAN, 0.5, shape).astype(np.float32)
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    raise ValueError(f"no deterministic rule for tensor {name!r} of shape {shape}")


# super-gradients' YoloNASDFLHead._initialize_biases: class prior 0.01.
PRIOR_CLS_BIAS = -float(np.log((1 - 0.01) / 0.01))


def scratch_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The tensor under `name` as training from scratch starts it: PyTorch's default initialisation
    (what super-gradients uses) drawn from the same per-name seeded generator.

    Conv kernels U(±1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5); fan_in of a ConvTranspose2d
    kernel is its dim 1 x taps, as PyTorch computes it); BatchNorm identity (gamma 1, beta 0, mean 0,
    var 1); QARepVGG / bottleneck alphas 1; the class bias at the 0.01 prior like the reference head.
    One deviation, for simplicity: the few conv biases (QARepVGG 1x1 branches, prediction convs)
    start at 0 instead of U(±1/sqrt(fan_in)).
    """
    shape = tuple(int(s) for s in shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if leaf in ("running_var", "alpha") or (leaf == "weight" and len(shape) != 4):
        return np.ones(shape, np.float32)
    if leaf == "running_mean":
        return np.zeros(shape, np.float32)
    if leaf == "weight":
        fan_in = int(np.prod(shape[1:]))
        bound = 1.0 / np.sqrt(fan_in)
        return _rng(seed, name).uniform(-bound, bound, shape).astype(np.float32)
    if leaf == "bias":
        value = PRIOR_CLS_BIAS if name.endswith("cls_pred.bias") else 0.0
        return np.full(shape, value, np.float32)
    raise ValueError(f"no initialisation rule for tensor {name!r} of shape {shape}")


INITS = {"test": deterministic_tensor, "scratch": scratch_tensor}


def deterministic_state_dict(
    key_shapes: Mapping[str, tuple[int, ...]] | Iterable[tuple[str, tuple[int, ...]]], seed: int = 0,
    init: str = "test",
) -> dict[str, np.ndarray]:
    """A full state dict (name -> numpy array) for the given names and shapes.

    init: "test" (the default: every parameter away from its identity value, for parity tests) or
    "scratch" (`scratch_tensor`: the initialisation training from scratch starts from).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    make = INITS[init]
    items = key_shapes.items() if isinstance(key_shapes, Mapping) else key_shapes
    return {name: make(name, shape, seed) for name, shape in items}


def seeded_images(seed: int, batch: int, height: int, width: int) -> np.ndarray:
    """Seeded test input: float32 RGB in [0, 1], NHWC. The reference script transposes it to NCHW."""
    rng = np.random.default_rng(seed)
    # A smooth random field plus noise looks more like an image than white noise does, so the
    # network's activations are not dominated by high-frequency content.
    coarse = rng.random((batch, height // 16 + 1, width // 16 + 1, 3), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :height, :width]
    noise = rng.random((batch, height, width, 3), dtype=np.float32)
    return np.clip(0.7 * smooth + 0.3 * noise, 0.0, 1.0).astype(np.float32)
