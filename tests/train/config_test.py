"""TrainConfig (settings as data), what a resume may change, and where runs are written; no training here."""
from __future__ import annotations

import dataclasses
import json

import pytest

from nasjax.data.augment import Augmentation
from nasjax.train import checkpoints
from nasjax.train.config import RESUME_OVERRIDABLE, TrainConfig, TrainingError, resumed_config
from nasjax.utils.paths import increment_path


def test_config_round_trips_through_json():
    config = TrainConfig(epochs=3, batch=8, lr=1e-3, dtype="bfloat16", augmentation="light", mosaic=0.5,
                         project="p", name="n", max_steps=7)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    custom = TrainConfig(augmentation=dataclasses.replace(Augmentation.light(), mixup_scale=(0.8, 1.2)))
    again = TrainConfig.from_dict(json.loads(json.dumps(custom.to_dict())))
    assert again == custom and isinstance(again.augmentation, Augmentation)
    assert again.resolved_augmentation() == custom.resolved_augmentation()
    assert TrainConfig(augmentation="recipe", mixup=0.1).resolved_augmentation().mixup_prob == 0.1


def test_defaults_are_the_recipe_and_ultralytics_layout():
    config = TrainConfig()
    assert (config.lr, config.weight_decay, config.warmup_steps, config.warmup_initial_lr) == (2e-4, 1e-5, 1000, 1e-6)
    assert (config.final_lr_ratio, config.ema_decay, config.augmentation) == (0.1, 0.9997, "recipe")
    assert (config.project, config.name) == ("runs/detect", None)


@pytest.mark.parametrize("setting, value, message", [
    ("epochs", 0, "epochs must be an integer >= 1"),
    ("batch", 2.5, "batch must be an integer"),
    ("imgsz", 100, "imgsz must be a positive multiple of 32"),
    ("lr", 0, "lr must be a positive number"),
    ("ema_decay", 1.0, r"ema_decay must be a number in \[0, 1\)"),
    ("final_lr_ratio", 2, r"final_lr_ratio must be a number in \[0, 1\]"),
    ("mosaic", 1.5, "mosaic is a probability"),
    ("dtype", "float16", "dtype must be one of float32, bfloat16"),
    ("best_metric", "map", "best_metric must be one of map50_95, val_loss"),
    ("augmentation", "heavy", "augmentation must be one of recipe, light, none"),
    ("augmentation", {"flip_prob": 2}, "augmentation: .*flip_prob"),
    ("method", "stretch", "method must be one of"),
    ("pretrained", "yes", "pretrained must be true or false"),
    ("max_steps", 0, "max_steps must be a positive integer"),
    ("name", "a/b", "name must be a folder name"),
    ("epoch", 3, "unknown training setting 'epoch'; did you mean 'epochs'"),
])
def test_each_setting_is_checked_with_a_clear_message(setting, value, message):
    with pytest.raises(TrainingError, match=message):
        TrainConfig().replace(**{setting: value})


def test_resume_takes_the_saved_settings_and_only_a_few_changes():
    saved = TrainConfig(epochs=2, batch=4, lr=1e-3, dtype="bfloat16", max_steps=3, workers=2, project="p", name="r")
    # Nothing given: the saved run exactly, except max_steps, which only stopped the call that set it.
    assert resumed_config(saved, {}, "p/r") == dataclasses.replace(saved, max_steps=None)
    # Where the run is, the same values again, and the resumable settings are accepted.
    same = resumed_config(saved, {"project": "elsewhere", "name": "x", "lr": 0.001, "dtype": "bfloat16",
                                  "epochs": 5, "workers": 1, "max_steps": 9, "progress": False}, "p/r")
    assert (same.epochs, same.workers, same.max_steps, same.progress, same.lr, same.batch) == (5, 1, 9, False, 1e-3, 4)
    assert set(RESUME_OVERRIDABLE) == {"epochs", "max_steps", "workers", "progress", "plot"}
    for setting, value in (("lr", 2e-4), ("batch", 16), ("dtype", "float32"), ("imgsz", 320), ("seed", 1),
                           ("augmentation", "light")):
        with pytest.raises(TrainingError, match=f"resume: {setting} cannot change on resume .*{setting}="):
            resumed_config(saved, {setting: value}, "p/r")


def test_increment_path_is_ultralytics(tmp_path):
    base = tmp_path / "runs" / "detect" / "predict"
    assert increment_path(base) == base and not base.exists()
    assert increment_path(base, mkdir=True) == base and base.is_dir()
    assert increment_path(base) == base.with_name("predict2")
    assert increment_path(base, exist_ok=True) == base
    assert increment_path(base, mkdir=True) == base.with_name("predict2") and base.with_name("predict2").is_dir()
    assert increment_path(base) == base.with_name("predict3")
    (tmp_path / "results.json").write_text("{}")
    assert increment_path(tmp_path / "results.json") == tmp_path / "results2.json"


def test_new_runs_are_train_train2_and_resume_finds_the_latest(tmp_path):
    config = TrainConfig(project=str(tmp_path))
    first = checkpoints.new_run_directory(config)
    second = checkpoints.new_run_directory(config)
    assert (first, second) == (tmp_path / "train", tmp_path / "train2") and second.is_dir()
    (first / "state").mkdir()
    assert checkpoints.new_run_directory(dataclasses.replace(config, exist_ok=True)) == first
    assert not (first / "state").exists()  # exist_ok replaces the old training state
    assert checkpoints.new_run_directory(dataclasses.replace(config, name="exp")) == tmp_path / "exp"
    with pytest.raises(TrainingError, match="no run with a training state under"):
        checkpoints.find_run(tmp_path, None)
    (second / "state").mkdir()
    assert checkpoints.find_run(tmp_path, None) == second
    with pytest.raises(TrainingError, match="has no training state"):
        checkpoints.find_run(tmp_path, "train")


def test_an_old_run_json_is_a_clear_error(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"model": "yolo_nas_s", "epochs": 3}))
    with pytest.raises(TrainingError, match="older nasjax and does not record the run's settings"):
        checkpoints.read_run(tmp_path)
    record = checkpoints.run_record(TrainConfig(epochs=3), data="d", model="yolo_nas_s", variant="yolo_nas_s",
                                    class_names=["a"])
    checkpoints.write_run(tmp_path, record)
    assert checkpoints.read_run(tmp_path) == (json.loads(json.dumps(record)), TrainConfig(epochs=3))


def test_best_value_follows_the_metric_direction():
    history = [{"epoch": 1, "map50_95": 0.2, "val_loss": 3.0}, {"epoch": 2, "map50_95": 0.1, "val_loss": 2.0}]
    assert checkpoints.best_value_of(history, "map50_95") == 0.2
    assert checkpoints.best_value_of(history, "val_loss") == 2.0
    # Without validation the training loss picks best/, lower being better whatever best_metric says.
    assert checkpoints.best_value_of([{"train_loss": 3.0}, {"train_loss": 2.5}], "map50_95") == 2.5
