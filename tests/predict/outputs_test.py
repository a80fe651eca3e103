"""What predict and track write, in Ultralytics' names and layouts: label lines and crops equal to the real
Ultralytics package's, annotated videos (H.264, the source rate over vid_stride, one frame per
prediction), labels/<name>_<k>.txt per frame, crops/<class>/, and predictions.json records with frame,
time and track IDs; a failed run leaves nothing. Then the same from the `nasjax` command (one compile of
the random-weight model at imgsz 64 for the module). Clips are made here with PyAV."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from nasjax import cli  # noqa: E402
from nasjax.predict.results import Boxes, Results  # noqa: E402
from nasjax.predict.save import PREDICTIONS_FILE, PredictionRun, SaveOptions  # noqa: E402
from nasjax.predict.video import VideoInfo, VideoWriter, count_frames  # noqa: E402
from ultralytics_package import import_ultralytics  # noqa: E402

IMGSZ = 64
NAMES = {0: "person", 2: "car", 5: "bus"}


def boxes_on(shape, seed: int, tracked: bool = False) -> Boxes:
    """Boxes inside, across and outside the edges of an image of `shape`, in descending confidence."""
    h, w = shape
    rng = np.random.default_rng(seed)
    n = 5
    x1 = rng.uniform(-10, w - 5, n)
    y1 = rng.uniform(-10, h - 5, n)
    xyxy = np.stack([x1, y1, x1 + rng.uniform(3, w / 2, n), y1 + rng.uniform(3, h / 2, n)], 1).astype(np.float32)
    conf = np.sort(rng.uniform(0.1, 0.99, n).astype(np.float32))[::-1]
    cls = rng.choice([0, 2, 5], n)
    return Boxes(xyxy, conf, cls, shape, np.arange(1, n + 1) * 7 if tracked else None)


def image(shape=(97, 131), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*shape, 3), np.uint8)


# --- Ultralytics' label lines and crops --------------------------------------------------------------------


@pytest.mark.parametrize("tracked", [False, True])
def test_label_lines_and_crops_equal_ultralytics(tmp_path, tmp_path_factory, tracked):
    ultralytics, torch = import_ultralytics(tmp_path_factory.mktemp("ultralytics_config"))
    from ultralytics.engine.results import Results as UltralyticsResults

    rgb = image()
    ours = Results(rgb, boxes_on(rgb.shape[:2], seed=3, tracked=tracked), NAMES, "bus.jpg")
    b = ours.boxes
    columns = [b.xyxy, *([b.id[:, None].astype(np.float32)] if tracked else []), b.conf[:, None],
               b.cls[:, None].astype(np.float32)]
    theirs = UltralyticsResults(rgb[..., ::-1].copy(), "bus.jpg", NAMES,
                                boxes=torch.from_numpy(np.concatenate(columns, 1)))
    for save_conf in (False, True):
        theirs.save_txt(tmp_path / f"theirs{save_conf}.txt", save_conf=save_conf)
        ours.save_txt(tmp_path / f"ours{save_conf}.txt", save_conf=save_conf)
        expected = (tmp_path / f"theirs{save_conf}.txt").read_text()
        assert (tmp_path / f"ours{save_conf}.txt").read_text() == expected
        assert len(expected.splitlines()[0].split()) == 5 + save_conf + tracked
    theirs.save_crop(tmp_path / "theirs", file_name="bus.jpg")
    ours.save_crop(tmp_path / "ours", file_name="bus.jpg")
    theirs_files = sorted(p.relative_to(tmp_path / "theirs") for p in (tmp_path / "theirs").rglob("*.jpg"))
    ours_files = sorted(p.relative_to(tmp_path / "ours") for p in (tmp_path / "ours").rglob("*.jpg"))
    assert ours_files == theirs_files and len(ours_files) >= 3  # the same names, -2, -3 for a repeated class
    for name in ours_files:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes()


def test_no_detections_write_no_label_file(tmp_path):
    empty = Results(image(), Boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0), (97, 131)), NAMES, "a.jpg")
    assert empty.save_txt(tmp_path / "a.txt") is None and not (tmp_path / "a.txt").exists()


def test_supervision_round_trip_keeps_everything():
    rgb = image()
    ours = Results(rgb, boxes_on(rgb.shape[:2], seed=1, tracked=True), NAMES, "a.jpg")
    detections = ours.to_supervision()
    assert list(detections.data["class_name"]) == [NAMES[c] for c in ours.boxes.cls]
    back = Results.from_supervision(detections, rgb, NAMES, "a.jpg")
    for field in ("xyxy", "conf", "cls", "id"):
        np.testing.assert_array_equal(getattr(back.boxes, field), getattr(ours.boxes, field))
    import supervision as sv

    annotated = sv.BoxAnnotator().annotate(rgb.copy(), detections)  # supervision's own tools take it
    assert annotated.shape == rgb.shape and not np.array_equal(annotated, rgb)


# --- a run folder with videos -------------------------------------------------------------------------------


def frames_of(path: str, n: int, shape=(48, 80), fps=30.0, stride=1, live=False) -> list[Results]:
    info = VideoInfo(path, 0, fps, shape[1], shape[0], n, live, stride)
    out = []
    for k, index in enumerate(range(0, n, stride)):
        rgb = image(shape, seed=index)
        out.append(Results(rgb, boxes_on(shape, seed=index, tracked=True), NAMES, path, frame=index,
                           timestamp=index / fps, video=info))
    return out


def test_a_video_run_has_ultralytics_layout(tmp_path):
    save_dir = tmp_path / "run"
    options = SaveOptions(save_txt=True, save_conf=True, save_crop=True)
    first = frames_of("/a/clip.mp4", 10, stride=2)  # 5 frames at 15 fps
    second = frames_of("/b/clip.mkv", 4, shape=(33, 51), fps=30000 / 1001)  # same stem, odd sides
    still = Results(image(), boxes_on((97, 131), seed=9), NAMES, "/c/bus.jpg")
    with PredictionRun(save_dir) as run:
        for r in [first[0], second[0], first[1], still, *second[1:], *first[2:]]:  # interleaved, as streams come
            run.add(r, options=options)
        run.finish({"model": "m"})
    files = sorted(str(p.relative_to(save_dir)) for p in save_dir.rglob("*") if p.is_file())
    assert {"clip.mp4", "clip_1.mp4", "bus.jpg", PREDICTIONS_FILE} <= set(files)
    assert count_frames(save_dir / "clip.mp4") == (5, 15.0)
    frames, fps = count_frames(save_dir / "clip_1.mp4")
    assert frames == 4 and abs(fps - 30000 / 1001) < 1e-6
    labels = sorted(f for f in files if f.startswith("labels/"))
    assert labels == sorted([*(f"labels/clip_{k}.txt" for k in range(1, 6)), *(f"labels/clip_1_{k}.txt" for k in range(1, 5)),
                             "labels/bus.txt"])
    assert (save_dir / "labels/clip_2.txt").read_text().splitlines() == first[1].text_lines(save_conf=True)
    assert any(f.startswith("crops/person/") for f in files)
    records = json.loads((save_dir / PREDICTIONS_FILE).read_text())["images"]
    clip = [r for r in records if r["source"] == "/a/clip.mp4"]
    assert [r["frame"] for r in clip] == [0, 2, 4, 6, 8] and clip[1]["timestamp"] == pytest.approx(2 / 30, abs=1e-6)
    assert [d["track_id"] for d in clip[0]["detections"]] == [7, 14, 21, 28, 35]
    assert "frame" not in [r for r in records if r["source"] == "/c/bus.jpg"][0]


def test_a_failed_video_run_leaves_nothing(tmp_path):
    save_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with PredictionRun(save_dir) as run:
            for r in frames_of("clip.mp4", 6):
                run.add(r, options=SaveOptions(save_txt=True))
            raise RuntimeError("interrupted")
    assert not save_dir.exists()
    assert not [t for t in threading.enumerate() if t.name == "nasjax-video-writer"]


def test_video_writer_size_and_rate(tmp_path):
    writer = VideoWriter(tmp_path / "odd.mp4", 25, 31, 17)
    for k in range(7):
        writer.write(np.full((17, 31, 3), k * 30, np.uint8))
    with pytest.raises(ValueError, match="frame of 32x17"):
        writer.write(np.zeros((17, 32, 3), np.uint8))
    writer.close()
    assert count_frames(tmp_path / "odd.mp4") == (7, 25.0)


# --- the command -------------------------------------------------------------------------------------------


def make_clip(path: Path, n: int = 12, size=(96, 64), fps: int = 30) -> Path:
    import av

    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(n):
            rgb = np.full((h, w, 3), 40, np.uint8)
            rgb[10:40, 3 * k: 3 * k + 30] = (250, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def run(argv) -> int:
    with pytest.raises(SystemExit) as exit:
        cli.main(list(argv))
    return exit.value.code


def one_line_error(capsys, argv) -> str:
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module", autouse=True)
def one_random_model():
    """The commands below build the same random-weight model (`random_weights=true`, seed 0): built once
    for the module, the later commands get that one (the command's own code runs as it is)."""
    import nasjax

    load, built = nasjax.load, {}

    def load_once(name, pretrained=True, **options):
        if pretrained or options:
            return load(name, pretrained=pretrained, **options)
        if name not in built:
            built[name] = load(name, pretrained=False)
        return built[name]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nasjax, "load", load_once)
        yield


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("media")
    make_clip(folder / "clip.mp4", n=12)
    Image.fromarray(image((40, 60))).save(folder / "still.png")
    return folder


def test_predict_a_folder_of_images_and_videos(media, tmp_path, capsys):
    argv = ["predict", f"source={media}", "random_weights=true", f"imgsz={IMGSZ}", "conf=0.01", "max_det=5",
            "vid_stride=2", "save_txt=true", "save_crop=true", "classes=0,2,5,22,56", f"project={tmp_path}"]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "1 image, 6 video frames →" in out and "clip.mp4 frame 10:" in out
    save_dir = tmp_path / "predict"
    assert count_frames(save_dir / "clip.mp4") == (6, 15.0)
    records = json.loads((save_dir / PREDICTIONS_FILE).read_text())["images"]
    assert [r.get("frame") for r in records] == [0, 2, 4, 6, 8, 10, None]
    classes = {d["class"] for r in records for d in r["detections"]}
    assert classes and classes <= {0, 2, 5, 22, 56}
    labelled = {p.stem for p in (save_dir / "labels").glob("*.txt")}
    expected = {f"clip_{k}" for k, r in enumerate(records[:6], 1) if r["detections"]}
    assert labelled - {"still"} == expected
    assert os.path.isdir(save_dir / "crops")


def test_track_command_writes_ids(media, tmp_path, capsys):
    pytest.importorskip("trackers")
    argv = ["track", f"source={media / 'clip.mp4'}", "random_weights=true", f"imgsz={IMGSZ}", "conf=0.01",
            "max_det=5", "save_txt=true", f"project={tmp_path}"]
    assert run(argv) == 0
    assert "12 video frames →" in capsys.readouterr().out
    save_dir = tmp_path / "track"
    assert count_frames(save_dir / "clip.mp4") == (12, 30.0)
    records = json.loads((save_dir / PREDICTIONS_FILE).read_text())["images"]
    ids = [d["track_id"] for r in records for d in r["detections"]]
    assert all(i >= 1 for i in ids)
    for r, k in zip(records, range(1, 13)):
        if r["detections"]:
            lines = (save_dir / "labels" / f"clip_{k}.txt").read_text().splitlines()
            assert [int(line.split()[-1]) for line in lines] == [d["track_id"] for d in r["detections"]]


@pytest.mark.parametrize("argv, fragment", [
    (["classes=a"], "classes=a: expected integers separated by commas"),
    (["source=http://127.0.0.1:9/live", "stream_timeout=1"], "cannot open stream http://127.0.0.1:9/live"),
    (["source=97"], "cannot open webcam 97"),
    (["vid_stride=0"], "vid_stride must be a positive integer"),
])
def test_bad_video_settings_are_one_line(media, tmp_path, capsys, argv, fragment):
    base = {"source": str(media / "clip.mp4"), "random_weights": "true", "imgsz": str(IMGSZ),
            "project": str(tmp_path)}
    base.update(a.split("=", 1) for a in argv)
    err = one_line_error(capsys, ["predict", *(f"{k}={v}" for k, v in base.items())])
    assert fragment in err
    assert not (tmp_path / "predict").exists()  # nothing left behind


def test_track_help_shows_track_defaults(capsys):
    assert run(["track", "--help"]) == 0
    out = capsys.readouterr().out
    assert "conf=float (default 0.1)" in out and "tracker=str (default bytetrack)" in out
    assert "vid_stride=int (default 1)" in out and "save_txt=bool (default False)" in out
