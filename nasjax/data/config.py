"""Data YAMLs (Ultralytics' format), resolved as Ultralytics' `check_det_dataset` does, and the class
names they give. Nothing is downloaded or read here beyond the YAML itself (`download.py` fetches).

* `names` (dict {index: name} or list) or `nc`; `val` (`validation` is accepted); `path`, `download`.
* The root is the folder passed as `data` (when a folder is passed), else `path`, else the YAML's folder;
  a relative root that does not exist relative to the working directory is taken relative to the
  datasets directory: `$NASJAX_DATASETS_DIR`, default `<nasjax cache home>/datasets`.
* Split entries are relative to the root (a `../x` that does not exist is retried as `x`); what they
  hold (folders, image lists) is read by `yolo.py`.
* A name such as "coco8" is one of the YAMLs shipped in `nasjax.configs`.
* Aliases may add at most `limits.MAX_YAML_ALIAS_NODES` values when expanded (a "billion laughs" of
  nested aliases is an error naming the line), and may not refer to a collection from inside it.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from nasjax.data.base import DatasetError, DatasetNotFoundError
from nasjax.data.limits import MAX_YAML_ALIAS_NODES
from nasjax.loading import hub

DATASETS_DIR_ENV = "NASJAX_DATASETS_DIR"


def datasets_dir() -> Path:
    """Where datasets named by relative paths live: `$NASJAX_DATASETS_DIR`, else `<cache home>/datasets`."""
    value = os.environ.get(DATASETS_DIR_ENV)
    return Path(value).expanduser() if value else hub.cache_home() / "datasets"


def shipped_configs_dir():
    """The data YAMLs shipped in the package (`nasjax.configs`), as an importlib.resources Traversable."""
    return importlib.resources.files("nasjax.configs")


def shipped_dataset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in shipped_configs_dir().iterdir() if p.name.endswith(".yaml"))


@dataclasses.dataclass
class DataConfig:
    """A resolved data YAML: absolute split paths, names as {index: name}."""

    name: str  # for messages: the YAML's stem or the folder's name
    yaml_file: Path | None
    root: Path
    names: dict[int, str]
    splits: dict[str, list[Path] | None]  # train / val / test / minival → resolved entries (None: absent)
    download: Any
    raw: dict


def find_dataset_yaml(directory: Path) -> Path:
    """The one YAML file in `directory` (else below it), preferring the one named like the folder."""
    files = sorted(directory.glob("*.yaml")) or sorted(directory.rglob("*.yaml"))
    if len(files) > 1:
        files = [f for f in files if f.stem == directory.stem]
    if len(files) != 1:
        raise DatasetError(f"expected one data YAML in {directory}, found {len(files) or 'none'}"
                           + (f": {', '.join(map(str, files))}" if files else ""))
    return files[0]


class _AliasBombError(Exception):
    def __init__(self, mark, message: str):
        super().__init__(message)
        self.mark = mark


@functools.lru_cache(maxsize=None)
def _bounded_loader(yaml):
    """PyYAML's SafeLoader, refusing aliases that expand to more than MAX_YAML_ALIAS_NODES nodes in all,
    or that refer to a collection from inside it. PyYAML shares an aliased node (no copy is made while
    loading), but everything that walks the result — `str(names)`, an error message, a merge key — sees
    the expansion: a few hundred bytes of nested aliases ("billion laughs") become gigabytes."""

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self.alias_nodes = 0
            self.expanded_sizes: dict[int, int] = {}

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                node = self.anchors.get(event.anchor)
                if isinstance(node, yaml.CollectionNode) and node.end_mark is None:
                    raise _AliasBombError(event.start_mark, f"alias *{event.anchor} refers to a collection from "
                                                            "inside it (a recursive alias); write the values out")
                if node is not None:
                    self.alias_nodes += self.expanded_size(node)
                    if self.alias_nodes > MAX_YAML_ALIAS_NODES:
                        raise _AliasBombError(
                            event.start_mark, f"aliases (*{event.anchor} and those before it) expand to more than "
                            f"{MAX_YAML_ALIAS_NODES:,} values (nested anchors and aliases, a 'billion laughs'?); "
                            "write the values out instead of aliasing them")
            return super().compose_node(parent, index)

        def expanded_size(self, node) -> int:
            """Nodes in `node` with every alias below it expanded (memoised: shared nodes are counted
            once per use without being walked again)."""
            size = self.expanded_sizes.get(id(node))
            if size is None:
                if isinstance(node, yaml.SequenceNode):
                    size = 1 + sum(self.expanded_size(child) for child in node.value)
                elif isinstance(node, yaml.MappingNode):
                    size = 1 + sum(self.expanded_size(k) + self.expanded_size(v) for k, v in node.value)
                else:
                    size = 1
                self.expanded_sizes[id(node)] = size
            return size

    return BoundedLoader


def _read_yaml(path: Path) -> dict:
    from nasjax.utils.optional import require

    yaml = require("yaml", "PyYAML")

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_bounded_loader(yaml))
    except _AliasBombError as e:
        line = f":{e.mark.line + 1}" if e.mark is not None else ""
        raise DatasetError(f"{path}{line}: {e}") from None
    except RecursionError:
        raise DatasetError(f"{path}: nested too deeply to read (a data YAML needs 2 or 3 levels)") from None
    except yaml.YAMLError as e:
        raise DatasetError(f"{path}: not valid YAML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read data YAML {path}: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: a data YAML must be a mapping (path, val, names...), got {type(data).__name__}")
    return data


def parse_names(names: Any, nc: Any, where: str) -> dict[int, str]:
    """YAML `names` (list or {index: name}) and / or `nc` → {0: name0, ...}."""
    if names is None:
        if nc is None:
            raise DatasetError(f"{where}: 'names:' (or 'nc:') missing; list the class names, e.g. names: {{0: person}}")
        if not isinstance(nc, int) or nc < 1:
            raise DatasetError(f"{where}: 'nc: {nc}' must be a positive integer")
        return {i: f"class_{i}" for i in range(nc)}
    if isinstance(names, (list, tuple)):
        result = {i: str(n) for i, n in enumerate(names)}
    elif isinstance(names, dict):
        result = {}
        for key, value in names.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                raise DatasetError(f"{where}: class index {key!r} in 'names:' is not an integer") from None
            result[index] = str(value)
        if sorted(result) != list(range(len(result))):
            raise DatasetError(f"{where}: 'names:' indices must be 0..{len(result) - 1} without gaps, got {sorted(result)}")
        result = dict(sorted(result.items()))
    else:
        raise DatasetError(f"{where}: 'names:' must be a list or a mapping {{index: name}}, got {type(names).__name__}")
    if not result:
        raise DatasetError(f"{where}: 'names:' is empty")
    if nc is not None and nc != len(result):
        raise DatasetError(f"{where}: 'names' has {len(result)} entries but 'nc: {nc}'; they must match")
    return result


def _resolve_entry(root: Path, entry: str) -> Path:
    path = (root / entry).resolve()
    if not path.exists() and entry.startswith("../"):
        path = (root / entry[3:]).resolve()
    return path


def load_data_config(data: str | os.PathLike | Mapping, *, datasets_root: Path | None = None) -> DataConfig:
    """Read and resolve a data YAML (a file, a shipped name such as "coco8", a dataset folder holding
    its YAML, or an already-loaded mapping). Nothing is downloaded or checked on disk beyond paths."""
    datasets_root = datasets_root or datasets_dir()
    extract_dir = None
    if isinstance(data, Mapping):
        raw, yaml_file, where, name = dict(data), None, "data", "data"
    else:
        path = Path(data).expanduser()
        if path.is_dir():
            yaml_file = find_dataset_yaml(path)
            extract_dir = path.resolve()
        elif path.is_file():
            yaml_file = path
        else:
            text = os.fspath(data)
            stem = text.removesuffix(".yaml").removesuffix(".yml")
            shipped = shipped_configs_dir() / f"{stem}.yaml"
            if os.sep in text or "/" in text or not shipped.is_file():
                raise DatasetNotFoundError(
                    f"dataset {text!r} not found: it is not a file or folder, nor a dataset shipped with nasjax "
                    f"({', '.join(shipped_dataset_names())})"
                )
            yaml_file = shipped
        raw = _read_yaml(yaml_file)
        where, name = str(yaml_file), (extract_dir.name if extract_dir else yaml_file.name.rsplit(".", 1)[0])
    if "val" not in raw:
        if "validation" not in raw:
            raise DatasetError(f"{where}: 'val:' missing; validation needs the val images, e.g. 'val: images/val'")
        warnings.warn(f"{where}: renaming 'validation:' to 'val:' (the YOLO format's name)", stacklevel=3)
        raw["val"] = raw.pop("validation")
    names = parse_names(raw.get("names"), raw.get("nc"), where)
    root = Path(extract_dir or raw.get("path") or (yaml_file.parent if yaml_file else "."))
    root = root.expanduser()
    if not root.exists() and not root.is_absolute():
        root = (datasets_root / root).resolve()
    root = root.resolve()
    splits: dict[str, list[Path] | None] = {}
    for key in ("train", "val", "test", "minival"):
        value = raw.get(key)
        if not value:
            splits[key] = None
        elif isinstance(value, str):
            splits[key] = [_resolve_entry(root, value)]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            splits[key] = [(root / v).resolve() for v in value]
        else:
            raise DatasetError(f"{where}: '{key}:' must be a path or a list of paths, got {value!r}")
    return DataConfig(name, yaml_file, root, names, splits, raw.get("download"), raw)
