"""The training step as pure functions: optimizer, schedule, EMA and the jitted step. No I/O.

Everything the step needs is an argument, so the step is one jitted function of
(State, images, targets) -> (State, loss terms), as in the flax examples: the loop (trainer.py) owns
the files and the progress bar, and this module can be compiled, benchmarked and tested on its own
(benchmarks/train.py, the data-parallel test).

The recipe (docs/training.md, "Recipe"): AdamW with PyTorch's betas and eps, weight decay on the conv
kernels only (super-gradients' zero_weight_decay_on_bias_and_bn), linear warm-up then cosine decay,
and an EMA of the weights and BatchNorm statistics with super-gradients' "threshold" decay.

Data parallel (docs/training.md, "Step"): the batch is split over the "data" axis of a
`nasjax.utils.devices.global_data_mesh` and the state replicated; XLA inserts the gradient all-reduce
and the cross-device BatchNorm statistics, so the result equals a one-device step on the same global
batch to float rounding.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nasjax.data.targets import LossTargets
from nasjax.train.config import COSINE_FINAL_LR_RATIO, EMA_DECAY, WARMUP_INITIAL_LR, WARMUP_STEPS, WEIGHT_DECAY
from nasjax.train.loss import PPYoloELossConfig, ppyoloe_loss
from nasjax.utils.devices import DATA_AXIS

COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class State:
    params: Any
    rest: Any  # BatchNorm statistics (everything that is not an nnx.Param)
    opt_state: Any
    ema_params: Any
    ema_rest: Any
    step: Any


jax.tree_util.register_dataclass(
    State, data_fields=["params", "rest", "opt_state", "ema_params", "ema_rest", "step"], meta_fields=[]
)


def learning_rate_schedule(lr: float, total_steps: int, warmup_steps: int = WARMUP_STEPS,
                           warmup_initial_lr: float = WARMUP_INITIAL_LR,
                           final_lr_ratio: float = COSINE_FINAL_LR_RATIO) -> optax.Schedule:
    """Linear warm-up from warmup_initial_lr to lr over warmup_steps, then cosine to lr * final_lr_ratio."""
    warmup_steps = max(0, int(warmup_steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=warmup_initial_lr if warmup_steps else lr, peak_value=lr, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * final_lr_ratio,
    )


def make_optimizer(schedule: optax.Schedule, weight_decay: float = WEIGHT_DECAY) -> optax.GradientTransformation:
    """AdamW (PyTorch's betas and eps) with weight decay on the kernels only (not on biases nor BN)."""
    def decay_mask(params):
        return jax.tree.map(lambda p: p.ndim > 1, params)

    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=decay_mask)


def ema_decay_at(step, decay: float = EMA_DECAY):
    """super-gradients' "threshold" EMA decay: min(decay, (1 + step) / (10 + step))."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def initial_state(params, rest, optimizer: optax.GradientTransformation) -> State:
    """Step 0: the EMA starts at the weights."""
    return State(params, rest, optimizer.init(params), params, rest, jnp.zeros((), jnp.int32))


def make_train_step(train_graphdef, optimizer, loss_config: PPYoloELossConfig, ema_decay: float = EMA_DECAY,
                    *, compute_dtype=None, mesh: Mesh | None = None):
    """The jitted step: (State, images, LossTargets) -> (State, loss terms). It donates its State.

    compute_dtype: None (float32) or jnp.bfloat16: the forward and backward pass run in that dtype on a
    copy of the float32 weights (the gradient flows back through the cast to the float32 master
    weights); BatchNorm statistics stay float32 and the loss is computed in float32.
    mesh: with a mesh, the state comes out replicated over it (the batch is expected split over its
    "data" axis); XLA then all-reduces the gradients and BatchNorm's batch statistics.
    """

    def step_fn(state: State, images, targets: LossTargets):
        def loss_fn(params, rest):
            # The statistics BatchNorm updates must be Variables of this trace, not of the jit around it.
            rest = jax.tree.map(lambda x: x, rest)
            x = images
            if compute_dtype is not None:
                params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
                x = images.astype(compute_dtype)
            model = nnx.merge(train_graphdef, params, rest)
            # The loss in float32 at least (bfloat16 outputs are promoted, float64 ones kept).
            outputs = jax.tree.map(lambda o: o.astype(jnp.promote_types(o.dtype, jnp.float32)), model(x))
            loss, terms = ppyoloe_loss(outputs, targets, loss_config)
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss, (terms, new_rest)

        grads, (terms, new_rest) = jax.grad(loss_fn, has_aux=True)(state.params, state.rest)
        new_rest = jax.tree.map(lambda n, o: n.astype(o.dtype), new_rest, state.rest)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        d = ema_decay_at(state.step.astype(jnp.float32), ema_decay)
        mix = lambda e, p: e * d + (1.0 - d) * p  # noqa: E731
        ema_params = jax.tree.map(mix, state.ema_params, params)
        ema_rest = jax.tree.map(mix, state.ema_rest, new_rest)
        return State(params, new_rest, opt_state, ema_params, ema_rest, state.step + 1), terms

    if mesh is None:
        return jax.jit(step_fn, donate_argnums=0)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step_fn, donate_argnums=0, out_shardings=(replicated, replicated))


@functools.lru_cache(maxsize=8)
def cached_train_step(train_graphdef, schedule_args: tuple, weight_decay: float, loss_config: PPYoloELossConfig,
                      ema_decay: float, compute_dtype, mesh: Mesh | None):
    """`make_train_step` for these settings, made once per process: runs with the same model, schedule
    and mesh (resumes, repeated calls in a notebook, tests) reuse the compiled step."""
    optimizer = make_optimizer(learning_rate_schedule(*schedule_args), weight_decay)
    return make_train_step(train_graphdef, optimizer, loss_config, ema_decay, compute_dtype=compute_dtype,
                           mesh=mesh)


def make_eval_loss(eval_graphdef, loss_config: PPYoloELossConfig):
    """Jitted (params, rest, images, targets) -> loss terms, BatchNorm in eval mode (the validation loss)."""
    @jax.jit
    def eval_loss(params, rest, images, targets):
        model = nnx.merge(eval_graphdef, params, rest)
        return ppyoloe_loss(model(images), targets, loss_config)[1]

    return eval_loss


def replicate(tree, mesh: Mesh):
    """Own copies of `tree`, replicated over the mesh (the step donates its input)."""
    return jax.device_put(jax.tree.map(jnp.array, tree), NamedSharding(mesh, PartitionSpec()))


def local_copy(tree):
    """`tree` with every array that spans several processes (replicated over a multi-process mesh)
    replaced by this process's own full copy of it, on one of its devices (no communication): what
    host-side code (saving, validating on this process's devices) can read. Other leaves as they are."""
    def local(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree.map(local, tree)


def shard_batch(mesh: Mesh, images: np.ndarray, targets: LossTargets) -> tuple[jax.Array, LossTargets]:
    """Global arrays split along the batch over the mesh's "data" axis, from this process's rows: the
    whole batch in a single process; in a multi-process run this process's contiguous block of the
    global batch (`nasjax.utils.distributed.process_rows`, what the `Loader` of a process loads)."""
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def put(array):
        return jax.make_array_from_process_local_data(sharding, np.ascontiguousarray(array))

    return put(images), LossTargets(*map(put, targets))
