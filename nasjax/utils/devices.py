"""Device meshes: the one place that says which devices a batch is split over.

Inference (predict, validate) splits a batch over this process's own devices: each process of a
multi-process run handles its own images. Training splits the global batch over every device of
every process, because the gradient is one all-reduced value. Both meshes have one axis, "data".
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

DATA_AXIS = "data"


def local_data_mesh() -> Mesh:
    """A 1-D mesh over this process's devices (inference)."""
    return Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))


def global_data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process; training)."""
    return Mesh(np.asarray(list(devices) if devices is not None else jax.devices()), (DATA_AXIS,))
