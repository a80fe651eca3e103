"""Which jax and TensorFlow the export route works with, checked before any conversion
(docs/export.md#versions), and importing TensorFlow with a clear error when it is missing.

jax2tf writes the network as StableHLO that TensorFlow must read back, so the two have to agree on
the serialised form. One set is verified end to end: jax 0.10.0 with TF 2.21.0. jax 0.10.1 and
0.10.2 serialise `lax.top_k` (the NMS) as `vhlo.composite_v2`, which TF 2.21 cannot read.

* the verified jax and TF: no check fails, nothing is said;
* a known-broken jax and a graph that holds top_k (nms=True): `ExportError` before any work, naming
  the jax export needs and the pip command that installs it;
* any other combination (a newer jax, e.g. 0.11 on a GPU machine; a known-broken jax without NMS, whose
  graph has no top_k; another TF): an `ExportVersionWarning`, and the export is tried; if TF then fails
  to read the serialised module, `translate_failures` turns that into the same `ExportError`.
"""
from __future__ import annotations

import contextlib
import os
import warnings

from nasjax.export.options import ExportDependencyError, ExportError

VERIFIED_JAX = ("0.10.0",)
VERIFIED_TENSORFLOW = ("2.21.0",)
# jax versions whose StableHLO for lax.top_k TF 2.21 cannot deserialise ("unregistered operation
# 'vhlo.composite_v2'"); graphs without top_k converted with them.
TOP_K_BROKEN_JAX = ("0.10.1", "0.10.2")
INSTALL_JAX = "pip install 'jax==0.10.0' 'jaxlib==0.10.0'"
INSTALL_EXPORT = "pip install -c constraints.txt 'nasjax[export]'"
INSTALL_EXTRA = "pip install 'nasjax[export]'"
# What TF says when it cannot read jax2tf's serialised module (lower case).
_DESERIALIZATION_MARKERS = ("vhlo", "unregistered operation", "stablehlo", "xlacallmodule", "deserializ",
                            "deserialis", "failed to parse", "unknown op")


class ExportVersionWarning(UserWarning):
    """The installed jax or TensorFlow is not the set verified for export; the export is tried anyway."""


def import_tf():
    """tensorflow, quietly (its C++ INFO logs otherwise fill the terminal); `ExportDependencyError`
    (an ImportError) naming the `export` extra when it is not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ExportDependencyError(f"export needs TensorFlow, which is not installed ({e}): {INSTALL_EXTRA} "
                                    f"(or, with the verified versions, {INSTALL_EXPORT})") from e
    return tf


def installed_versions() -> tuple[str, str]:
    """(jax.__version__, tensorflow.__version__); imports TensorFlow."""
    import jax

    return jax.__version__, import_tf().__version__


def _needs(jax_version: str, tf_version: str) -> str:
    return (f"export is verified with jax {VERIFIED_JAX[0]} and tensorflow {VERIFIED_TENSORFLOW[0]} "
            f"(installed: jax {jax_version}, tensorflow {tf_version}); install the verified set with "
            f"`{INSTALL_JAX}` or `{INSTALL_EXPORT}` (docs/export.md#versions)")


def check_versions(uses_top_k: bool, jax_version: str | None = None, tf_version: str | None = None,
                   symbolic_batch: bool = False) -> bool:
    """Check the installed jax and TF before converting; `uses_top_k`: the graph holds lax.top_k (NMS);
    `symbolic_batch`: a SavedModel without a fixed batch. Raises `ExportError` for a jax known to fail
    this graph; warns (`ExportVersionWarning`) for an unverified set and returns False; returns True
    for the verified set."""
    if jax_version is None or tf_version is None:
        installed = installed_versions()
        jax_version = jax_version or installed[0]
        tf_version = tf_version or installed[1]
    if uses_top_k and jax_version in TOP_K_BROKEN_JAX:
        raise ExportError(
            f"jax {jax_version} cannot export NMS: it serialises lax.top_k as vhlo.composite_v2, which "
            f"tensorflow {tf_version} cannot read. Export needs jax {VERIFIED_JAX[0]}: `{INSTALL_JAX}` or "
            f"`{INSTALL_EXPORT}` (docs/export.md#versions); or export without nms (the runners do NMS on the host)"
        )
    if symbolic_batch and jax_version not in VERIFIED_JAX:
        # Measured with jax 0.11.2 + TF 2.21: the batch shape assertions become vhlo.custom_call_v2, the
        # SavedModel is written without an error and fails when called. Refuse rather than write it.
        raise ExportError(
            f"a SavedModel with a symbolic batch is verified with jax {VERIFIED_JAX[0]} only: with jax {jax_version} "
            f"tensorflow {tf_version} writes one that fails when called. Give a fixed batch (batch=N), or install "
            f"`{INSTALL_JAX}` / `{INSTALL_EXPORT}` (docs/export.md#versions)"
        )
    if jax_version in VERIFIED_JAX and tf_version in VERIFIED_TENSORFLOW:
        return True
    warnings.warn(f"{_needs(jax_version, tf_version)}; trying the export anyway", ExportVersionWarning, stacklevel=3)
    return False


def is_deserialization_failure(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in _DESERIALIZATION_MARKERS)


@contextlib.contextmanager
def translate_failures(verified: bool, jax_version: str | None = None, tf_version: str | None = None):
    """Around a conversion: with an unverified jax / TF, TF's failure to read the serialised StableHLO
    becomes an `ExportError` naming the versions export needs. Other errors, and every error with the
    verified set, pass unchanged."""
    try:
        yield
    except ExportError:
        raise
    except Exception as e:
        if verified or not is_deserialization_failure(e):
            raise
        if jax_version is None or tf_version is None:
            jax_version, tf_version = installed_versions()
        raise ExportError(f"TensorFlow could not read the graph jax2tf wrote ({type(e).__name__}: "
                          f"{_first_line(e)}): {_needs(jax_version, tf_version)}") from e


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    for line in lines:  # the line that names the op, when there is one
        if "vhlo" in line.lower() or "unregistered" in line.lower():
            text = line
            break
    return text.strip()[:300]
