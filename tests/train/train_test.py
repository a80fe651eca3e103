"""nasjax.train on a tiny generated YOLO-format dataset: the loss falls, checkpoints load, a run resumes
exactly from its run.json, a finished run fine-tunes further, every model source trains, bad input fails
clearly (docs/training.md)."""
from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

import nasjax
import torch_files
from synthetic import draw_boxes
from nasjax.data import DatasetError
from nasjax.data import Augmentation, Loader, load_split
from nasjax.train import TrainingError, train



def make_dataset(root: Path, n: int = 8, size: int = 64, seed: int = 0, labels: bool = True,
                 bad_class: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n if split == "train" else 4):
            image = np.full((size, size, 3), 128, np.uint8)
            rows = [f"{5 if bad_class else cls} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
                    for cls, x, y, w, h in draw_boxes(image, rng, sides=(12, 30))]
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            if labels:
                (root / "labels" / split / f"{i}.txt").write_text("\n".join(rows) + "\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: red\n  1: blue\n")
    return yaml


def test_loader_is_deterministic_and_fixed_shape(tmp_path):
    data = make_dataset(tmp_path)
    dataset = load_split(data, "train")
    light = Augmentation.light()
    a = list(Loader(dataset, 4, 64, seed=3, augmentation=light).epoch(1))
    b = list(Loader(dataset, 4, 64, seed=3, workers=1, augmentation=light).epoch(1))
    assert len(a) == 2
    for x, y in zip(a, b):
        assert x.images.shape == (4, 64, 64, 3) and x.images.dtype == np.float32
        assert 0.0 <= x.images.min() and x.images.max() <= 1.0
        assert x.targets.boxes.shape == (4, 2, 4) and x.targets.mask.any(axis=1).all()
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.targets.boxes, y.targets.boxes)
    other = list(Loader(dataset, 4, 64, seed=3, augmentation=light).epoch(2))
    assert not np.array_equal(a[0].images, other[0].images)


def test_no_labels_is_a_clear_error(tmp_path):
    data = make_dataset(tmp_path, labels=False)
    with pytest.raises(DatasetError, match="no labelled boxes"):
        train(data, epochs=1, batch=2, imgsz=64, project=tmp_path / "run", progress=False)


def test_class_beyond_names_is_a_clear_error(tmp_path):
    data = make_dataset(tmp_path, bad_class=True)
    with pytest.raises(DatasetError, match="class id 5 is outside"):
        train(data, epochs=1, batch=2, imgsz=64, project=tmp_path / "run", progress=False)


def test_pretrained_transfer_keeps_only_mismatched_head():
    from nasjax.train.initial import transfer_matching

    source = nasjax.build("yolo_nas_s", form="training", num_classes=80, seed=1)
    target = nasjax.build("yolo_nas_s", form="training", num_classes=2, seed=0)
    variables, kept = transfer_matching(source.variables, target.variables)
    assert sorted(kept) == sorted(f"heads/head{i}/cls_pred/{n}" for i in (1, 2, 3) for n in ("bias", "kernel"))
    copied = dict(nnx.to_flat_state(variables))
    path = ("backbone", "stem", "conv", "branch_3x3", "conv", "kernel")
    np.testing.assert_array_equal(copied[path][...], dict(nnx.to_flat_state(source.variables))[path][...])


# ---- the whole trainer (docs/training.md) ---------------------------------------------------------------
# One module-scoped set of runs (compiling the step dominates; `cached_train_step` lets the runs share one
# compilation): A trains 4 epochs straight; B stops after epoch 2 (max_steps) and is resumed with nothing
# but resume=True and where the run is. Every setting in RUN but seed is not the default, so a resume
# that fell back to the defaults (10 epochs, batch 16, 640 px, lr 2e-4, ...) would not end where A does.
# ATSS throughout: it assigns targets from step 0, so the loss measures learning from the start (the
# task-aligned assigner assigns little to a model at its initial 0.01 prior, and its loss rises at first).
RUN = dict(epochs=4, batch=4, imgsz=64, lr=1e-3, warmup_steps=0, seed=0, workers=2, progress=False,
           augmentation="light", static_assigner_epochs=4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = make_dataset(root / "data", n=16)
    project = root / "runs"
    a = train(data, "yolo_nas_s", project=project, name="a", **RUN)
    b_first = train(data, "yolo_nas_s", project=project, name="b", max_steps=8, **RUN)
    b_run_json = (project / "b" / "run.json").read_text()
    b_resumed = train(resume=True, project=project, name="b")
    return {"data": data, "project": project, "a": a, "b_first": b_first, "b_resumed": b_resumed,
            "b_run_json": b_run_json}


def test_train_loss_falls_and_checkpoints_load(runs):
    a = runs["a"]
    losses = a["step_losses"]
    assert len(losses) == 16 and all(np.isfinite(losses))
    epoch_means = [record["train_loss"] for record in a["history"]]
    assert epoch_means[-1] < 0.92 * epoch_means[0], epoch_means  # measured: 3.66 -> 3.09
    run = a["project"]
    assert run == runs["project"] / "a"
    for name in ("last", "best"):
        assert (run / name / "nasjax.json").is_file()
    for name in ("results.json", "results.png", "run.json"):
        assert (run / name).is_file(), name
    assert (run / "state").is_dir()
    assert Image.open(run / "results.png").size[0] > 400
    record = a["history"][-1]
    assert {"val_loss", "train_loss_cls", "map50_95", "map50"} <= set(record)
    assert 0.0 <= record["map50_95"] <= record["map50"] <= 1.0
    best = json.loads((run / "results.json").read_text())
    assert best["best_metric"] == "map50_95" and best["best_value"] == max(r["map50_95"] for r in a["history"])
    saved = json.loads((run / "run.json").read_text())
    assert saved["config"] == a["config"].to_dict() and saved["config"]["lr"] == 1e-3
    assert (saved["model"], saved["variant"], saved["class_names"]) == ("yolo_nas_s", "yolo_nas_s", ["red", "blue"])
    assert saved["data"] == str(runs["data"])
    detector = nasjax.load(run / "last")  # saved in the training form, fused when loaded for inference
    assert detector.form == "full" and detector.num_classes == 2 and detector.class_names == ["red", "blue"]
    boxes, scores = detector(np.zeros((1, 64, 64, 3), np.float32))
    assert boxes.shape[-1] == 4 and scores.shape[-1] == 2 and np.isfinite(np.asarray(scores)).all()
    assert nasjax.load(run / "last", fuse=False).form == "training"


def test_resume_continues_exactly_from_run_json(runs):
    """The regression test for resuming: B was started with non-default epochs, batch, imgsz, lr, warm-up,
    augmentation and assigner, stopped after its second epoch, and resumed with nothing but resume=True
    and project / name: it ends with A's losses and weights, and its run.json is untouched."""
    a, first, resumed = runs["a"], runs["b_first"], runs["b_resumed"]
    assert len(first["history"]) == 2 and len(first["step_losses"]) == 8
    assert len(resumed["step_losses"]) == 8 and [r["epoch"] for r in resumed["history"]] == [1, 2, 3, 4]
    assert resumed["config"] == dataclasses.replace(first["config"], max_steps=None)
    assert (runs["project"] / "b" / "run.json").read_text() == runs["b_run_json"]
    # Same batches, schedule, optimizer state and EMA: the resumed run ends where the straight run does.
    np.testing.assert_allclose(resumed["step_losses"], a["step_losses"][8:], rtol=1e-5)
    straight = dict(nnx.to_flat_state(nasjax.load(a["last"], fuse=False).variables))
    for path, leaf in nnx.to_flat_state(nasjax.load(resumed["last"], fuse=False).variables):
        np.testing.assert_allclose(leaf[...], straight[path][...], rtol=1e-5, atol=1e-6, err_msg=str(path))


def test_resume_finds_the_latest_run_and_keeps_its_settings(runs):
    project = runs["project"]
    # Without a name: the most recently written run under project (B); it has finished its 4 epochs.
    with pytest.raises(TrainingError, match=f"{project / 'b'} has finished all 4 epochs; give a larger epochs"):
        train(resume=True, project=project)
    # The saved value given again is fine; another one is an error that names the setting.
    with pytest.raises(TrainingError, match="has finished all 4 epochs"):
        train(resume=True, project=project, name="a", lr=1e-3, batch=4)
    with pytest.raises(TrainingError, match=r"resume: lr cannot change on resume .* lr=0.001, got 0.5.*epochs"):
        train(resume=True, project=project, name="a", lr=0.5)
    with pytest.raises(TrainingError, match="resume: dtype cannot change on resume"):
        train(resume=True, project=project, name="a", dtype="bfloat16")


def test_resume_bad_cases_are_clear_errors(runs, tmp_path):
    data, project = runs["data"], runs["project"]
    with pytest.raises(TrainingError, match="trains model yolo_nas_s, not yolo_nas_m; the model cannot change"):
        train(data, "yolo_nas_m", project=project, name="a", resume=True)
    with pytest.raises(TrainingError, match="no run with a training state"):
        train(data, "yolo_nas_s", project=tmp_path / "empty", resume=True)
    with pytest.raises(TrainingError, match="has no training state"):
        train(data, "yolo_nas_s", project=tmp_path, name="nothing", resume=True)
    other = make_dataset(tmp_path / "other", n=4)
    other.write_text(other.read_text().replace("1: blue", "1: green"))
    with pytest.raises(TrainingError, match="trains classes"):
        train(other, project=project, name="a", resume=True)
    with pytest.raises(TrainingError, match="data is required"):
        train(project=tmp_path)


def test_fine_tune_a_finished_run_from_best(runs):
    """A finished run's best/ holds the training form, so it starts a new run, as Ultralytics' best.pt."""
    from nasjax.train.initial import initial_model

    a, best = runs["a"], runs["a"]["best"]
    module = initial_model(best, 2, pretrained=False, seed=0)
    expected = dict(nnx.to_flat_state(nasjax.load(best, fuse=False).variables))
    for path, leaf in nnx.to_flat_state(nnx.state(module)):
        np.testing.assert_array_equal(leaf[...], expected[path][...], err_msg=str(path))
    tuned = train(runs["data"], best, project=runs["project"].parent / "tuned", max_steps=4, **RUN)
    assert json.loads((tuned["project"] / "run.json").read_text())["model"] == str(best)
    assert len(tuned["step_losses"]) == 4 and tuned["step_losses"] != a["step_losses"][:4]
    assert nasjax.load(tuned["last"], fuse=False).form == "training"  # and so on, run after run


def _training_state_dict(seed: int, form: str = "training"):
    from nasjax.model.deterministic_weights import deterministic_state_dict
    from nasjax.model.state_dict import reference_key_shapes

    return deterministic_state_dict(reference_key_shapes("yolo_nas_s", form, 2), seed, "scratch")


def _source(kind: str, runs, tmp_path):
    """(a model source of this kind, the training-form variables training must start from)."""
    from nasjax.loading.checkpoint import save_detector

    if kind == "name":
        return "yolo_nas_s", nasjax.build("yolo_nas_s", form="training", num_classes=2, init="scratch").variables
    if kind in ("pth", "safetensors"):
        state_dict = _training_state_dict(7)
        path = tmp_path / f"weights.{kind}"
        if kind == "pth":
            torch_files.save_checkpoint(path, state_dict)  # a super-gradients training checkpoint ("net")
        else:
            torch_files.save_safetensors(path, state_dict)
        return path, nasjax.from_state_dict(state_dict, form=None).variables
    if kind == "converted_dir":
        network = nasjax.build("yolo_nas_s", form="training", num_classes=2, seed=8)
        save_detector(network, tmp_path / "converted")
        return tmp_path / "converted", network.variables
    if kind == "run_last":
        return runs["a"]["last"], nasjax.load(runs["a"]["last"], fuse=False).variables
    if kind == "detector":
        detector = nasjax.load(runs["a"]["last"], fuse=False)
        return detector, detector.variables
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["name", "pth", "safetensors", "converted_dir", "run_last", "detector"])
def test_train_starts_from_every_model_source(kind, runs, tmp_path):
    """Every source the other commands accept: its training-form weights are where training starts; then
    one step of training at 64 px."""
    from nasjax.train.initial import initial_model

    source, expected = _source(kind, runs, tmp_path)
    module = initial_model(source, 2, pretrained=False, seed=0)
    expected = dict(nnx.to_flat_state(expected))
    got = list(nnx.to_flat_state(nnx.state(module)))
    assert len(got) == len(expected)
    for path, leaf in got:
        np.testing.assert_array_equal(np.asarray(leaf[...]), np.asarray(expected[path][...]), err_msg=str(path))
    options = dict(project=tmp_path / "runs", max_steps=1, val=False, plot=False, **RUN)
    result = source.train(runs["data"], **options) if kind == "detector" else train(runs["data"], source, **options)
    assert result["project"] == tmp_path / "runs" / "train"
    assert len(result["step_losses"]) == 1 and np.isfinite(result["step_losses"][0])


def test_fused_sources_cannot_be_trained(runs, tmp_path):
    from nasjax.loading.checkpoint import save_detector

    fused_file = torch_files.save_safetensors(tmp_path / "fused.safetensors", _training_state_dict(3, "full"))
    fused_dir = save_detector(nasjax.build("yolo_nas_s", num_classes=2), tmp_path / "fused_dir")
    for source in (fused_file, fused_dir, nasjax.load(runs["a"]["best"])):
        with pytest.raises(TrainingError, match=r"fused \('full' form\) and cannot be trained.*fuse=False"):
            train(runs["data"], source, project=tmp_path / "runs", **RUN)
    assert not (tmp_path / "runs").exists()  # nothing written for a run that could not start
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        train(runs["data"], tmp_path / "missing.pt", project=tmp_path / "runs", **RUN)


def test_out_of_memory_is_a_clear_error(runs, monkeypatch):
    import nasjax.train.trainer as training

    def exhausted(*args, **kwargs):
        def step(*a, **k):
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB")
        return step

    monkeypatch.setattr(training, "cached_train_step", exhausted)
    with pytest.raises(TrainingError, match=r"out of memory training at batch 4 x 64x64 px .* try --batch 2"):
        train(runs["data"], "yolo_nas_s", project=runs["project"], name="oom", **RUN)


def test_batch_must_split_over_devices():
    from nasjax.train.trainer import check_batch_split

    mesh = jax.sharding.Mesh(np.asarray(jax.devices() * 1), ("data",))
    check_batch_split(3, mesh)  # one device: any batch
    fake = types.SimpleNamespace(devices=np.empty(4, object))
    with pytest.raises(TrainingError, match="batch 6 does not split evenly over 4 devices.*4 or 8"):
        check_batch_split(6, fake)


def test_bad_settings_are_clear_errors(tmp_path):
    data = make_dataset(tmp_path / "d", n=4)
    with pytest.raises(TrainingError, match="dtype must be one of"):
        train(data, dtype="float16", project=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="augmentation must be one of"):
        train(data, augmentation="heavy", project=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="multiple of 32"):
        train(data, imgsz=100, project=tmp_path, progress=False)
    fused = nasjax.build("yolo_nas_s", num_classes=2)
    with pytest.raises(TrainingError, match="cannot be trained.*fuse=False"):
        fused.train(data, epochs=1, project=tmp_path, progress=False)


def test_cli_bad_input_exits_2_with_message(tmp_path, capsys):
    from nasjax.cli import main

    data = make_dataset(tmp_path / "d", labels=False)
    with pytest.raises(SystemExit) as exit:
        main(["train", f"data={data}", f"project={tmp_path / 'p'}", "imgsz=64"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nasjax train: error: ") and "no labelled boxes" in err and err.count("\n") == 1


def test_initial_model_from_a_training_form_detector():
    from nasjax.train.initial import initial_model

    source = nasjax.build("yolo_nas_s", form="training", num_classes=2, seed=5)
    module = initial_model(source, 2, pretrained=False, seed=0)
    path = ("heads", "head1", "cls_pred", "kernel")
    got = dict(nnx.to_flat_state(nnx.state(module)))[path][...]
    np.testing.assert_array_equal(got, dict(nnx.to_flat_state(source.variables))[path][...])


def test_scratch_init_is_pytorch_default_with_class_prior():
    from nasjax.model.deterministic_weights import PRIOR_CLS_BIAS, scratch_tensor

    kernel = scratch_tensor("backbone.stem.conv.branch_3x3.conv.weight", (48, 3, 3, 3))
    assert np.abs(kernel).max() <= 1 / np.sqrt(27) and kernel.std() > 0.5 / np.sqrt(27) / np.sqrt(3)
    np.testing.assert_array_equal(kernel, scratch_tensor("backbone.stem.conv.branch_3x3.conv.weight", (48, 3, 3, 3)))
    assert not np.array_equal(kernel, scratch_tensor("backbone.stem.conv.branch_3x3.conv.weight", (48, 3, 3, 3), 1))
    assert (scratch_tensor("x.bn.weight", (4,)) == 1).all() and (scratch_tensor("x.bn.running_var", (4,)) == 1).all()
    assert (scratch_tensor("x.bn.bias", (4,)) == 0).all() and (scratch_tensor("x.alpha", (1,)) == 1).all()
    np.testing.assert_allclose(scratch_tensor("heads.head1.cls_pred.bias", (80,)), np.log(0.01 / 0.99), rtol=1e-6)
    assert PRIOR_CLS_BIAS == pytest.approx(-4.59512)


def test_coco_json_splits_for_training_drop_crowd_boxes(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "images" / "train" / "a.jpg")
    (tmp_path / "annotations").mkdir()
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 60, 40], "area": 2400, "iscrowd": 1}]}
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: annotations/instances_train.json\n"
                                        f"val: annotations/instances_train.json\nnames: {{0: cat, 1: dog}}\n")
    for data in (tmp_path / "data.yaml", tmp_path / "annotations" / "instances_train.json"):
        dataset = load_split(data, "train")
        (sample,) = dataset.samples
        np.testing.assert_allclose(sample.boxes, [[5, 5, 25, 15]])
        assert sample.classes.tolist() == [1] and dataset.names == {0: "cat", 1: "dog"}
