"""The real Ultralytics package for tests that compare nasjax with it (metrics, label lines, crops), or a
pytest skip saying how to install it (tests/requirements-nodeps.txt)."""
from __future__ import annotations

import os
import warnings

import pytest

from nasjax.validate.ultralytics_metrics import ULTRALYTICS_VERSION


def import_ultralytics(config_dir) -> tuple:
    """(ultralytics, torch). Importing it patches PIL.Image.open and torch.save, sets environment variables
    and warning filters, process-wide: all undone here, so that the other tests run as without it. Its
    settings file goes to `config_dir`; it stays offline."""
    import PIL.Image

    saved_open, saved_env = PIL.Image.open, dict(os.environ)
    torch = None
    with warnings.catch_warnings():
        try:
            os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
            os.environ["YOLO_OFFLINE"] = "1"
            try:
                import torch

                saved_save = torch.save
                import ultralytics
                import ultralytics.engine.results  # noqa: F401
                import ultralytics.models.yolo.detect.val  # noqa: F401
                import ultralytics.utils.metrics  # noqa: F401
            except ImportError as e:
                pytest.skip(f"the comparison with Ultralytics needs the ultralytics package ({e}): pip install "
                            f"--no-deps ultralytics=={ULTRALYTICS_VERSION} torchvision==0.28.0")
        finally:
            PIL.Image.open = saved_open
            if torch is not None:
                torch.save = saved_save
            os.environ.clear()
            os.environ.update(saved_env)
    return ultralytics, torch
