"""What every dataset gives: `Sample` (one image and its ground truth), the `Dataset` interface, the
`SampleListDataset` of the file formats, and the errors that name the file at fault.

Every dataset has `names` ({class index: name}, the model's class order), `category_ids` (the id per
class index in COCO-format files: COCO's original ids for the 80 COCO names, else 1..nc, or the ids of a
COCO JSON), and `chunks(n)`: lists of `Sample` (the image as a path or an array, and its ground truth
in original-image pixels).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class DatasetError(ValueError):
    """A malformed dataset: bad YAML, label file or annotation file; the message names file and line."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not there (and could not be downloaded); the message says what to fetch
    and where to put it."""


def read_json_file(path: Path, what: str) -> Any:
    """The parsed JSON of `path`; a missing or malformed file is a DatasetError naming `what` it is."""
    return parse_json_file(path, what, json.loads)


def parse_json_file(path: Path, what: str, parse) -> Any:
    """`parse(text)` of the file at `path` (json.loads or a variant), its failures as DatasetError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: the {what} is a folder, not a JSON file") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a valid JSON {what}: {e}") from e
    except OSError as e:
        raise DatasetError(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        return parse(text)
    except DatasetError:
        raise
    except RecursionError:
        # Python's parser recurses once per [ or {: arrays nested ~1,000 deep end the parse.
        raise DatasetError(f"{path}: not a valid JSON {what}: arrays or objects nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and numbers of more than 4,300 digits
        raise DatasetError(f"{path}: not a valid JSON {what}: {e}") from e


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
        """Process `index`'s share of a run of `count` processes: the contiguous block `process_rows`
        gives, so that the shares concatenated in process order are the dataset in its order (what the
        gathered results of a multi-host validation rely on). It describes itself as the whole dataset,
        which is what the run validates."""
        from nasjax.utils.distributed import process_rows

        part = SampleListDataset(self.name, self.names, self.category_ids,
                                 self.samples[process_rows(len(self.samples), index, count)])
        part.whole = self.describe()
        return part

    def describe(self) -> str:
        return getattr(self, "whole", None) or super().describe()
