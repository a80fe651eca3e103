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


def deterministic_state_dict(
    key_shapes: Mapping[str, tuple[int, ...]] | Iterable[tuple[str, tuple[int, ...]]], seed: int = 0
) -> dict[str, np.ndarray]:
    """A full state dict (name -> numpy array) for the given names and shapes."""
    items = key_shapes.items() if isinstance(key_shapes, Mapping) else key_shapes
    return {name: deterministic_tensor(name, shape, seed) for name, shape in items}


def seeded_images(seed: int, batch: int, height: int, width: int) -> np.ndarray:
    """Seeded test input: float32 RGB in [0, 1], NHWC. The reference script transposes it to NCHW."""
    rng = np.random.default_rng(seed)
    # A smooth random field plus noise looks more like an image than white noise does, so the
    # network's activations are not dominated by high-frequency content.
    coarse = rng.random((batch, height // 16 + 1, width // 16 + 1, 3), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :height, :width]
    noise = rng.random((batch, height, width, 3), dtype=np.float32)
    return np.clip(0.7 * smooth + 0.3 * noise, 0.0, 1.0).astype(np.float32)
