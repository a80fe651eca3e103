"""What every script that runs in the super-gradients environment (../shared/oracle) starts with.

Those scripts cannot `import nasjax` (no jax there), so the pure-numpy pieces they share with the
tests are loaded by path: the deterministic weights, the reference cases and the predict cases.
Importing this module also imports `tv_cpu_shim`, which must come before torchvision and
super_gradients. Scripts under tests/reference import it directly; scripts elsewhere put this folder
on sys.path first.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


deterministic_weights = load_by_path("_nasjax_deterministic_weights", REPO / "nasjax" / "model" / "deterministic_weights.py")
sampling = load_by_path("_nasjax_ref_sampling", HERE / "sampling.py")
predict_cases = load_by_path("_nasjax_predict_cases", HERE / "predict_cases.py")

import tv_cpu_shim  # noqa: E402,F401  (registers the CPU torchvision::nms before anything imports torchvision)
