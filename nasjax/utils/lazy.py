"""Package attributes imported on first use: a package lists its public names and the module that
defines each, and importing the package stays cheap (no jax for `import nasjax.converters`, no dataset
readers for the image code)."""
from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_attributes(package: str, namespace: dict, public: Mapping[str, str]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for `package`, whose module globals are `namespace`; `public` maps each
    name to the module that defines it. A name is imported once, then cached in the namespace."""

    def __getattr__(name: str):
        if name in public:
            value = getattr(importlib.import_module(public[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
