"""Optional dependencies: import one, or say which extra installs it."""
from __future__ import annotations

import importlib


def require(module: str, package: str | None = None, extra: str = "data"):
    """Import `module`, or raise ImportError saying `pip install 'nasjax[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this needs {package or module}: pip install 'nasjax[{extra}]' ({e})") from e
