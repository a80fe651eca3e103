"""Several JAX processes as one run (jax.distributed, nasjax/utils/distributed.py): real processes on this
machine, coordinator on 127.0.0.1, one CPU device each, gloo collectives. `nasjax predict` and `nasjax val`
with 2 processes give exactly what 1 process gives (predictions.json, metrics, the detections file);
bad settings and a missing peer end with a clear error instead of a hang; each process loads only its
rows of a training batch; and 2-process training equals 1-process training (`train` with plain SGD,
float64 compute, the tolerance of tests/train/multi_device_test.py (2 devices); it compiles the training
step three times, ~2.5 min on 2 cores, the longest test here: the suite runs on both cores with
pytest-xdist, so it overlaps the others) (docs/scale_out.md#multi-process-jax).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasjax import cli
from nasjax.utils import distributed
from nasjax.utils.distributed import DistributedSettingsError, check_settings
from synthetic import draw_boxes

REPO = Path(__file__).resolve().parents[1]
IMGSZ = 64

# One process of a run: initialises from its command lines (the distributed keys) and runs them in turn,
# as `nasjax ...` would, so that predict and val share one start. {"train": {...}} runs nasjax.train.train
# (float64 compute and plain SGD, as the 2-device test) and process 0 writes the losses and the last/
# weights to `out`.
WORKER = r"""
import json, sys
import numpy as np
steps = json.loads(sys.argv[1])
for step in steps:
    if "cli" in step:
        from nasjax import cli
        try:
            cli.main(step["cli"])
        except SystemExit as done:
            if done.code:
                raise
    else:
        spec = step["train"]
        import jax, jax.numpy as jnp
        from nasjax.utils import distributed
        distributed.initialize(**spec.pop("distributed"))
        jax.config.update("jax_enable_x64", True)  # float64 compute: what is left is the split, not rounding
        import optax
        from flax import nnx
        from nasjax.train import step as T, train, trainer
        T.COMPUTE_DTYPES["float32"] = jnp.float64
        # Plain SGD, as the 2-device test: the update is proportional to the gradient (AdamW divides by
        # |g| + 1e-8, which turns float64 noise in near-zero gradients into visible weight differences).
        T.make_optimizer = trainer.make_optimizer = lambda schedule, weight_decay: optax.sgd(schedule)
        out = spec.pop("out")
        result = train(**spec)
        if distributed.is_primary():
            from nasjax.loading.checkpoint import load_detector
            leaves = jax.tree.leaves(nnx.to_pure_dict(load_detector(result["last"]).variables))
            np.savez(out, losses=np.asarray(result["step_losses"]), **{f"w{i}": np.asarray(v) for i, v in enumerate(leaves)})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, steps_of, processes: int = 2, timeout: float = 240, name: str = "run") -> list[tuple[int, str]]:
    """Start `processes` workers (steps_of(process_id, coordinator) each) and wait for all of them;
    [(exit status, output)]. A worker still running after `timeout` seconds is killed and the test
    fails with every worker's output."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu",
           "PYTHONUNBUFFERED": "1"}
    env.pop("NASJAX_DEBUG", None)
    logs = [tmp_path / f"{name}{i}.log" for i in range(processes)]
    running, killed = [], []
    try:
        for i in range(processes):
            with open(logs[i], "w") as log:
                running.append(subprocess.Popen([sys.executable, str(worker), json.dumps(steps_of(i, coordinator))],
                                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path))
        deadline = time.monotonic() + timeout
        for p in running:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait()
                killed.append(p)
    outputs = [(p.returncode, log.read_text()) for p, log in zip(running, logs)]
    if killed:
        pytest.fail(f"{len(killed)} worker(s) still running after {timeout} s, killed:\n" + report(outputs))
    return outputs


def report(outputs) -> str:
    return "\n".join(f"--- process {i}: exit {code}\n{text[-4000:]}" for i, (code, text) in enumerate(outputs))


def make_dataset(root: Path, n: int = 5) -> Path:
    """n val images of different sizes with 1-2 coloured boxes; the data YAML names the model's 80 classes."""
    rng = np.random.default_rng(0)
    (root / "images/val").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    for i in range(n):
        image = np.full((64, 40 + 8 * i, 3), 128, np.uint8)
        rows = [f"{cls} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for cls, x, y, w, h in draw_boxes(image, rng)]
        Image.fromarray(image).save(root / "images/val" / f"{i}.png")
        (root / "labels/val" / f"{i}.txt").write_text("\n".join(rows) + "\n")
    from nasjax.weights.coco import COCO_CLASS_NAMES

    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(COCO_CLASS_NAMES))
    (root / "data.yaml").write_text(f"path: {root}\nval: images/val\nnames:\n{names}")
    return root / "data.yaml"


def commands(out: Path, data: Path, extra: list[str]) -> list[list[str]]:
    """predict (no annotated images: a multi-process run writes none) and val, writing under `out`.
    predict takes val's candidate count, so that both run the one compiled detect function."""
    common = ["random_weights=true", f"imgsz={IMGSZ}", *extra]
    return [["predict", f"source={data.parent / 'images/val'}", "conf=0.01", "nms_top_k=1000", "save=false",
             f"save_dir={out / 'predict'}", *common],
            ["val", str(data), f"save_dir={out / 'val'}", f"save_predictions={out / 'detections.json'}", *common]]


def per_image_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "/images/val/" in line and ".png: " in line]


def test_two_processes_predict_and_validate_exactly_as_one(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds")

    def steps(i, coordinator):
        keys = [f"coordinator={coordinator}", "num_processes=2", f"process_id={i}", "distributed_timeout=120"]
        return [{"cli": argv} for argv in commands(tmp_path / "two", data, keys)]

    # The single-process reference runs here while the two workers start (two cores, three processes).
    worker_dir = tmp_path / "workers"
    worker_dir.mkdir()
    import threading

    outputs: list = []
    thread = threading.Thread(target=lambda: outputs.extend(launch(worker_dir, steps)))
    thread.start()
    try:
        for argv in commands(tmp_path / "one", data, []):
            assert cli.run(argv) == 0
        one_out = capsys.readouterr().out
    finally:
        thread.join()
    assert [code for code, _ in outputs] == [0, 0], report(outputs)

    one, two = tmp_path / "one", tmp_path / "two"
    assert json.loads((two / "predict/predictions.json").read_text()) == json.loads(
        (one / "predict/predictions.json").read_text())
    assert sorted(p.name for p in (two / "predict").iterdir()) == ["predictions.json"]  # no staging left
    assert json.loads((two / "detections.json").read_text()) == json.loads((one / "detections.json").read_text())
    metrics_one, metrics_two = (json.loads((d / "val/metrics.json").read_text()) for d in (one, two))
    for varying in ("speed", "timing_s"):  # measured, not computed
        metrics_one.pop(varying), metrics_two.pop(varying)
    assert metrics_two == metrics_one
    assert metrics_one["images"] == 5 and metrics_one["dataset"].startswith("data: 5 images")
    # Process 0 prints every image's line, in the single-process order; process 1 prints none of them.
    lines = per_image_lines(one_out)
    assert len(lines) == 5 and per_image_lines(outputs[0][1]) == lines, report(outputs)
    assert per_image_lines(outputs[1][1]) == [] and "wrote metrics" not in outputs[1][1]
    assert "(predictions.json, 2 processes)" in outputs[0][1]


def test_a_user_error_ends_every_process_and_a_missing_peer_times_out(tmp_path):
    """save=true is refused on every process (exit 2, the same one line), before any model is loaded; a
    process whose peer never starts ends with an error after distributed_timeout instead of waiting."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.png")

    def refused(i, coordinator):
        return [{"cli": ["predict", f"source={images}", "random_weights=true", "save=true",
                         f"coordinator={coordinator}", "num_processes=2", f"process_id={i}", "distributed_timeout=60"]}]

    def alone(i, coordinator):
        return [{"cli": ["predict", f"source={images}", "random_weights=true", f"coordinator={coordinator}",
                         "num_processes=2", "process_id=1", "distributed_timeout=2"]}]

    start = time.monotonic()
    outputs = launch(tmp_path, refused, timeout=90, name="refused")
    assert [code for code, _ in outputs] == [2, 2], report(outputs)
    for _, text in outputs:
        assert "nasjax predict: error: save=true: a multi-process run writes no annotated images" in text
        assert "Traceback" not in text
    [(code, text)] = launch(tmp_path, alone, processes=1, timeout=60, name="alone")
    assert code != 0, text
    assert time.monotonic() - start < 80


def test_bad_settings_are_one_line_errors(capsys):
    check_settings("127.0.0.1:1234", 2, 1, 5)  # fine
    for args, words in [(("127.0.0.1", 2, 0), "host:port"), (("127.0.0.1:99999", 2, 0), "port from 1 to 65535"),
                        (("host:port", 2, 0), "host:port"), ((None, 0, None), "num_processes=0"),
                        ((None, 2, 2), "process ids run from 0 to 1"), ((None, None, -1), "process_id=-1"),
                        ((None, 2.5, None), "whole number")]:
        with pytest.raises(DistributedSettingsError, match=words):
            check_settings(*args)
    with pytest.raises(DistributedSettingsError, match="seconds"):
        check_settings(timeout=0)
    assert issubclass(DistributedSettingsError, ValueError)
    assert distributed.initialize() is False  # nothing asked: a single-process run, jax untouched
    for argv, words in [(["predict", "source=.", "coordinator=localhost", "num_processes=2", "process_id=0"], "host:port"),
                        (["val", "coco8", "num_processes=2", "process_id=2"], "process ids run from 0 to 1"),
                        (["train", "coco8", "distributed_timeout=-1"], "seconds > 0")]:
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.count("\n") == 1 and words in err, err
    help_text = cli.usage("train")
    assert "distributed_timeout=float (default 300)" in help_text and "coordinator=str" in help_text


def test_train_settings_do_not_reach_the_config(monkeypatch):
    """The distributed keys start the run; train() gets only TrainConfig's settings."""
    seen = {}
    import nasjax.train

    monkeypatch.setattr(nasjax.train, "train", lambda data, model, **kw: seen.update(kw) or
                        {"project": "p", "last": "l", "best": "b"})
    monkeypatch.setattr(cli, "_start_distributed", lambda command, s: seen.setdefault("started", command))
    assert cli.run(["train", "data.yaml", "epochs=2", "num_processes=1", "process_id=0", "distributed_timeout=5"]) == 0
    assert seen == {"started": "train", "epochs": 2}


def test_each_process_loads_only_its_rows_of_a_training_batch(tmp_path):
    """The shares of a global batch, concatenated in process order, are the batch one process loads
    (order and augmentation depend on the position in the epoch, not on who loads it)."""
    from nasjax.data import Augmentation, Loader, load_split

    data = make_dataset(tmp_path / "ds", n=6)
    data.write_text(data.read_text().replace("val: images/val", "train: images/val\nval: images/val"))
    dataset = load_split(data, "train")
    whole = list(Loader(dataset, 4, 64, seed=1, augmentation=Augmentation.light(), workers=1).epoch(2))
    parts = [list(Loader(dataset, 4, 64, seed=1, augmentation=Augmentation.light(), workers=1, process_index=i,
                         process_count=2).epoch(2)) for i in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 1
    for batch, first, second in zip(whole, *parts):
        assert len(first.images) == len(second.images) == 2
        np.testing.assert_array_equal(np.concatenate([first.images, second.images]), batch.images)
        for a, b, c in zip(batch.targets, first.targets, second.targets):
            np.testing.assert_array_equal(np.concatenate([b, c]), a)
    # A dataset's shares and predict's shares are the same contiguous blocks, in order.
    assert distributed.share(list(range(5)), 0, 2) + distributed.share(list(range(5)), 1, 2) == list(range(5))
    shards = [dataset.shard(i, 2) for i in range(2)]
    assert [s.key for part in shards for s in part.samples] == [s.key for s in dataset.samples]
    assert shards[1].describe() == dataset.describe()


def test_two_process_training_equals_one_process(tmp_path):
    """`train` with 2 processes (1 device each, each loading its half of every global batch of 4) against
    1 process on the whole batch: the same losses and EMA weights (last/), to the tolerance of the 2-device
    test (float64 compute and plain SGD, as there)."""
    data = make_dataset(tmp_path / "ds", n=8)
    data.write_text(data.read_text().replace("val: images/val", "train: images/val\nval: images/val"))
    run = dict(data=str(data), model="yolo_nas_s", epochs=1, max_steps=2, batch=4, imgsz=64, lr=1e-3, warmup_steps=0,
               augmentation="light", val=False, plot=False, progress=False, workers=1, project=str(tmp_path / "runs"))

    def two(i, coordinator):
        return [{"train": {**run, "name": "two", "out": str(tmp_path / "two.npz"),
                           "distributed": {"coordinator": coordinator, "num_processes": 2, "process_id": i,
                                           "timeout": 600}}}]

    def one(i, coordinator):
        return [{"train": {**run, "name": "one", "out": str(tmp_path / "one.npz"), "distributed": {}}}]

    import threading

    single: list = []
    thread = threading.Thread(target=lambda: single.extend(launch(tmp_path / "1", one, processes=1, timeout=900)))
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    thread.start()
    pair = launch(tmp_path / "2", two, timeout=900)
    thread.join()
    assert [code for code, _ in pair] == [0, 0] and single[0][0] == 0, report(pair + single)
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        loss = float(np.max(np.abs(a["losses"] - b["losses"]) / np.abs(a["losses"])))
        weights = max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(a[k]) + 1e-3))) for k in a.files if k != "losses")
        assert len(a["losses"]) == 2 and len(a.files) == len(b.files)
    print("two processes vs one (relative): loss", loss, "weights", weights)
    assert loss < 1e-12 and weights < 1e-6, (loss, weights)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["one", "two"]  # one run folder for the pair
