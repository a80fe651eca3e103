"""JAX's persistent compilation cache, shared by a test and the processes it starts, so that a program
that both compile (the same jitted function, shapes and static arguments) is compiled once: the second
process loads it (docs/scale_out.md#compilation-cache).

    with shared_compilation_cache(folder) as env:   # this process writes to and reads from `folder` ...
        subprocess.Popen(..., env={**os.environ, **env})   # ... and so does the child given `env`
"""
from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def shared_compilation_cache(folder: Path, min_compile_time_secs: float = 0):
    """This process caches the programs it compiles (those that took at least min_compile_time_secs; by
    default every one) in `folder` until the block ends; yields the environment variables that give a
    child process the same cache. JAX opens its cache once per process, at the first compile that finds
    a folder configured: it is reset on entry (an earlier test file in this process may have opened
    another folder) and on exit (so that later files do not keep writing into this one)."""
    import jax
    from jax._src import compilation_cache

    before = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_secs)
    compilation_cache.reset_cache()
    try:
        yield {"JAX_COMPILATION_CACHE_DIR": str(folder),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(min_compile_time_secs)}
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
        compilation_cache.reset_cache()
