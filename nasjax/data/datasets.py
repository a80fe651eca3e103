"""Validation datasets: Ultralytics-style YOLO datasets, COCO JSON annotations, and TFDS `coco/2017`.

    ds = load_dataset("coco8")                      # configs/coco8.yaml; data under the datasets dir
    ds = load_dataset("path/to/data.yaml")          # any Ultralytics data YAML
    ds = load_dataset("path/to/coco8")              # a dataset folder holding its YAML: that folder is the root
    ds = load_dataset("instances_val2017.json", images="val2017/")   # COCO JSON + image folder
    ds = load_dataset("tfds:coco/2017", tfds_data_dir="~/tensorflow_datasets")

Every dataset gives `names` ({class index: name}, the model's class order), `category_ids` (the id per
class index in COCO-format files: COCO's original ids for the 80 COCO names, else 1..nc, or the ids of a
COCO JSON), and `chunks(n)`: lists of `Sample` (the image as a path or an array, and its ground truth
in original-image pixels).

YOLO datasets (a data YAML, resolved as Ultralytics' `check_det_dataset` does):
* `names` (dict {index: name} or list) or `nc`; `val` (`validation` is accepted); `path`, `download`.
* The root is the folder passed as `data` (when a folder is passed), else `path`, else the YAML's folder;
  a relative root that does not exist relative to the working directory is taken relative to the
  datasets directory: `$NASJAX_DATASETS_DIR`, default `<nasjax cache home>/datasets`.
* Split entries are relative to the root (a `../x` that does not exist is retried as `x`): a folder (all
  images below it, recursively), a .txt list of images (`./x` lines relative to the list's folder), or a
  list of those.
* Labels: the image path with its last `/images/` replaced by `/labels/` and the extension by `.txt`;
  one `class cx cy w h` line per object, normalised to [0, 1] (a polygon `class x1 y1 x2 y2 ...` is
  turned into its bounding box); exact duplicate lines are dropped (as Ultralytics does). An image
  without a label file, or with an empty one, is a background image.
* When the val images are missing and `download` is a URL of a zip (or a list of `url` / `{url, dir}`
  entries), each zip is fetched with `nasjax.hub.download` and extracted atomically into the root's
  parent folder (or into `root / dir`). Download scripts (Ultralytics' Python snippets) are not run.

COCO JSON: an annotation file (`instances_val2017.json`) and the image folder (default: found beside it,
e.g. `../images/val2017` or `../val2017`); classes are the file's categories sorted by id, with their
original ids. TFDS: `coco/2017`'s split (default "validation"), its own image ids, label i = the i-th
COCO category, with per-process sharding (`tfds.split_for_jax_process`) for multi-host runs.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import importlib.resources
import json
import os
import shutil
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from nasjax.loading import hub
from nasjax.validate.coco_metrics import COCO80_TO_91, category_ids_for, is_coco_names
from nasjax.data.preprocessing import ImageLoadError
from nasjax.weights.coco import COCO_CLASS_NAMES

DATASETS_DIR_ENV = "NASJAX_DATASETS_DIR"
# Ultralytics' IMG_FORMATS, less heic (PIL cannot read it without a plug-in).
IMAGE_EXTENSIONS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
TFDS_PREFIX = "tfds:"


class DatasetError(ValueError):
    """A malformed dataset: bad YAML, label file or annotation file; the message names file and line."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not there (and could not be downloaded); the message says what to fetch
    and where to put it."""


def datasets_dir() -> Path:
    """Where datasets named by relative paths live: `$NASJAX_DATASETS_DIR`, else `<cache home>/datasets`."""
    value = os.environ.get(DATASETS_DIR_ENV)
    return Path(value).expanduser() if value else hub.cache_home() / "datasets"


def shipped_configs_dir():
    """The data YAMLs shipped in the package (`nasjax.configs`), as an importlib.resources Traversable."""
    return importlib.resources.files("nasjax.configs")


def shipped_dataset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in shipped_configs_dir().iterdir() if p.name.endswith(".yaml"))


# --- data YAML ---------------------------------------------------------------------------------------


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


def _read_yaml(path: Path) -> dict:
    from nasjax.validate.coco_metrics import require

    yaml = require("yaml", "PyYAML")

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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


# --- download ----------------------------------------------------------------------------------------


def _download_entries(config: DataConfig) -> list[tuple[str, Path]]:
    """(url, folder to extract into) per zip of the YAML's `download`."""
    spec = config.download
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    entries = []
    for item in items:
        url, target = item, config.root.parent
        if isinstance(item, Mapping):
            url = item.get("url")
            target = config.root / item["dir"] if item.get("dir") else config.root.parent
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DatasetError(
                f"{config.yaml_file or config.name}: 'download:' must be a URL of a .zip or a list of them "
                f"(nasjax does not run download scripts); got {str(item)[:80]!r}"
            )
        if not url.split("?")[0].endswith(".zip"):
            raise DatasetError(f"{config.yaml_file or config.name}: only .zip downloads are supported, got {url}")
        entries.append((url, target))
    return entries


def _safe_extract(archive: Path, destination: Path) -> None:
    """Extract `archive` into a fresh folder beside `destination`'s contents, then move its top-level
    entries into `destination` (merging folders that exist): readers never see half-extracted files."""
    destination.mkdir(parents=True, exist_ok=True)
    staging = destination / f".extract-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                name = member.filename
                if name.startswith("__MACOSX/") or not name.strip("/"):
                    continue
                target = (staging / name).resolve()
                if staging.resolve() not in target.parents and target != staging.resolve():
                    raise DatasetError(f"{archive}: unsafe path {name!r} in the zip")
                zf.extract(member, staging)
        for entry in sorted(staging.iterdir()):
            _merge_move(entry, destination / entry.name)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{archive} is not a valid zip file: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _merge_move(source: Path, target: Path) -> None:
    if source.is_dir() and target.is_dir():
        for child in sorted(source.iterdir()):
            _merge_move(child, target / child.name)
    else:
        os.replace(source, target)


def download_dataset(config: DataConfig, *, progress: bool = True, timeout: float = hub.DEFAULT_TIMEOUT) -> None:
    """Fetch and extract every zip of `config.download`. Raises DatasetNotFoundError on failure."""
    for url, target in _download_entries(config):
        archive = target / Path(url.split("?")[0]).name
        try:
            hub.download(url, archive, timeout=timeout, progress=progress)
        except hub.DownloadError as e:
            raise DatasetNotFoundError(_missing_message(config, failure=str(e))) from e
        _safe_extract(archive, target)
        archive.unlink(missing_ok=True)


def _missing_message(config: DataConfig, split: str = "val", failure: str | None = None) -> str:
    missing = next((p for p in config.splits.get(split) or [] if not _present(p)), config.root)
    lines = [f"dataset {config.name!r}: {split} images not found, missing {missing}"]
    if failure:
        lines.append(f"Downloading failed: {failure}")
    try:
        entries = _download_entries(config) if config.download else []
    except DatasetError:
        entries = []
    if entries:
        lines.append("Download " + " and ".join(url for url, _ in entries))
        lines.append("and unzip " + ("them" if len(entries) > 1 else "it") + " into "
                     + ", ".join(sorted({str(t) for _, t in entries})) + f" so that {missing} exists;")
    else:
        lines.append(f"Put the dataset at {config.root} so that {missing} exists;")
    lines.append(f"or pass the dataset folder itself (data=/path/to/{config.root.name}). Relative dataset paths are "
                 f"looked up in {datasets_dir()} (set ${DATASETS_DIR_ENV} to change it).")
    return "\n".join(lines)


def _present(entry: Path) -> bool:
    """A split entry is there: a folder or image that exists, or an image list whose first image exists."""
    if entry.is_file() and entry.suffix.lower() == ".txt":
        try:
            first = list_images([entry])[:1]
        except (OSError, DatasetError, UnicodeDecodeError):
            return False
        return bool(first) and first[0].exists()
    return entry.exists()


def check_det_dataset(data, *, split: str = "val", download: bool = True, progress: bool = True,
                      datasets_root: Path | None = None) -> DataConfig:
    """`load_data_config`, then make sure the split's images exist, downloading them when missing."""
    config = load_data_config(data, datasets_root=datasets_root)
    entries = config.splits.get(split)
    if entries is None:
        raise DatasetError(f"{config.yaml_file or config.name}: no '{split}:' split")
    if all(_present(p) for p in entries):
        return config
    if not (download and config.download):
        raise DatasetNotFoundError(_missing_message(config, split))
    print(f"dataset {config.name!r} not found at {config.root}; downloading...")
    download_dataset(config, progress=progress)
    if not all(_present(p) for p in entries):
        raise DatasetNotFoundError(_missing_message(
            config, split, failure="the downloaded archives did not contain the split's images"))
    return config


# --- samples -----------------------------------------------------------------------------------------


def image_key(path: str | Path) -> int | str:
    """The image_id of a file in Ultralytics' predictions.json: its stem, as an int when numeric."""
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


@dataclasses.dataclass
class Sample:
    """One image and its ground truth. boxes: (n, 4) xyxy in original-image pixels; classes: indices."""

    key: int | str  # image_id in COCO-format files
    source: Any  # a path, or an (H, W, 3) uint8 RGB array
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    iscrowd: np.ndarray | None = None
    area: np.ndarray | None = None

    @property
    def path(self) -> str | None:
        return self.source if isinstance(self.source, str) else None


class Dataset:
    name: str
    names: dict[int, str]
    category_ids: list[int]

    def __len__(self) -> int:
        raise NotImplementedError

    def chunks(self, size: int) -> Iterator[list[Sample]]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}: {len(self)} images, {len(self.names)} classes"


class SampleListDataset(Dataset):
    """A dataset whose samples (paths and ground truth) are all known up front."""

    def __init__(self, name: str, names: dict[int, str], category_ids: list[int], samples: list[Sample]):
        self.name, self.names, self.category_ids, self.samples = name, names, category_ids, samples

    def __len__(self) -> int:
        return len(self.samples)

    def chunks(self, size: int) -> Iterator[list[Sample]]:
        # Paths are cheap: one chunk, which predict() streams through in batches.
        if self.samples:
            yield list(self.samples)

    def shard(self, index: int, count: int) -> "SampleListDataset":
        """Every `count`-th sample from `index` on (one process's share in a multi-host run)."""
        return SampleListDataset(self.name, self.names, self.category_ids, self.samples[index::count])


# --- YOLO format -------------------------------------------------------------------------------------


def list_images(entries: Sequence[Path]) -> list[Path]:
    """Ultralytics' get_img_files: folders searched recursively, .txt lists read, image files kept."""
    files: list[str] = []
    for entry in entries:
        if entry.is_dir():
            files += glob.glob(str(entry / "**" / "*.*"), recursive=True)
        elif entry.is_file() and entry.suffix.lower() == ".txt":
            parent = entry.parent
            for line in entry.read_text(encoding="utf-8").strip().splitlines():
                line = line.strip()
                if not line:
                    continue
                if line.startswith("./"):
                    files.append(str(parent / line[2:]))
                elif os.path.isabs(line) or os.path.exists(line):
                    files.append(line)
                else:
                    files.append(str(parent / line))
        elif entry.is_file():
            files.append(str(entry))
        else:
            raise DatasetNotFoundError(f"{entry} does not exist")
    return sorted(Path(f) for f in files if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS)


def label_path(image: Path) -> Path:
    """Ultralytics' img2label_paths: the last /images/ becomes /labels/, the extension .txt."""
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(text.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def parse_label_file(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes (n,), boxes (n, 4) normalised cx cy w h) of a YOLO label file; duplicate rows dropped.
    Raises DatasetError naming file and line for anything malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 text label file: {e}") from e
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) != 5 and not (len(parts) > 6 and len(parts) % 2 == 1):
            raise DatasetError(f"{where}: expected 5 values 'class x_center y_center width height' (or a polygon "
                               f"'class x1 y1 x2 y2 x3 y3 ...'), got {len(parts)}: {line.strip()!r}")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            bad = next(v for v in parts if not _is_float(v))
            raise DatasetError(f"{where}: {bad!r} is not a number: {line.strip()!r}") from None
        if not all(np.isfinite(values)):
            raise DatasetError(f"{where}: non-finite value: {line.strip()!r}")
        cls = values[0]
        if cls != int(cls):
            raise DatasetError(f"{where}: class id {parts[0]!r} is not an integer")
        if not 0 <= cls < num_classes:
            raise DatasetError(f"{where}: class id {int(cls)} is outside the dataset's {num_classes} names "
                               f"(0..{num_classes - 1})")
        coords = np.array(values[1:])
        if coords.max() > 1.01 or coords.min() < -0.01:
            raise DatasetError(f"{where}: coordinates must be normalised to [0, 1] (by the image width and height), "
                               f"got {line.strip()!r}")
        if len(coords) == 4:
            box = coords
        else:
            xs, ys = coords[0::2], coords[1::2]
            box = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, xs.max() - xs.min(), ys.max() - ys.min()])
        rows.append([int(cls), *box])
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4))
    table = np.array(rows, np.float64)
    _, first = np.unique(table, axis=0, return_index=True)
    table = table[np.sort(first)]
    return table[:, 0].astype(np.int64), table[:, 1:]


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def image_size(path: Path, exif_transpose: bool = False) -> tuple[int, int]:
    """(height, width) from the file's header (and EXIF orientation when applied)."""
    try:
        with Image.open(path) as image:
            w, h = image.size
            if exif_transpose and image.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"cannot read image {path}: {e}") from e
    return h, w


def _scan(paths: Sequence[Path], function, workers: int = 8) -> list:
    with concurrent.futures.ThreadPoolExecutor(min(workers, max(1, len(paths)))) as pool:
        return list(pool.map(function, paths))


class YoloDataset(SampleListDataset):
    """A split of a YOLO-format dataset, with every label parsed and every image header read up front
    (a malformed label or an unreadable image fails before any inference)."""

    def __init__(self, config: DataConfig, split: str = "val", exif_transpose: bool = False):
        self.config = config
        entries = config.splits.get(split)
        if entries is None:
            raise DatasetError(f"{config.yaml_file or config.name}: no '{split}:' split")
        images = list_images(entries)
        if not images:
            raise DatasetError(f"no images in {', '.join(map(str, entries))} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
        num_classes = len(config.names)

        def read(path: Path) -> tuple[tuple[int, int], tuple[np.ndarray, np.ndarray], bool]:
            labels = label_path(path)
            has_labels = labels.is_file()
            parsed = parse_label_file(labels, num_classes) if has_labels else (np.zeros(0, np.int64), np.zeros((0, 4)))
            return image_size(path, exif_transpose), parsed, has_labels

        samples = []
        self.missing_labels = 0
        for path, ((h, w), (classes, xywhn), has_labels) in zip(images, _scan(images, read)):
            self.missing_labels += not has_labels
            cx, cy, bw, bh = (xywhn * np.array([w, h, w, h])).T
            boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).reshape(-1, 4)
            samples.append(Sample(image_key(path), str(path), path.name, h, w, boxes, classes))
        super().__init__(config.name, dict(config.names), category_ids_for(config.names), samples)


# --- COCO JSON ---------------------------------------------------------------------------------------


def read_json_file(path: Path, what: str) -> Any:
    """The parsed JSON of `path`; a missing or malformed file is a DatasetError naming `what` it is."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a valid JSON {what}: {e}") from e


def _default_image_dir(annotation_file: Path) -> Path:
    split = annotation_file.stem.split("_", 1)[-1]  # instances_val2017 → val2017
    parent = annotation_file.resolve().parent
    for candidate in (parent.parent / "images" / split, parent.parent / split, parent / "images" / split,
                      parent / split, parent.parent / "images", parent / "images"):
        if candidate.is_dir():
            return candidate
    raise DatasetNotFoundError(
        f"no image folder found for {annotation_file} (looked for images/{split} and {split} beside it); "
        "pass the folder (images=... / --images DIR)"
    )


class CocoJsonDataset(SampleListDataset):
    """COCO's own format: images, annotations (bbox x y w h, area, iscrowd) and categories of a JSON
    file; class index i is the i-th category by id."""

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike | None = None):
        path = Path(annotation_file)
        data = read_json_file(path, "annotation file")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data, dict) or not isinstance(data.get(key), list):
                raise DatasetError(f"{path}: a COCO annotation file needs an '{key}' list")
        image_dir = Path(image_dir) if image_dir is not None else _default_image_dir(path)
        if not image_dir.is_dir():
            raise DatasetNotFoundError(f"image folder not found: {image_dir}")
        try:
            categories = sorted(data["categories"], key=lambda c: int(c["id"]))
            names = {i: str(c["name"]) for i, c in enumerate(categories)}
            category_ids = [int(c["id"]) for c in categories]
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{path}: malformed 'categories' entry: {e}") from e
        index_of = {cid: i for i, cid in enumerate(category_ids)}
        per_image: dict[int, list[dict]] = {}
        for n, ann in enumerate(data["annotations"]):
            try:
                image_id, cid, bbox = int(ann["image_id"]), int(ann["category_id"]), [float(v) for v in ann["bbox"]]
            except (KeyError, TypeError, ValueError) as e:
                raise DatasetError(f"{path}: annotation #{n} (id {ann.get('id') if isinstance(ann, dict) else '?'}) "
                                   f"is malformed: {e}") from e
            if cid not in index_of:
                raise DatasetError(f"{path}: annotation id {ann.get('id')} has category_id {cid}, which is not in "
                                   "'categories'")
            if len(bbox) != 4:
                raise DatasetError(f"{path}: annotation id {ann.get('id')} has a bbox of {len(bbox)} values, expected 4")
            per_image.setdefault(image_id, []).append({**ann, "bbox": bbox, "category_id": cid})
        samples = []
        for entry in sorted(data["images"], key=lambda im: int(im["id"])):
            try:
                image_id, file_name = int(entry["id"]), str(entry["file_name"])
                height, width = int(entry["height"]), int(entry["width"])
            except (KeyError, TypeError, ValueError) as e:
                raise DatasetError(f"{path}: malformed 'images' entry {entry!r}: {e}") from e
            anns = per_image.pop(image_id, [])
            xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            classes = np.array([index_of[a["category_id"]] for a in anns], np.int64)
            iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
            area = np.array([float(a.get("area", w * h)) for a, (_, _, w, h) in zip(anns, xywh)], np.float64)
            samples.append(Sample(image_id, str(image_dir / file_name), file_name, height, width, boxes, classes,
                                  iscrowd, area))
        if per_image:
            raise DatasetError(f"{path}: annotations refer to image ids not in 'images': {sorted(per_image)[:5]}")
        missing = [s.source for s in samples if not os.path.isfile(s.source)]
        if missing:
            raise DatasetNotFoundError(f"{len(missing)} image(s) of {path} are missing from {image_dir}, e.g. {missing[0]}")
        super().__init__(path.stem, names, category_ids, samples)


# --- TFDS --------------------------------------------------------------------------------------------


class TfdsCocoDataset(Dataset):
    """TFDS `coco/2017` (or another coco config): images decoded by tf.data, streamed in chunks.

    process_index / process_count: this process's share (`tfds.split_for_jax_process`), default
    jax.process_index() / jax.process_count(). download: run `download_and_prepare` first (~25 GB for
    coco/2017); by default the dataset must already be prepared under data_dir."""

    def __init__(self, name: str = "coco/2017", split: str = "validation", data_dir: str | None = None, *,
                 process_index: int | None = None, process_count: int | None = None, download: bool = False):
        from nasjax.validate.coco_metrics import require

        tf = require("tensorflow", "tensorflow (tensorflow-cpu)")
        tfds = require("tensorflow_datasets", "tensorflow-datasets")
        try:  # keep TensorFlow off the accelerators: JAX owns them
            tf.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):
            pass
        if process_index is None or process_count is None:
            import jax

            process_index, process_count = jax.process_index(), jax.process_count()
        self.name, self.base_split = name, split
        self.process_index, self.process_count = process_index, process_count
        self.split = (tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count)
                      if process_count > 1 else split)
        self.builder = tfds.builder(name, data_dir=data_dir)
        if download:
            self.builder.download_and_prepare()
        label = self.builder.info.features["objects"]["label"]
        label_names = list(label.names)
        if len(label_names) == len(COCO_CLASS_NAMES) and not is_coco_names(label_names):
            # TFDS names label i after the i-th COCO category; without the generated metadata (e.g. under
            # tfds.testing.mock_data) the names are just '0'..'79'.
            label_names = list(COCO_CLASS_NAMES) if all(n.isdigit() for n in label_names) else label_names
        self.names = dict(enumerate(label_names))
        self.category_ids = list(COCO80_TO_91) if len(label_names) == 80 else category_ids_for(self.names)
        self._data_dir = data_dir

    def __len__(self) -> int:
        try:
            return int(self.builder.info.splits[self.split].num_examples)
        except Exception:  # noqa: BLE001 - unknown (mocked or not prepared): no total for the progress bar
            return 0

    def describe(self) -> str:
        return f"tfds {self.name} {self.base_split} (process {self.process_index} of {self.process_count})"

    def _dataset(self):
        import tensorflow_datasets as tfds

        try:
            ds = self.builder.as_dataset(split=self.split, shuffle_files=False)
        except Exception as e:  # noqa: BLE001 - TFDS raises assorted errors for a dataset that is not there
            raise DatasetNotFoundError(
                f"TFDS dataset {self.name} split {self.base_split!r} is not available under "
                f"{self._data_dir or '~/tensorflow_datasets'}: {e}\nPrepare it once with "
                f"`tfds build {self.name} --data_dir DIR` (downloads the COCO zips, ~25 GB) or pass download=True "
                "(--tfds-download), then point data_dir (--tfds-data-dir) at DIR."
            ) from e
        return tfds.as_numpy(ds)

    def chunks(self, size: int) -> Iterator[list[Sample]]:
        chunk: list[Sample] = []
        for example in self._dataset():
            chunk.append(self.sample(example))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    @staticmethod
    def sample(example: Mapping) -> Sample:
        image = np.asarray(example["image"])
        if image.ndim == 3 and image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        h, w = image.shape[:2]
        objects = example["objects"]
        ymin, xmin, ymax, xmax = np.asarray(objects["bbox"], np.float64).reshape(-1, 4).T
        boxes = np.stack([xmin * w, ymin * h, xmax * w, ymax * h], axis=1)
        classes = np.asarray(objects["label"], np.int64).reshape(-1)
        iscrowd = np.asarray(objects.get("is_crowd", np.zeros(len(classes), bool)), bool).reshape(-1)
        area = np.asarray(objects["area"], np.float64).reshape(-1) if "area" in objects else None
        name = example.get("image/filename", b"")
        name = name.decode() if isinstance(name, bytes) else str(name)
        key = int(example["image/id"]) if "image/id" in example else image_key(name)
        return Sample(key, image, name, h, w, boxes, classes, iscrowd, area)


# --- entry point -------------------------------------------------------------------------------------


def load_dataset(data, split: str = "val", *, images: str | os.PathLike | None = None, download: bool = True,
                 exif_transpose: bool = False, tfds_data_dir: str | None = None, tfds_download: bool = False,
                 process_index: int | None = None, process_count: int | None = None,
                 progress: bool = True) -> Dataset:
    """A validation dataset from `data` (see the module docstring for the forms it takes).

    split: the YAML key ("val" by default; for TFDS "val" means "validation"). images: the image folder
    of a COCO JSON file. download: fetch a YOLO dataset's `download` zips when its images are missing.
    process_index / process_count: this process's share of the images in a multi-host run (default
    the JAX process); every process then holds the full label set of file datasets but reads only its
    images."""
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if isinstance(data, str) and data.startswith(TFDS_PREFIX):
        tfds_split = "validation" if split == "val" else split
        return TfdsCocoDataset(data[len(TFDS_PREFIX):], tfds_split, tfds_data_dir, process_index=process_index,
                               process_count=process_count, download=tfds_download)
    if isinstance(data, (str, os.PathLike)) and Path(data).suffix.lower() == ".json":
        dataset: SampleListDataset = CocoJsonDataset(data, images)
    else:
        config = check_det_dataset(data, split=split, download=download, progress=progress)
        dataset = YoloDataset(config, split, exif_transpose=exif_transpose)
    return dataset.shard(process_index, process_count) if process_count > 1 else dataset
