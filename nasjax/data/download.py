"""Making a YOLO dataset's files present: `check_det_dataset` resolves the data YAML and, when the
split's images are missing, fetches the YAML's `download` zips.

`download` is a URL of a zip, or a list of `url` / `{url, dir}` entries; each zip is fetched with
`nasjax.loading.hub.download` and extracted into the root's parent folder (or into `root / dir`):
staged in a fresh folder beside the destination, every member's path checked to stay inside it (a
`../` entry is refused), then moved into place, so readers never see half-extracted files. Download
scripts (Ultralytics' Python snippets) are not run. When nothing can be fetched, the error says what to
download and where to unzip it. A disk that fills up (downloading or extracting) is `hub.DiskFullError`,
with nothing of that zip left behind: a .part kept for a resume would only keep the disk full.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Mapping

from nasjax.data.base import DatasetError, DatasetNotFoundError
from nasjax.data.config import (
    DATASETS_DIR_ENV,
    DataConfig,
    datasets_dir,
    load_data_config,
)
from nasjax.data.yolo import list_images
from nasjax.loading import hub


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


# Dataset archives are far larger than weight files (COCO: ~19 GB): unless NASJAX_DOWNLOAD_TIMEOUT says
# otherwise, one may take a day; the minimum rate still ends a stalled transfer.
DATASET_DOWNLOAD_DEADLINE_S = 24 * 3600.0


def _dataset_limits() -> "hub.DownloadLimits":
    import dataclasses

    limits = hub.DownloadLimits.from_env()
    if os.environ.get("NASJAX_DOWNLOAD_TIMEOUT", "").strip():
        return limits
    return dataclasses.replace(limits, deadline=DATASET_DOWNLOAD_DEADLINE_S)


def download_dataset(config: DataConfig, *, progress: bool = True, timeout: float = hub.DEFAULT_TIMEOUT) -> None:
    """Fetch and extract every zip of `config.download`. Raises DatasetNotFoundError on failure, and
    `hub.DiskFullError` (an OSError, ENOSPC) when the disk fills up: then nothing of that zip is left (no
    .zip, no .part, no half-extracted files, no folder made for it)."""
    for url, target in _download_entries(config):
        archive = target / Path(url.split("?")[0]).name
        made = _missing_folders(target)
        try:
            try:
                hub.download(url, archive, timeout=timeout, progress=progress, limits=_dataset_limits())
            except hub.DownloadError as e:
                if not hub.is_disk_full(e):  # a network failure: the .part stays for a resume
                    raise DatasetNotFoundError(_missing_message(config, failure=str(e))) from e
                raise hub.DiskFullError(target, f"the download of {url}") from e
            try:
                _safe_extract(archive, target)
            except OSError as e:
                if not hub.is_disk_full(e) or isinstance(e, hub.DiskFullError):
                    raise
                raise hub.DiskFullError(target, f"the files of {archive.name} (extracting it)") from e
        except hub.DiskFullError:
            for leftover in (archive, archive.with_name(archive.name + ".part"),
                             archive.with_name(archive.name + ".part.json")):
                leftover.unlink(missing_ok=True)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty
            raise
        archive.unlink(missing_ok=True)


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


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
