"""Multi-host validation: each process predicts its own share of the images (the dataset is sharded by
process), and the metrics need all of them, so the per-process results are gathered to every process
before scoring. Only process 0 prints and writes files (validator.py).

The results are Python objects (EvalImages, record lists, timings) of different sizes per process, so
they travel pickled, as uint8 arrays padded to the longest, through `process_allgather`.
"""
from __future__ import annotations

import pickle

import numpy as np


def process_count() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """Whether this is the process that prints and writes (process 0)."""
    import jax

    return jax.process_index() == 0


def allgather(obj) -> list:
    """Every process's `obj`, in process order; [obj] in a single process."""
    import jax

    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    payload = np.frombuffer(pickle.dumps(obj), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([payload.size], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: payload.size] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [pickle.loads(gathered[i, : int(sizes[i])].tobytes()) for i in range(len(sizes))]
