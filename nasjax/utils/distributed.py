"""Several JAX processes as one run (jax.distributed): starting it, and the few things the processes
must agree on (docs/scale_out.md#multi-process-jax).

A run of N processes (one per host of a TPU pod slice, one per GPU, or N on one CPU machine) calls
`initialize` before anything touches a device; jax then sees every process's devices (`jax.devices()`)
and each process its own (`jax.local_devices()`). What is shared between the processes is small and
goes through the coordinator as pickled Python objects (`allgather`): each process works on its own
share of the data (`process_rows`, `share`: contiguous blocks, so that results gathered in process
order are in the data's order), and process 0 alone prints and writes files
(`is_primary`). A decision only process 0 can make (claiming a numbered run folder) is made there and
given to the others (`on_primary`), and an error raised on one process is raised on every process
(`allgather_call`), so that a bad value ends the whole run at once with the same message instead of
leaving the others waiting.

Why a timeout: jax waits for every process at start (`initialization_timeout`), notices a process that
died by its missing heartbeats, and waits for every process at exit (a barrier); all three are bounded
by `timeout` seconds, after which jax ends the waiting processes (they abort with "the JAX distributed
service detected fatal errors"), so a peer that never comes or dies never leaves the others hanging.
"""
from __future__ import annotations

import inspect
import pickle
import re
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 300  # jax's own default wait for every process to connect (TPU pod workers start slowly)
_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]+)$")


class DistributedSettingsError(ValueError):
    """A multi-process setting that cannot work; the message says what to give instead."""


def check_settings(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                   timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Raise DistributedSettingsError for a value jax would reject late or obscurely (or hang on)."""
    if coordinator is not None:
        match = _ADDRESS.match(str(coordinator))
        if not match or not 0 < int(match["port"]) < 65536:
            raise DistributedSettingsError(
                f"coordinator={coordinator}: expected host:port of process 0 (e.g. 10.0.0.1:1234 or "
                "127.0.0.1:1234 on one machine), with a port from 1 to 65535")
    if num_processes is not None and (not _is_int(num_processes) or num_processes < 1):
        raise DistributedSettingsError(f"num_processes={num_processes}: expected a whole number of processes >= 1")
    if process_id is not None and (not _is_int(process_id) or process_id < 0):
        raise DistributedSettingsError(f"process_id={process_id}: expected this process's number, from 0")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise DistributedSettingsError(
            f"process_id={process_id} with num_processes={num_processes}: process ids run from 0 to "
            f"{num_processes - 1}; give each process its own id below num_processes")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise DistributedSettingsError(f"distributed_timeout={timeout}: expected a number of seconds > 0")


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, auto: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
               local_device_ids: Sequence[int] | None = None) -> bool:
    """Start jax.distributed for this process; whether it was started (False: a single-process run).

    Nothing happens unless one of coordinator ("host:port" of process 0), num_processes, process_id is
    given or `auto` is true; missing values are then detected by jax from the cluster (TPU pod slice,
    SLURM, Open MPI, Kubernetes...), which is all a TPU pod needs (`auto=True`). On CPU the
    cross-process collectives are gloo's. Must run before anything touches a device.
    """
    check_settings(coordinator, num_processes, process_id, timeout)
    if coordinator is None and num_processes is None and process_id is None and not auto:
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    _use_gloo_on_cpu(jax)
    wait = max(1, int(round(timeout)))
    options = {"initialization_timeout": wait, "heartbeat_timeout_seconds": wait, "shutdown_timeout_seconds": wait}
    accepted = inspect.signature(jax.distributed.initialize).parameters
    options = {k: v for k, v in options.items() if k in accepted}  # only what the installed jax takes
    if local_device_ids is not None:
        options["local_device_ids"] = list(local_device_ids)
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, **options)
    except RuntimeError as error:
        if "before" in str(error):  # the backend is already up: too late to join a multi-process run
            raise DistributedSettingsError(
                "jax.distributed must start before anything uses a device; call "
                "nasjax.utils.distributed.initialize first thing in the process") from error
        raise
    except ValueError as error:  # jax could not detect what was not given (no cluster around)
        raise DistributedSettingsError(
            f"no multi-process cluster detected (jax: {str(error).rstrip('.')}); give coordinator=HOST:PORT, "
            "num_processes=N and process_id=I on each process (jax detects them on TPU pods, SLURM, Open MPI "
            "and Kubernetes)") from error
    return True


def _use_gloo_on_cpu(jax) -> None:
    """CPU collectives across processes through gloo, unless the user chose an implementation (mpi).
    The option's name and default have changed between jax releases: set only what exists."""
    values = getattr(jax.config, "values", {})
    if "jax_cpu_collectives_implementation" in values:
        if values["jax_cpu_collectives_implementation"] in (None, "", "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    elif "jax_cpu_enable_gloo_collectives" in values:  # older jax
        jax.config.update("jax_cpu_enable_gloo_collectives", True)


# --- what the processes share ------------------------------------------------------------------------


def process_count() -> int:
    import jax

    return jax.process_count()


def process_index() -> int:
    import jax

    return jax.process_index()


def is_primary() -> bool:
    """Whether this is the process that prints and writes (process 0)."""
    return process_index() == 0


def process_rows(rows: int, index: int | None = None, count: int | None = None) -> slice:
    """Process `index`'s share of `rows` items in a run of `count` processes (default this process): a
    contiguous block, so that the shares of all processes concatenated in process order are the items in
    their order. The one split of the package: a dataset's `shard`, the images of a multi-process
    predict (`share`), and the rows of a global training batch (the block that
    `jax.make_array_from_process_local_data` expects on a 1-D mesh over the processes' devices)."""
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    return slice(index * rows // count, (index + 1) * rows // count)


def share(items: Sequence[T], index: int | None = None, count: int | None = None) -> list[T]:
    """This process's share of `items` (`process_rows`); all of them in a single process."""
    return list(items[process_rows(len(items), index, count)])


def allgather(obj) -> list:
    """Every process's `obj`, in process order; [obj] in a single process.

    The objects are of different sizes per process, so they travel pickled, as uint8 arrays padded to the
    longest, through `process_allgather`."""
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


def allgather_call(fn: Callable[[], T]) -> list[T]:
    """`fn()` on every process, its values gathered to every process (process order). If it raised on
    any process, the first such error (in process order) is raised on every process, so that all of
    them stop with the same message instead of waiting for the one that failed."""
    if process_count() == 1:
        return [fn()]
    try:
        outcome = (True, fn())
    except Exception as error:  # noqa: BLE001 — handed to every process, then raised
        outcome = (False, _picklable(error))
    outcomes = allgather(outcome)
    for ok, value in outcomes:
        if not ok:
            raise value
    return [value for _, value in outcomes]


def on_primary(fn: Callable[[], T]) -> T | None:
    """`fn()` on process 0 only; its value there, None on the others. An error it raises is raised on
    every process."""
    value = None

    def call() -> None:
        nonlocal value
        if is_primary():
            value = fn()

    allgather_call(call)  # only whether it failed travels
    return value


def broadcast(obj: T) -> T:
    """Process 0's `obj`, on every process."""
    return allgather(obj)[0]


def _picklable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 — an error type that cannot travel: its message does
        return RuntimeError(f"{type(error).__name__}: {error}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
