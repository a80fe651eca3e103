"""Running a benchmark's reference side in the super-gradients ("oracle") environment.

The benchmarks under this folder import it as a sibling module (`python benchmarks/<name>.py` puts this
folder first on sys.path).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ORACLE = os.environ.get("NASJAX_ORACLE_PYTHON", "/work/oracle_venv/bin/python")


def run_reference(oracle_python: str, script: str, arguments: list[str]) -> dict | None:
    """Run `benchmarks/<script> ARGUMENTS --json OUT` with the oracle's python; its JSON, or None (with
    the reason printed) when the environment is missing or the script fails."""
    if not Path(oracle_python).exists():
        print(f"(no reference: {oracle_python} not found; build it with ../shared/oracle/install.sh)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reference.json"
        env = dict(os.environ, CRASH_HANDLER="FALSE", SUPER_GRADIENTS_LOG_DIR=tmp)
        run = subprocess.run([oracle_python, str(HERE / script), *arguments, "--json", str(out)], env=env,
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(f"(reference {script} failed, exit {run.returncode}:\n{run.stderr[-3000:]})")
            return None
        return json.loads(out.read_text())
