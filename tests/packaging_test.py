"""nasjax installs as one package beside the user's own code: no generic top-level names (configs,
weights, converters), shipped files read through importlib.resources, an import graph without cycles.

The failure this guards against: `import nasjax` inside a project with its own `configs` package
raised `ImportError: cannot import name 'VARIANTS' from 'configs'`, because the wheel installed
top-level `configs`, `weights` and `converters` packages.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import import_graph

REPO = Path(__file__).resolve().parents[1]

USER_PROJECT = {  # what a user's own project commonly has
    "configs/__init__.py": "WHOSE = 'user'\n",
    "weights/__init__.py": "WHOSE = 'user'\n",
    "converters/__init__.py": "WHOSE = 'user'\n",
}

CHECK = textwrap.dedent("""
    import importlib.util, json, sys
    import configs, weights, converters                      # the user's own packages
    import nasjax
    model = nasjax.build("yolo_nas_s", num_classes=3)
    from nasjax.data import shipped_dataset_names
    print(json.dumps({"user": [configs.WHOSE, weights.WHOSE, converters.WHOSE], "nasjax": nasjax.__file__,
                      "variant": model.config.name, "classes": model.num_classes,
                      "datasets": shipped_dataset_names()}))
""")


def user_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in USER_PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run_check(cwd: Path, env: dict | None = None) -> dict:
    import json

    result = subprocess.run([sys.executable, "-c", CHECK], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_imports_beside_a_project_with_its_own_configs(tmp_path):
    """The installed (editable) nasjax, from inside a project that has configs/, weights/, converters/."""
    report = run_check(user_project(tmp_path))
    assert report["user"] == ["user", "user", "user"]
    assert (report["variant"], report["classes"]) == ("yolo_nas_s", 3)
    assert {"coco8", "coco128", "coco"} <= set(report["datasets"])


def test_no_generic_top_level_names_after_install(tmp_path):
    """From a neutral folder, the environment nasjax is installed in has no `configs`, `weights` or
    `converters`: they are `nasjax.configs`, `nasjax.weights`, `nasjax.converters`."""
    code = ("import importlib.util as u, json; print(json.dumps([u.find_spec(n) is None for n in "
            "('configs', 'weights', 'converters')] + [u.find_spec('nasjax.' + n) is not None for n in "
            "('configs', 'weights', 'converters')]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[true, true, true, true, true, true]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                             str(out), str(REPO)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "setuptools" in result.stderr and "No module named" in result.stderr:
        pytest.skip("setuptools is not installed in this environment (needed to build the wheel without isolation)")
    assert result.returncode == 0, result.stderr[-3000:]
    return next(out.glob("nasjax-*.whl"))


def test_wheel_installs_only_nasjax(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"nasjax"}
    for shipped in ("nasjax/configs/coco8.yaml", "nasjax/configs/yolo_nas_s.py", "nasjax/weights/registry.py",
                    "nasjax/converters/torch_pickle.py", "nasjax/settings.yaml", "nasjax/model/core.py"):
        assert shipped in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "nasjax = nasjax.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # Installed from the wheel (not the repository), beside a user's project of the same names.
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                             str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) in (["nasjax"], ["bin", "nasjax"])
    env = {**os.environ, "PYTHONPATH": str(target)}
    report = run_check(user_project(tmp_path), env)
    assert Path(report["nasjax"]).is_relative_to(target)
    assert report["user"] == ["user", "user", "user"] and report["classes"] == 3
    assert {"coco8", "coco128", "coco"} <= set(report["datasets"])


def test_import_graph_has_no_cycles():
    """The pipelines import the model, never the façade (nasjax.detector) that imports them."""
    graph = import_graph.graph()
    assert import_graph.cycles(graph) == []
    for module, imports in graph.items():
        if module.startswith(("nasjax.predict", "nasjax.validate", "nasjax.export", "nasjax.train", "nasjax.model",
                              "nasjax.loading", "nasjax.data")):
            assert "nasjax.detector" not in imports, module
    for module in ("nasjax.converters.torch_pickle", "nasjax.converters.weight_file"):
        assert not {m for m in graph[module] if m.startswith("nasjax.") and not m.startswith("nasjax.converters")} \
            - {"nasjax.model.state_dict"}, module  # file readers: no model code but the key listing
    # ... and that listing is imported only when a file is identified: parsing needs no jax.
    code = ("import sys; sys.modules['jax'] = sys.modules['flax'] = None; "
            "import nasjax.converters.weight_file, nasjax.converters.torch_pickle, nasjax.configs, nasjax.weights")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_old_module_names_still_import_with_a_warning():
    import importlib
    import warnings

    import nasjax

    for old, new in (("nasjax.models", "nasjax.model.yolo_nas"), ("nasjax.nms", "nasjax.model.nms"),
                     ("nasjax.hub", "nasjax.loading.hub"), ("nasjax.datasets", "nasjax.data")):
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
    assert nasjax.load and nasjax.build and nasjax.from_state_dict and nasjax.Detector and nasjax.Results


def test_dependencies_are_ranges_and_constraints_pin_them():
    """pyproject declares ranges (nasjax installs beside other packages); constraints.txt holds the
    exact verified set that CI and the README's commands install with."""
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [d for deps in project["optional-dependencies"].values() for d in deps]
    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pinned[re.sub(r"[-_.]+", "-", name).lower()] = version
    for requirement in declared:
        assert "==" not in requirement, f"{requirement}: an exact pin in pyproject.toml; declare a range"
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        if name == "nasjax":
            continue
        assert re.sub(r"[-_.]+", "-", name).lower() in pinned, f"{name} is not in constraints.txt"
    jax = next(r for r in project["dependencies"] if r.startswith("jax>="))
    assert "!=0.10.1" in jax and "!=0.10.2" in jax  # their top_k StableHLO is unreadable by TF 2.21


def test_code_cites_only_documents_in_the_repository():
    """Docstrings and comments cite docs/<page>.md#<section>, which must exist; never documents a user
    does not have (the reference spec, export notes, issue numbers)."""
    import re

    anchors = {}
    for page in (REPO / "docs").glob("*.md"):
        anchors[page.name] = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
                              for h in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)}
    files = [p for root in ("nasjax", "configs", "converters", "weights") for p in (REPO / root).rglob("*.py")]
    files += [REPO / "pyproject.toml", REPO / "README.md"]
    for path in files:
        text = path.read_text()
        for banned in ("YOLO_NAS_SPEC", "EXPORT_NOTES", "shared/reference"):
            assert banned not in text, f"{path.relative_to(REPO)} cites {banned}"
        assert not re.search(r"\(issue \d+\)", text), f"{path.relative_to(REPO)} cites an issue number"
        for page, anchor in re.findall(r"docs/([a-z_]+\.md)(?:#([a-z0-9-]+))?", text):
            assert page in anchors, f"{path.relative_to(REPO)} cites docs/{page}, which does not exist"
            assert not anchor or anchor in anchors[page], f"{path.relative_to(REPO)} cites docs/{page}#{anchor}"
