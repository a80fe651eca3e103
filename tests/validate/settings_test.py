"""nasjax.validate.settings: the two setting sets as values, overrides, reference mode's refusals, and
the progress bar rule validate() and predict() share (nasjax.utils.progress)."""
from __future__ import annotations

import dataclasses
import io

import pytest

from nasjax.model.nms import VALIDATION_NMS, NMSSettings
from nasjax.utils.progress import progress_bar
from nasjax.validate import DEFAULT_SETTINGS, REFERENCE_SETTINGS, ValidationSettings, resolve_settings
from nasjax.validate import settings


def test_default_and_reference():
    default, reference = ValidationSettings.DEFAULT, ValidationSettings.REFERENCE
    assert default is settings.DEFAULT and reference is settings.REFERENCE
    assert default.nms == VALIDATION_NMS == NMSSettings(conf=0.001, iou=0.7, top_k=1000, max_det=300)
    assert (default.preprocess, default.resize_rounding) == ("centre_pad", "round")
    assert reference.nms == dataclasses.replace(VALIDATION_NMS, conf=0.01)
    assert (reference.preprocess, reference.resize_rounding) == ("centre_pad", "trunc")
    assert reference.to_dict() == {"conf": 0.01, "iou": 0.7, "max_det": 300, "nms_top_k": 1000, "multi_label": True,
                                   "agnostic": False, "preprocess": "centre_pad", "resize_rounding": "trunc"}
    # the old flat names stay, read-only
    assert dict(DEFAULT_SETTINGS) == default.to_dict() and dict(REFERENCE_SETTINGS) == reference.to_dict()
    with pytest.raises(TypeError):
        DEFAULT_SETTINGS["conf"] = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.preprocess = "letterbox"


def test_replace_by_keyword_names():
    s = ValidationSettings.DEFAULT.replace(conf=0.25, nms_top_k=500, multi_label=False, preprocess="letterbox",
                                           iou=None)
    assert s.nms == NMSSettings(conf=0.25, iou=0.7, top_k=500, max_det=300, multi_label=False)
    assert s.preprocess == "letterbox" and ValidationSettings.DEFAULT.preprocess == "centre_pad"
    assert s.predict_options()["nms_top_k"] == 500  # predict()'s keyword
    assert ValidationSettings.DEFAULT.replace() == ValidationSettings.DEFAULT
    with pytest.raises(TypeError, match="unknown settings: top_k"):
        ValidationSettings.DEFAULT.replace(top_k=5)
    with pytest.raises(ValueError, match="conf must be in"):
        ValidationSettings.DEFAULT.replace(conf=2)
    with pytest.raises(ValueError, match="preprocess"):
        ValidationSettings.DEFAULT.replace(preprocess="stretch")


def test_resolve():
    assert resolve_settings() == ValidationSettings.DEFAULT
    assert resolve_settings(conf=0.1).nms.conf == 0.1
    assert resolve_settings(reference_mode=True) is ValidationSettings.REFERENCE
    # repeating a reference setting is fine
    assert resolve_settings(reference_mode=True, conf=0.01, iou=0.7) is ValidationSettings.REFERENCE
    with pytest.raises(ValueError, match="reference mode fixes .* drop conf=0.5, preprocess='letterbox'"):
        resolve_settings(reference_mode=True, conf=0.5, preprocess="letterbox")


class Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bar_rule(monkeypatch, tty):
    monkeypatch.setattr("sys.stderr", Stream(tty))
    assert progress_bar(None, 10, "validate").disable is not tty  # validate: whenever stderr is a terminal
    assert progress_bar(None, 10, "predict", batches=1).disable  # predict: a single batch never shows one
    assert progress_bar(None, 10, "predict", batches=2).disable is not tty
    assert not progress_bar(True, 10, "x", batches=1).disable and progress_bar(False, 10, "x").disable
    bar = progress_bar(False, 0, "x")  # hidden bars still take updates
    bar.update(3)
    bar.close()


def test_validate_takes_a_settings_value_plus_overrides(scored_dataset):
    """validate(settings=...) starts from that value; keyword settings override it; it and
    reference_mode are exclusive."""
    from nasjax.validate import validate

    data, predictions = scored_dataset
    base = ValidationSettings.DEFAULT.replace(conf=0.05, max_det=100)
    metrics = validate(None, data, predictions=predictions, settings=base, iou=0.6, print_results=False)
    assert (metrics["settings"]["conf"], metrics["settings"]["max_det"], metrics["settings"]["iou"]) == (0.05, 100, 0.6)
    with pytest.raises(ValueError, match="not both"):
        validate(None, data, predictions=predictions, settings=base, reference_mode=True)
