"""2-D convolution whose kernel gradient is computed with matrix products on the CPU.

XLA:CPU computes the kernel gradient of a convolution (the "backward filter" convolution, which
contracts over batch and space) 3 to 10 times slower than the forward convolution of the same layer;
for YOLO-NAS S at 640x640 it made the backward pass 6x the forward one. Here that gradient is one
matrix product per kernel tap instead, sum over (b, y, x) of x_pad[b, y*s + i, x*s + j, :]^T g[b, y, x, :],
which XLA:CPU runs at matmul speed (2.6-10x faster per layer). The forward pass and the input gradient
are XLA's own convolutions, so outputs are bit-identical to `nnx.Conv`; the kernel gradient equals XLA's
to float32 summation order (~1e-5 relative). Other backends (GPU, TPU) keep XLA's kernel gradient.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

_NHWC = ("NHWC", "HWIO", "NHWC")


def _forward(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]):
    """NHWC x HWIO convolution with explicit padding ((top, bottom), (left, right)); no dilation, no groups."""
    return _forward(x, kernel, strides, padding)


def kernel_gradient(x, g, kernel_shape, strides, padding):
    """d(sum(conv(x, k) * g)) / dk, one (C_in, B*H*W) @ (B*H*W, C_out) product per tap."""
    kh, kw, cin, cout = kernel_shape
    sy, sx = strides
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    b, ho, wo, _ = g.shape
    g2 = g.reshape(-1, cout)
    accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 sums in float32, float64 stays
    taps = []
    for i in range(kh):
        for j in range(kw):
            window = jax.lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * sy + 1, j + (wo - 1) * sx + 1, cin),
                                   (1, sy, sx, 1))
            taps.append(jnp.dot(window.reshape(-1, cin).T, g2, preferred_element_type=accumulate))
    return jnp.stack(taps).reshape(kernel_shape)


def _conv2d_fwd(x, kernel, strides, padding):
    return _forward(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: _forward(x_, kernel, strides, padding), x)
    (dx,) = input_vjp(g)
    dk = kernel_gradient(x, g, kernel.shape, strides, padding).astype(kernel.dtype)
    return dx, dk


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class Conv2d(nnx.Conv):
    """`nnx.Conv` (same variables, same outputs) that trains faster on the CPU: see the module docstring.
    Only for what YOLO-NAS uses: 2-D, explicit padding, no dilation, no groups."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        if jax.default_backend() != "cpu" or inputs.ndim != 4:
            return super().__call__(inputs)
        kernel = self.kernel[...]
        dtype = jnp.result_type(inputs, kernel) if self.dtype is None else self.dtype
        strides = self.strides if isinstance(self.strides, tuple) else (self.strides,) * 2
        y = conv2d(inputs.astype(dtype), kernel.astype(dtype), tuple(strides), tuple(map(tuple, self.padding)))
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y
