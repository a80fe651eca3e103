"""The weight registry: every entry well-formed, names resolve, unknown names are reported helpfully."""
from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from nasjax.configs import VARIANTS
from nasjax.model.yolo_nas import FORMS
from nasjax.weights import COCO_CLASS_NAMES, UnknownWeightsError, get_entry, list_weights
from nasjax.weights.registry import SOURCE_FORMATS


@pytest.mark.parametrize("name", list_weights())
def test_entry_is_well_formed(name):
    entry = get_entry(name)
    assert entry.name == name
    variant, tag = name.split(".")
    assert entry.variant == variant and variant in VARIANTS and tag
    assert entry.urls and len(set(entry.urls)) == len(entry.urls)
    for url in entry.urls:
        parsed = urlparse(url)
        assert parsed.scheme == "https" and parsed.netloc
        assert parsed.path.rsplit("/", 1)[-1] == entry.filename
    assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert entry.approx_size_mib is None or 50 < entry.approx_size_mib < 300
    assert entry.source_format in SOURCE_FORMATS
    assert entry.form in FORMS
    assert entry.class_names == COCO_CLASS_NAMES and entry.num_classes == 80
    assert entry.class_names_source
    assert 40 < entry.coco_map < 60
    p = entry.preprocessing
    settings = (p.resize_longest_side, p.pad_to, p.pad_value, p.divide_by, p.channel_order)
    assert settings == (636, (640, 640), 114, 255.0, "RGB")
    assert "redistribution" in entry.license and "ships no weights" in entry.license


def test_every_variant_has_both_published_files():
    for variant in VARIANTS:
        sg, ultralytics = get_entry(f"{variant}.coco"), get_entry(f"{variant}.coco_ultralytics")
        assert sg.source_format == "sg_checkpoint" and sg.filename == f"{variant}_coco.pth" and sg.sha256
        assert ultralytics.source_format == "ultralytics_whole_model" and ultralytics.filename == f"{variant}.pt"
        assert ultralytics.urls[0] == f"https://github.com/ultralytics/assets/releases/download/v8.1.0/{variant}.pt"


def test_published_sha256_of_the_super_gradients_files():
    assert get_entry("yolo_nas_s.coco").sha256.startswith("c1b1d9148ab8")
    assert get_entry("yolo_nas_m.coco").sha256.startswith("b194fc7fa196")
    assert get_entry("yolo_nas_l.coco").sha256.startswith("91a06beaa1ce")


def test_bare_variant_name_means_the_super_gradients_checkpoint():
    for variant in VARIANTS:
        assert get_entry(variant) is get_entry(f"{variant}.coco")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownWeightsError) as info:
        get_entry("yolo_nas_xl")
    message = str(info.value)
    assert "'yolo_nas_xl'" in message
    for name in list_weights():
        assert name in message
    assert isinstance(info.value, ValueError)


def test_coco_class_names():
    assert len(COCO_CLASS_NAMES) == len(set(COCO_CLASS_NAMES)) == 80
    assert COCO_CLASS_NAMES[0] == "person" and COCO_CLASS_NAMES[-1] == "toothbrush"
    assert COCO_CLASS_NAMES[62] == "tv" and COCO_CLASS_NAMES[60] == "dining table"
