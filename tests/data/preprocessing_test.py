"""nasjax.data.preprocessing against OpenCV and super-gradients (tests/reference/predict_reference.npz)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import REFERENCE_DIR, _load_by_path
from PIL import Image

from nasjax.data import preprocessing
from nasjax.data.preprocessing import ImageLoadError

cases = _load_by_path("predict_cases", REFERENCE_DIR / "predict_cases.py")


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(REFERENCE_DIR / "predict_reference.npz") as data:
        return dict(data)


@pytest.mark.parametrize("resize", ["resize_linear", "resize_linear_numpy"])
@pytest.mark.parametrize("h,w,h2,w2", cases.RESIZE_CASES + cases.RESIZE_CASES_LARGE)
def test_resize_is_bit_exact_with_opencv(reference, h, w, h2, w2, resize):
    """Both the numpy resize and resize_linear (OpenCV's own where it imports) give the reference pixels."""
    ours = getattr(preprocessing, resize)(cases.noise_image(h, w, 0), h2, w2)
    expected = reference[f"resize/{h}x{w}_to_{h2}x{w2}"]
    assert ours.shape == (h2, w2, 3) and ours.dtype == np.uint8
    if expected.dtype.kind == "U":
        assert cases.sha256(ours) == str(expected)
    else:
        np.testing.assert_array_equal(ours, expected)


def image_names(reference, kind):
    names = sorted({k.split("/")[1] for k in reference if k.startswith("image/")})
    generated = {name for name, *_ in cases.GENERATED_IMAGES}
    return [n for n in names if (n in generated) == (kind == "generated")]


def source_of(name, shared=None):
    for gname, h, w, seed in cases.GENERATED_IMAGES:
        if gname == name:
            return cases.pattern_image(h, w, seed)
    relative = dict(cases.REAL_IMAGES)[name]
    return shared / "assets" / relative


def check_preprocessing(reference, name, source):
    p = f"image/{name}/"
    image = preprocessing.load_image(source)
    assert cases.sha256(image) == str(reference[p + "rgb_sha256"]), f"{name}: decoded pixels differ"
    network_input, transform = preprocessing.preprocess(image)
    assert network_input.shape == (640, 640, 3) and network_input.dtype == np.uint8
    chw = preprocessing.to_unit_float(network_input).transpose(2, 0, 1)
    assert cases.sha256(chw) == str(reference[p + "input_sha256"]), f"{name}: network input differs"
    assert transform.scale == float(reference[p + "scale"])
    assert transform.pad == tuple(int(v) for v in reference[p + "pad"])


def test_preprocessing_matches_super_gradients_generated(reference):
    names = image_names(reference, "generated")
    assert len(names) == len(cases.GENERATED_IMAGES)
    for name in names:
        check_preprocessing(reference, name, source_of(name))


def test_preprocessing_matches_super_gradients_real_images(reference, shared_dir):
    names = image_names(reference, "real")
    assert names, "the reference holds no real-image cases"
    for name in names:
        path = source_of(name, shared_dir)
        if not path.exists():
            pytest.skip(f"{path} absent")
        check_preprocessing(reference, name, path)


def test_boxes_map_back_exactly_as_super_gradients(reference):
    """SG's NMS rows (network-input pixels) through our mapping equal its predict() boxes bit for bit."""
    names = sorted({k.split("/")[1] for k in reference if k.startswith("image/")})
    for name in names:
        p = f"image/{name}/"
        h, w = (int(v) for v in reference[p + "rgb_shape"][:2])
        transform = preprocessing.centre_pad_transform((h, w))
        mapped = transform.boxes_to_original(reference[p + "nms"][:, :4])
        np.testing.assert_array_equal(mapped, reference[p + "predict_boxes"], err_msg=name)


def test_centre_pad_geometry():
    t = preprocessing.centre_pad_transform((480, 640))  # docs/preprocessing.md#centre-pad's example
    assert t.resized_shape == (477, 636) and t.pad == (81, 2, 82, 2) and t.scale == 0.99375
    t = preprocessing.centre_pad_transform((636, 100))  # scale exactly 1: no resize
    assert t.resized_shape == (636, 100) and t.pad == (2, 270, 2, 270)
    t = preprocessing.centre_pad_transform((10, 20))  # upscaling
    assert t.resized_shape == (318, 636)
    image = cases.pattern_image(10, 20, 0)
    out = t.apply(image)
    assert out.shape == (640, 640, 3) and (out[: t.pad[0]] == 114).all() and (out[:, : t.pad[1]] == 114).all()


def test_letterbox_geometry_and_mapping():
    t = preprocessing.letterbox_transform((1080, 810))  # bus.jpg, square
    assert t.resized_shape == (640, 480) and t.input_shape == (640, 640) and t.pad == (0, 80, 0, 80)
    t = preprocessing.letterbox_transform((1080, 810), auto=True)  # minimal padding (docs/preprocessing.md#letterbox)
    assert t.input_shape == (640, 480) and t.pad == (0, 0, 0, 0)
    t = preprocessing.letterbox_transform((500, 381), auto=True)
    assert t.resized_shape == (640, 488) and t.input_shape == (640, 512) and t.pad == (0, 12, 0, 12)
    t = preprocessing.letterbox_transform((101, 640))  # odd total padding: round(dh -+ 0.1)
    assert t.resized_shape == (101, 640) and t.pad == (269, 0, 270, 0)
    boxes = np.array([[80, 0, 560, 640], [0, -10, 700, 100]], np.float32)
    back = preprocessing.letterbox_transform((1080, 810)).boxes_to_original(boxes)
    np.testing.assert_allclose(back[0], [0, 0, 810, 1080], atol=1e-3)
    assert back[1, 0] == 0 and back[1, 1] == 0 and back[1, 2] == 810  # clipped to the image


def test_make_transform_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiple of 32"):
        preprocessing.make_transform((100, 100), imgsz=630)
    with pytest.raises(ValueError, match="unknown preprocess"):
        preprocessing.make_transform((100, 100), method="stretch")
    assert preprocessing.make_transform((100, 100), imgsz=320).input_shape == (320, 320)


def test_unit_float_matches_float64_division():
    u = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(preprocessing.to_unit_float(u), (u / 255.0).astype(np.float32))


def save(tmp_path, image: Image.Image, name: str):
    path = tmp_path / name
    image.save(path)
    return path


def test_image_modes(tmp_path):
    rgb = cases.pattern_image(12, 16, 3)
    grey = rgb[..., 0]
    assert preprocessing.load_image(save(tmp_path, Image.fromarray(rgb), "a.png")).tolist() == rgb.tolist()
    np.testing.assert_array_equal(preprocessing.load_image(save(tmp_path, Image.fromarray(grey), "g.png")),
                                  np.repeat(grey[..., None], 3, -1))
    rgba = np.concatenate([rgb, np.full((12, 16, 1), 7, np.uint8)], -1)
    np.testing.assert_array_equal(preprocessing.load_image(save(tmp_path, Image.fromarray(rgba), "a4.png")), rgb)
    palette = Image.fromarray(rgb).quantize(16)
    np.testing.assert_array_equal(preprocessing.load_image(save(tmp_path, palette, "p.png")),
                                  np.asarray(palette.convert("RGB")))
    la = Image.fromarray(grey).convert("LA")
    np.testing.assert_array_equal(preprocessing.load_image(la), np.repeat(grey[..., None], 3, -1))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    np.testing.assert_array_equal(preprocessing.load_image(cmyk), np.asarray(cmyk.convert("RGB")))
    sixteen = (grey.astype(np.uint16) * 257 + 100).astype(np.uint16)
    path = save(tmp_path, Image.fromarray(sixteen), "16.png")
    loaded = preprocessing.load_image(path)
    np.testing.assert_array_equal(loaded[..., 0], np.rint(sixteen / 257).astype(np.uint8))
    assert (loaded[..., 0] == loaded[..., 2]).all()


def test_exif_orientation(tmp_path):
    rgb = cases.pattern_image(12, 16, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    assert preprocessing.load_image(path).shape == (12, 16, 3)  # as stored, like super-gradients
    assert preprocessing.load_image(path, exif_transpose=True).shape == (16, 12, 3)


def test_array_inputs():
    rgb = cases.pattern_image(5, 6, 0)
    assert preprocessing.load_image(rgb) is not None
    np.testing.assert_array_equal(preprocessing.load_image(rgb[..., :1]), np.repeat(rgb[..., :1], 3, -1))
    with pytest.raises(ImageLoadError, match="uint8"):
        preprocessing.load_image(rgb.astype(np.float32))
    with pytest.raises(ImageLoadError, match="CHW"):
        preprocessing.load_image(np.zeros((3, 20, 30), np.uint8))
    with pytest.raises(ImageLoadError, match="unsupported image source"):
        preprocessing.load_image(3.5)


def test_unreadable_files_are_named(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageLoadError, match="corrupt.jpg"):
        preprocessing.load_image(corrupt)
    good = tmp_path / "truncated.png"
    Image.fromarray(cases.pattern_image(64, 64, 1)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match="cut.png"):
        preprocessing.load_image(truncated)
    with pytest.raises(ImageLoadError, match="not found"):
        preprocessing.load_image(tmp_path / "missing.jpg")
