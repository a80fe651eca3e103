"""nasjax.conv: the CPU kernel gradient by per-tap matmuls equals XLA's, the forward equals nnx.Conv."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nasjax.model.conv import Conv2d, conv2d

CASES = [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0), (3, 1, 0)]  # kernel, stride, padding


@pytest.mark.parametrize("kernel_size,stride,pad", CASES)
def test_gradients_equal_xla(kernel_size, stride, pad):
    rng = np.random.default_rng(kernel_size * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, 11, 9, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 5, 7)), jnp.float32)
    padding = ((pad, pad), (pad, pad))

    def xla(x, k):
        return jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y = xla(x, kernel)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    np.testing.assert_array_equal(conv2d(x, kernel, (stride, stride), padding), y)
    ours = jax.vjp(lambda a, b: conv2d(a, b, (stride, stride), padding), x, kernel)[1](g)
    theirs = jax.vjp(xla, x, kernel)[1](g)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_module_matches_nnx_conv_and_its_gradient():
    rngs = nnx.Rngs(0)
    ours = Conv2d(4, 6, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=True, rngs=rngs)
    reference = nnx.Conv(4, 6, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=True, rngs=nnx.Rngs(0))
    reference.kernel[...] = ours.kernel[...]
    reference.bias[...] = jnp.arange(6.0)
    ours.bias[...] = jnp.arange(6.0)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 16, 12, 4)), jnp.float32)
    np.testing.assert_array_equal(ours(x), reference(x))

    def loss(module):
        return jnp.sum(jnp.sin(module(x)))

    got, expected = nnx.grad(loss)(ours), nnx.grad(loss)(reference)
    np.testing.assert_allclose(got["kernel"][...], expected["kernel"][...], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["bias"][...], expected["bias"][...], rtol=1e-5, atol=1e-5)
    # bfloat16 inputs: the gradient keeps the kernel's dtype.
    bf = jax.grad(lambda k: jnp.sum(conv2d(x.astype(jnp.bfloat16), k, (1, 1), ((1, 1), (1, 1))).astype(jnp.float32)))(
        ours.kernel[...].astype(jnp.bfloat16))
    assert bf.dtype == jnp.bfloat16


def test_float64_kernel_gradient_keeps_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 6, 2)), jnp.float64)
        kernel = jnp.ones((3, 3, 2, 2), jnp.float64)
        got = jax.grad(lambda k: jnp.sum(conv2d(x, k, (1, 1), ((1, 1), (1, 1))) ** 2))(kernel)
        expected = jax.grad(lambda k: jnp.sum(jax.lax.conv_general_dilated(
            x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")) ** 2))(kernel)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12)
