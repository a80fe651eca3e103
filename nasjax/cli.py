"""The `nasjax` command: predict, val, export, train, convert and info, as Ultralytics' `yolo` command.

    nasjax predict model=yolo_nas_s source=bus.jpg conf=0.3 imgsz=640
    nasjax val model=runs/detect/train/best data=coco8.yaml
    nasjax predict --model yolo_nas_s --random-weights --source images/     # the same as random_weights=true
    nasjax export model=yolo_nas_s format=tflite int8=true data=coco128
    nasjax train data=coco128 model=yolo_nas_s pretrained=true epochs=10
    nasjax convert yolo_nas_s.pt -o converted/yolo_nas_s
    nasjax info model=yolo_nas_m

Every key, its type and help live in `settings.yaml` beside this file; keys the user does not give
take the defaults of the Python function the command calls, so each default is defined once. Only
argument parsing, loading the model and writing files happen here: the work is done by
`nasjax.predict.predict`, `nasjax.validate.validate`, `nasjax.export.export`, `nasjax.train.train`.

A user error (missing file, bad value, unknown key, offline) prints one line on stderr that says what
was wrong and what to do, and exits 2; `--debug` (or `NASJAX_DEBUG=1`) shows the traceback instead.
Anything else exits 1 with one line and the same hint. `python -m nasjax.predict` and the other module
entry points are thin shims over this.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import functools
import importlib.resources
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

EXIT_USAGE = 2
_TRUE = ("1", "true", "yes", "y", "on")
_FALSE = ("0", "false", "no", "n", "off")


class UsageError(ValueError):
    """A command line that cannot be run as given; the message says what to change."""


# --- settings ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    type: str = "str"
    help: str = ""
    default: Any = None
    has_default: bool = False
    choices: tuple | None = None
    required: bool = False
    positional: bool = False
    arg: str | None = None  # the Python keyword it maps to (default: the same name)
    alias: str | None = None


@functools.cache
def _settings_file() -> dict:
    import yaml

    return yaml.safe_load(importlib.resources.files("nasjax").joinpath("settings.yaml").read_text(encoding="utf-8"))


def group_keys(command: str, group: str) -> tuple[str, ...]:
    """The keys of settings group `group` if `command` has that group, else ()."""
    raw = _settings_file()
    return tuple(raw["groups"][group]) if group in (raw["commands"][command].get("groups") or ()) else ()


@functools.cache
def command_keys() -> dict[str, tuple[str, dict[str, Key]]]:
    """{command: (help, {key: Key})} from settings.yaml."""
    raw = _settings_file()

    def key(name: str, spec: dict) -> Key:
        spec = dict(spec)
        has_default = "default" in spec
        choices = spec.pop("choices", None)
        if spec.get("type") == "path" and spec.get("default") is not None:
            spec["default"] = Path(spec["default"])
        return Key(name, has_default=has_default, choices=tuple(choices) if choices else None, **spec)

    commands = {}
    for command, spec in raw["commands"].items():
        keys: dict[str, Key] = {}
        for group in spec.get("groups") or ():
            for name, k in raw["groups"][group].items():
                keys[name] = key(name, k)
        for name, k in (spec.get("keys") or {}).items():
            keys[name] = key(name, k)
        commands[command] = (spec["help"], keys)
    return commands


def _convert(key: Key, text: str, command: str):
    where = f"{key.name}={text}"
    if text.lower() in ("none", "null") and not key.required:
        return None
    try:
        if key.type == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        value = {"int": int, "float": float, "path": Path, "str": str, "ints": _ints}[key.type](text)
    except ValueError:
        expected = {"bool": "true or false", "int": "a number", "float": "a number",
                    "ints": "integers separated by commas, e.g. 0,2"}.get(key.type, key.type)
        raise UsageError(f"{where}: expected {expected}") from None
    if key.choices and value not in key.choices:
        raise UsageError(f"{where}: expected one of {', '.join(map(str, key.choices))}")
    return value


def _ints(text: str) -> list[int]:
    """'0,2', '[0, 2]' or '0' → [0, 2] / [0]."""
    parts = [part.strip() for part in text.strip().strip("[]()").split(",")]
    if not all(part.isdigit() for part in parts):
        raise ValueError(text)
    return [int(part) for part in parts]


def _lookup(keys: dict[str, Key], name: str, command: str) -> Key:
    name = name.replace("-", "_")
    if name in keys:
        return keys[name]
    for k in keys.values():
        if k.alias == name:
            return k
    close = difflib.get_close_matches(name, list(keys), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UsageError(f"unknown setting {name!r} for nasjax {command}; {hint}see nasjax {command} --help")


def parse(command: str, argv: Sequence[str]) -> tuple[dict[str, Any], set[str]]:
    """(every key's value, the keys given on the command line) from key=value / --key value tokens."""
    _, keys = command_keys()[command]
    given: dict[str, Any] = {}

    def put(key: Key, value) -> None:
        if key.name in given:
            raise UsageError(f"{key.name} is given twice")
        given[key.name] = value

    positional = [k for k in keys.values() if k.positional]
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-") and len(token) > 1 and not _is_number(token):
            body = token.lstrip("-")
            if "=" in body:
                name, text = body.split("=", 1)
                key = _lookup(keys, name, command)
                put(key, _convert(key, text, command))
            else:
                negated = body.startswith("no-") and body[3:].replace("-", "_") in keys
                key = _lookup(keys, body[3:] if negated else body, command)
                following = tokens[i + 1] if i + 1 < len(tokens) else None
                if key.type == "bool":
                    if negated:
                        put(key, False)
                    elif following is not None and following.lower() in _TRUE + _FALSE:
                        put(key, _convert(key, following, command))
                        i += 1
                    else:
                        put(key, True)
                else:
                    if following is None or (following.startswith("--") and not _is_number(following)):
                        raise UsageError(f"--{body} needs a value: --{body} VALUE or {key.name}=VALUE")
                    put(key, _convert(key, following, command))
                    i += 1
        elif "=" in token and not token.startswith("="):
            name, text = token.split("=", 1)
            key = _lookup(keys, name, command)
            put(key, _convert(key, text, command))
        else:
            free = [k for k in positional if k.name not in given]
            if not free:
                raise UsageError(f"unexpected argument {token!r}; write settings as key=value (see nasjax {command} --help)")
            put(free[0], _convert(free[0], token, command))
        i += 1
    for key in keys.values():
        if key.required and given.get(key.name) is None:
            raise UsageError(f"{key.name} is required: nasjax {command} {key.name}=... ({key.help})")
    values = {k.name: (given[k.name] if k.name in given else k.default) for k in keys.values()}
    return values, set(given)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _function_defaults(command: str) -> dict[str, Any]:
    """The defaults of the Python function behind a command, by keyword (for --help)."""
    try:
        if command in ("predict", "track"):
            from nasjax.predict import predict
            from nasjax.predict.save import SaveOptions
            from nasjax.predict.track import track

            saving = {f.name: f.default for f in dataclasses.fields(SaveOptions)}
            return {**_defaults_of(predict), **saving, **(_defaults_of(track) if command == "track" else {}),
                    **_distributed_defaults(command)}
        elif command == "serve":
            from nasjax.serve.app import ServeConfig
            from nasjax.serve.batcher import BatcherConfig

            defaults = {f.name: f.default for c in (BatcherConfig, ServeConfig) for f in dataclasses.fields(c)}
            return {**defaults, "max_body_mb": ServeConfig.max_body_bytes / 2**20}
        elif command == "val":
            from nasjax.validate import validate as fn
        elif command == "export":
            from nasjax.export import check_options as fn
        elif command == "train":
            from nasjax.train import TrainConfig

            return {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **_distributed_defaults(command)}
        else:
            return {}
    except ImportError:
        return {}
    return {**_defaults_of(fn), **_distributed_defaults(command)}


def _defaults_of(fn) -> dict[str, Any]:
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.default is not inspect.Parameter.empty}


def _distributed_defaults(command: str) -> dict[str, Any]:
    if not group_keys(command, "distributed"):
        return {}
    from nasjax.utils.distributed import initialize

    return _defaults_of(initialize)


def usage(command: str | None = None) -> str:
    commands = command_keys()
    if command is None:
        lines = ["usage: nasjax COMMAND key=value ... (or --key value)", "", "commands:"]
        lines += [f"  {name:<8} {text}" for name, (text, _) in commands.items()]
        lines += ["", "nasjax COMMAND --help lists its settings; --debug shows tracebacks; nasjax version"]
        return "\n".join(lines)
    text, keys = commands[command]
    defaults = _function_defaults(command)
    lines = [f"usage: nasjax {command} key=value ...", "", text, "", "settings:"]
    for k in keys.values():
        default = k.default if k.has_default else defaults.get(k.arg or k.name)
        if k.name == "batch" and command in ("predict", "val", "track"):
            default = defaults.get("batch_size")
        shown = "" if default is None else f" (default {default})"
        choices = f" [{'|'.join(k.choices)}]" if k.choices else ""
        lines.append(f"  {k.name}={k.type}{choices}{shown}{' (required)' if k.required else ''}")
        lines.append(f"      {k.help}")
    return "\n".join(lines)


# --- the commands ----------------------------------------------------------------------------------------


def _load_model(s: dict, what: str):
    import nasjax

    if s["random_weights"]:
        model = nasjax.load(s["model"], pretrained=False)
        # Said once the command has succeeded, so that an error stays the only line on stderr.
        _notes.append(f"warning: {s['model']} with random weights (seed 0): the {what} are meaningless")
        return model
    return nasjax.load(s["model"], trusted=s["trusted"])


_notes: list[str] = []


def _check_writable(*files: Path) -> None:
    """Raise the OSError that writing each of `files` would meet (read-only, no permission, a file where a
    folder should be), by creating and removing a temporary file in its nearest existing folder."""
    import tempfile

    for file in files:
        if file.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder, where a file is to be written; give a file path", str(file))
        folder = file.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder", str(file))
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise type(error)(error.errno, error.strerror, str(file)) from None


def _run_dir(s: dict, default_name: str, claim: bool = False):
    """save_dir, or the next free project/name (Ultralytics' increment_path). With claim, the folder is
    made now (atomically, so that two runs starting at once get different numbers) and the answer is
    (folder, whether this call created it)."""
    from nasjax.utils.paths import increment_path

    if s.get("save_dir") is not None or s["exist_ok"]:
        path = Path(s["save_dir"]) if s.get("save_dir") is not None else Path(s["project"]) / (s["name"] or default_name)
        return (path, False) if claim else path
    path = increment_path(Path(s["project"]) / (s["name"] or default_name), mkdir=claim)
    return (path, True) if claim else path


def _options(command: str, s: dict, given: set[str], names: Sequence[str]) -> dict:
    """The keys among `names` that the user gave, renamed to the Python function's keywords."""
    _, keys = command_keys()[command]
    return {(keys[n].arg or n): s[n] for n in names if n in given}


def _dtype(s: dict):
    return None if s["dtype"] == "float32" else s["dtype"]


def _nms_options(command: str, s: dict, given: set[str]) -> dict:
    options = _options(command, s, given, ("conf", "iou", "max_det", "nms_top_k", "agnostic", "preprocess"))
    if "single_label" in given:
        options["multi_label"] = not s["single_label"]
    return options


def cmd_predict(s: dict, given: set[str]) -> None:
    from nasjax.predict import predict

    _check_source(s["source"])
    if _several_processes():
        return _predict_on_processes(s, given)
    _write_run(s, given, "predict", lambda model, options: predict(model, s["source"], dtype=_dtype(s), stream=True,
                                                                   **options))


def cmd_track(s: dict, given: set[str]) -> None:
    from nasjax.predict.track import track

    _check_source(s["source"])
    options = _options("track", s, given, ("tracker",))
    _write_run(s, given, "track", lambda model, predict_options: track(
        model, s["source"], dtype=_dtype(s), stream=True, **predict_options, **options))


def _check_source(source: str) -> None:
    """A missing file is reported before any weights are fetched (URLs and webcam numbers are opened later)."""
    from nasjax.predict.video import is_stream_url

    if source.isdigit() or is_stream_url(source):
        return
    if not Path(source).exists() and not set("*?[") & set(source):
        raise FileNotFoundError(f"source {source}: no such file or folder")


def _write_run(s: dict, given: set[str], command: str, results) -> None:
    """predict / track in this process: every Results into the run folder (nasjax/predict/save.py), one
    line printed per image or frame. Ctrl-C on a live source (a webcam, a stream) ends the run with its
    outputs finished, as the source's end would."""
    from nasjax.predict.predictor import is_live, list_sources
    from nasjax.predict.save import PredictionRun, SaveOptions, check_save_dir
    from nasjax.predict.video import VideoOptions

    options = _predict_options(command, s, given)
    VideoOptions(**{name: options[key] for key, name in (("vid_stride", "vid_stride"), ("stream_buffer", "stream_buffer"),
                    ("stream_timeout", "timeout"), ("reconnects", "reconnects")) if key in options})  # checked now
    save_dir, created = _run_dir(s, command, claim=True)
    check_save_dir(save_dir)  # a file in the way or an earlier run there: refused before the model loads
    saving = SaveOptions(**{k: s[k] for k in ("save", *_SAVE_KEYS) if k == "save" or k in given})
    # The run's files appear only when it has succeeded (nasjax/predict/save.py); an unwritable folder
    # fails here, before the model is loaded.
    with PredictionRun(save_dir, created=created) as run:
        model = _load_model(s, "detections")
        model.check_predict_options(options)  # an exported model: imgsz defaults to (and must be) its size
        if s.get("engine", "local") == "ray":
            return _predict_on_ray(s, given, options, model, run)
        live = any(is_live(item) for item in list_sources(s["source"]))
        try:
            for result in results(model, options):
                record = run.add(result, options=saving)
                where = result.path or record["annotated"]
                if result.frame is not None:
                    where = f"{where} frame {result.frame}"
                print(f"{where}: {result.summary()}")
        except KeyboardInterrupt:
            if not live:
                raise
            print(f"nasjax {command}: stopped (Ctrl-C); finishing the outputs", file=sys.stderr)
        path = run.finish(_predict_meta(s, options))
    frames = sum(1 for record in run.records if "frame" in record)
    counted = ", ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in
                        ((len(run.records) - frames, "image"), (frames, "video frame")) if n or not frames)
    written = [w for w, on in (("annotated copies", saving.save), ("labels", saving.save_txt),
                               ("crops", saving.save_crop)) if on]
    print(f"{counted} → {save_dir} ({', '.join(written + [path.name])})")


_SAVE_KEYS = ("save_txt", "save_conf", "save_crop", "line_width", "show_labels", "show_conf")


def _ray_options(s: dict, predict_options: dict) -> dict:
    """nasjax.ray.Predictor's keywords: `predict_options` without `workers` (with engine=ray the number
    of Ray workers), and the model as the workers find it."""
    from nasjax.ray import worker_path

    return {**{k: v for k, v in predict_options.items() if k != "workers"}, "model": worker_path(s["model"]),
            "pretrained": not s["random_weights"], "trusted": s["trusted"], "dtype": _dtype(s)}


def _predict_on_ray(s: dict, given: set[str], options: dict, model, run) -> None:
    """cmd_predict with engine=ray (nasjax/ray.py): predictions.parquet, the annotated images (save), and
    predictions.json (save_json)."""
    from nasjax import ray as on_ray
    from nasjax.predict.predictor import class_names_of, is_video, list_sources

    items = list_sources(s["source"])
    if any(is_video(item) for item in items):
        raise UsageError("engine=ray predicts image files; run videos, webcams and streams with engine=local")
    sources = [item.path for item in items]
    workers = s["workers"] or 1
    with on_ray.session():  # Predictor's defaults are predict()'s: the given options are the whole difference
        predicted = on_ray.predict_run(
            run, sources, _ray_options(s, options), names=class_names_of(model), workers=workers,
            skip_errors=bool(options.get("skip_errors")), save_json=s["save_json"], save_images=s["save"],
            num_gpus=s["worker_gpus"],
            echo=print, meta=_predict_meta(s, {**options, "engine": "ray", "workers": workers}))
    written = ("annotated images, " if s["save"] else "") + "predictions.parquet" + (
        " and predictions.json" if s["save_json"] else "")
    print(f"{predicted} images → {run.save_dir} ({written}; {workers} Ray worker{'s' if workers > 1 else ''})")


def _predict_options(command: str, s: dict, given: set[str]) -> dict:
    return {**_nms_options(command, s, given),
            **_options(command, s, given, ("imgsz", "batch", "skip_errors", "exif_transpose", "workers", "classes",
                                           "vid_stride", "stream_buffer", "stream_timeout", "reconnects"))}


def _predict_meta(s: dict, options: dict) -> dict:
    """What predictions.json says about the run, beside the images."""
    return {"model": s["model"], "random_weights": s["random_weights"], "settings": {**options, "dtype": s["dtype"]}}


def _check_engine(s: dict) -> None:
    """engine=ray starts its own workers: not something each of several jax processes should do."""
    if s.get("engine", "local") != "local" and _several_processes():
        raise UsageError(f"engine={s['engine']} runs its own workers; with several jax processes give engine=local")


def _predict_on_processes(s: dict, given: set[str]) -> None:
    """cmd_predict in a multi-process run (docs/scale_out.md#multi-process-jax): each process predicts
    its share of the images; process 0 claims the run folder, prints every image's line and writes the
    one predictions.json, in the order and with the content a single process gives. No annotated images:
    each process holds only its own."""
    from nasjax.predict.save import PredictionRun, check_save_dir
    from nasjax.utils import distributed

    _check_engine(s)
    if s["save"] and "save" in given:
        raise UsageError("save=true: a multi-process run writes no annotated images (each process holds only its "
                         "own images); leave save out (process 0 writes predictions.json) or run one process")
    options = _predict_options("predict", s, given)

    def open_run() -> PredictionRun:
        save_dir, created = _run_dir(s, "predict", claim=True)
        check_save_dir(save_dir)
        return PredictionRun(save_dir, created=created)

    run = distributed.on_primary(open_run)  # None on the other processes; its error raised on all of them
    with run if run is not None else contextlib.nullcontext():
        model = _load_model(s, "detections")
        rows = _predict_shares(model, s["source"], _dtype(s), options)
        if run is not None:
            for source, orig_shape, detections, summary in rows:
                run.add_record(source, orig_shape, detections)
                print(f"{source}: {summary}")
        path = distributed.on_primary(lambda: run.finish(_predict_meta(s, options)))
    if run is not None:
        print(f"{len(run.records)} images → {run.save_dir} ({path.name}, {distributed.process_count()} processes)")


def _predict_shares(model, source, dtype, options: dict) -> list[tuple]:
    """Each process predicts its share of the source's images (`distributed.share` of `list_sources`);
    every image's (source, (height, width), detections, summary) comes back on every process, in the
    order of `list_sources` (the shares are contiguous), as one process predicts them."""
    from nasjax.predict import predict
    from nasjax.predict.predictor import is_video, list_sources
    from nasjax.utils import distributed

    items = list_sources(source)
    if any(is_video(item) for item in items):
        raise UsageError("a multi-process run predicts image files; run videos, webcams and streams in one process")
    mine = distributed.share(items)

    def predict_mine() -> list[tuple]:
        if not mine:  # fewer images than processes
            return []
        return [(r.path, tuple(r.orig_shape), r.to_list(), r.summary())
                for r in predict(model, [item.source for item in mine], dtype=dtype, stream=True, **options)]

    return [row for part in distributed.allgather_call(predict_mine) for row in part]


def cmd_serve(s: dict, given: set[str]) -> None:
    """nasjax serve: every model of model=a,b loaded, then uvicorn until SIGTERM / Ctrl-C
    (nasjax/serve, docs/serving.md)."""
    from nasjax.serve.app import ServeConfig
    from nasjax.serve.batcher import BatcherConfig
    from nasjax.serve.server import serve

    names = [name.strip() for name in s["model"].split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"model={s['model']}: give one or more distinct models separated by commas")
    batcher = _options("serve", s, given, ("batch", "max_wait_ms", "max_queue", "preprocess"))
    if "imgsz" in given:
        batcher["imgsz"] = tuple(s["imgsz"])
    config = ServeConfig(batcher=BatcherConfig(**batcher, dtype=_dtype(s)),
                         **_options("serve", s, given, ("request_timeout", "workers")),
                         **({"max_body_bytes": int(s["max_body_mb"] * 2**20)} if "max_body_mb" in given else {}))
    from nasjax.serve.server import bind

    bind(s["host"], s["port"]).close()  # a taken port is reported before any model is loaded
    if s["engine"] == "ray":  # the same app as Ray Serve replicas (nasjax/serve/ray_serve.py)
        from nasjax.serve.ray_serve import run

        gpus = s["worker_gpus"]
        return run(names, config=config, pretrained=not s["random_weights"], trusted=s["trusted"], host=s["host"],
                   port=s["port"], num_replicas=s["replicas"] or 1,
                   ray_actor_options={"num_gpus": gpus} if gpus else None)
    if "replicas" in given:
        raise UsageError("replicas= is the number of Ray Serve replicas: give engine=ray with it")
    models = {name: _load_model({**s, "model": name}, "detections") for name in names}
    for note in _notes:
        print(note, file=sys.stderr)
    _notes.clear()
    try:
        serve(models, config, s["host"], s["port"])
    except KeyboardInterrupt:
        pass


def cmd_val(s: dict, given: set[str]) -> None:
    from nasjax.data import load_dataset
    from nasjax.validate import validate
    from nasjax.utils import distributed
    from nasjax.validate.predictions import write_metrics

    _check_engine(s)
    # The dataset first: a missing or malformed dataset fails before any weights are fetched.
    data_options = _options("val", s, given, ("images", "download", "exif_transpose", "tfds_data_dir", "tfds_download"))
    dataset = load_dataset(s["data"], s["split"] or "val", **data_options)
    save_dir = _run_dir(s, "val")
    # Unwritable outputs fail now, not after the whole validation has run (process 0 writes them).
    outputs = [save_dir / "metrics.json", *(Path(s[k]) for k in ("json", "save_predictions") if s[k] is not None)]
    distributed.on_primary(lambda: _check_writable(*outputs))
    model = None if s["predictions"] is not None else _load_model(s, "metrics")
    options = {**_nms_options("val", s, given), **data_options,
               **_options("val", s, given, ("split", "imgsz", "batch", "reference_mode", "save_predictions",
                                            "predictions", "verbose", "workers"))}
    if model is not None:
        model.check_predict_options(options)  # an exported model: imgsz defaults to (and must be) its size
    if s["engine"] == "ray":
        metrics = _val_on_ray(s, options, model, dataset)
    else:
        metrics = validate(model, dataset, dtype=_dtype(s), **options)
    record = {**metrics, "model": None if s["predictions"] else s["model"], "random_weights": s["random_weights"],
              "data": s["data"], "predictions": str(s["predictions"]) if s["predictions"] else None}
    targets = [save_dir / "metrics.json"] + ([Path(s["json"])] if s["json"] is not None else [])

    def write() -> None:
        save_dir.mkdir(parents=True, exist_ok=True)
        for target in targets:
            write_metrics(target, record)
        print(f"wrote metrics to {', '.join(map(str, targets))}")

    distributed.on_primary(write)


def _val_on_ray(s: dict, options: dict, model, dataset) -> dict:
    """cmd_val with engine=ray: the images predicted on Ray (nasjax/ray.py) into a detections file,
    which this process scores, as `predictions=` does."""
    import tempfile

    from nasjax import ray as on_ray
    from nasjax.validate import settings as run_settings
    from nasjax.validate import validate
    from nasjax.validate.validator import check_classes

    if model is None:
        raise UsageError("predictions= scores a file without running a model; engine=ray runs one: give one of them")
    check_classes(model, dataset)
    defaults = _function_defaults("val")
    settings = run_settings.resolve(options.get("reference_mode", False),
                                    **{k: options.get(k) for k in ("conf", "iou", "max_det", "nms_top_k", "multi_label",
                                                                   "agnostic", "preprocess")})
    predict_options = {"imgsz": options.get("imgsz", defaults["imgsz"]),
                       "batch_size": options.get("batch_size", defaults["batch_size"]),
                       "exif_transpose": options.get("exif_transpose", defaults["exif_transpose"]),
                       **settings.predict_options()}
    workers = s["workers"] or 1
    scored = {k: v for k, v in options.items()
              if k not in ("conf", "iou", "max_det", "nms_top_k", "multi_label", "agnostic", "preprocess", "workers")}
    with tempfile.TemporaryDirectory(prefix="nasjax-val-") as folder:
        detections = Path(folder) / "detections.json"
        with on_ray.session():
            on_ray.validation_predictions(dataset, _ray_options(s, predict_options), detections, workers=workers,
                                          num_gpus=s["worker_gpus"])
        metrics = validate(None, dataset, **{**scored, "predictions": detections, "reference_mode": False},
                           settings=settings)
    metrics["settings"].update(reference_mode=options.get("reference_mode", False), engine="ray", workers=workers)
    return metrics


def cmd_export(s: dict, given: set[str]) -> None:
    from nasjax.export import export
    from nasjax.export.metadata import metadata_path, nms_model_path
    from nasjax.export.options import check_options, check_output, default_output

    options = _options("export", s, given, ("imgsz", "batch", "int8", "half", "data", "calib_images", "int8_tail",
                                            "nms", "conf", "iou", "max_det", "preprocess", "target"))
    export_format = s["format"] or "tflite"
    checked = check_options(export_format, **options)  # bad options fail before the model loads
    if s["output"] is not None:
        check_output(s["output"], checked)
    model = _load_model(s, "detections")
    output = s["output"] if s["output"] is not None else default_output(model, checked)
    path = export(model, export_format, output, verbose=True, **options)
    extra = f" (+ {nms_model_path(path).name})" if checked.nms and checked.format == "tflite" else ""
    print(f"exported {path}{extra} and {metadata_path(path)}")


def cmd_train(s: dict, given: set[str]) -> None:
    from nasjax.train import train

    not_config = ("data", "model", *group_keys("train", "distributed"))
    overrides = _options("train", s, given, [k for k in command_keys()["train"][1] if k not in not_config])
    result = train(s["data"], s["model"], **overrides)
    if _primary():
        print(f"results: {result['project']}\nlast: {result['last']}\nbest: {result['best']}")


def cmd_convert(s: dict, given: set[str]) -> None:
    from nasjax.loading.convert import convert

    from nasjax.converters.torch_pickle import regular_file_size

    source = Path(s["source"])
    if not os.path.lexists(source):
        raise FileNotFoundError(f"{source}: not found; expected a weight file")
    regular_file_size(source)  # names a folder, FIFO, device or symlink loop (never opens it)
    print(convert(source, Path(s["output"]), s["form"], s["variant"], s["overwrite"]))


def cmd_info(s: dict, given: set[str]) -> None:
    model = _load_model(s, "figures")
    info = model.info
    if "imgsz" in inspect.signature(info).parameters:
        info(imgsz=s["imgsz"], verbose=s["verbose"])
    else:
        info()


COMMANDS: dict[str, Callable[[dict, set], None]] = {
    "predict": cmd_predict, "track": cmd_track, "serve": cmd_serve, "val": cmd_val, "export": cmd_export, "train": cmd_train, "convert": cmd_convert,
    "info": cmd_info,
}


# --- entry point -----------------------------------------------------------------------------------------


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause and fix: bad values and files, a dataset or weights that are not there."""
    errors: list[type[BaseException]] = [UsageError, ValueError, OSError, ImportError]
    try:
        from nasjax.loading.hub import DownloadError, WeightsUnavailableError

        errors += [DownloadError, WeightsUnavailableError]
    except ImportError:
        pass
    return tuple(errors)


# What to do about an operating-system error, by errno (the error itself says what happened).
_OS_ERROR_HINTS = {
    errno.ENOSPC: "free space or write somewhere else",
    errno.EDQUOT: "free space or write somewhere else",
    errno.EFBIG: "write somewhere else",
    errno.EROFS: "write somewhere else",
    errno.EACCES: "check the permissions of the file and its folder, or use another path",
    errno.EPERM: "check the permissions of the file and its folder, or use another path",
    errno.ENOTDIR: "give another path",
    errno.EEXIST: "give another path",
    errno.ELOOP: "fix or remove the link",
}


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and not isinstance(error, _nasjax_errors()):
        where = f"{error.filename}: " if error.filename else ""
        hint = _OS_ERROR_HINTS.get(error.errno)
        return f"{where}{error.strerror.lower()}" + (f"; {hint}" if hint else "")
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, KeyError):
        text = f"missing {text}"
    return text


def _nasjax_errors() -> tuple[type, ...]:
    """OSError subclasses of nasjax's own, whose message is already the one to show."""
    try:
        from nasjax.loading.hub import DownloadError

        return (DownloadError,) if issubclass(DownloadError, OSError) else ()
    except ImportError:
        return ()


def run(argv: Sequence[str]) -> int:
    """Run one command line (without the program name); returns the exit status. Errors propagate."""
    argv = [a for a in argv if a not in ("--debug", "debug=true", "debug=True")]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("version", "--version", "-V"):
        from nasjax import __version__

        print(__version__)
        return 0
    command = argv[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        raise UsageError(f"unknown command {command!r}" + (f"; did you mean {close[0]}?" if close else "")
                         + f"; commands: {', '.join(COMMANDS)}")
    if any(a in ("-h", "--help", "help") for a in argv[1:]):
        print(usage(command))
        return 0
    settings, given = parse(command, argv[1:])
    _start_distributed(command, settings)
    _notes.clear()
    COMMANDS[command](settings, given)
    if _primary():
        for note in _notes:
            print(note, file=sys.stderr)
    return 0


def _start_distributed(command: str, s: dict) -> None:
    """Join a multi-process run when the distributed keys ask for it: first, before anything touches a
    device or reads data (a dataset is split by process when it is loaded)."""
    _, keys = command_keys()[command]
    options = {(keys[n].arg or n): s[n] for n in group_keys(command, "distributed") if s[n] is not None}
    if options:
        from nasjax.utils.distributed import initialize

        initialize(**options)


def _several_processes() -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized() and jax.process_count() > 1


def _primary() -> bool:
    """Whether this process prints: the only one, or process 0 of several."""
    return not _several_processes() or sys.modules["jax"].process_index() == 0


def _exit(code: int) -> None:
    """Exit with `code`. A failed process of a multi-process run skips jax's exit barrier, which would
    wait for processes still working; jax ends those when this one's heartbeats stop (the timeout)."""
    if code and _several_processes():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: runs the command and exits with its status (2 for a user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or "debug=true" in argv or os.environ.get("NASJAX_DEBUG", "").lower() in _TRUE
    command = argv[0] if argv and not argv[0].startswith("-") else None
    prefix = f"nasjax {command}: error" if command in COMMANDS else "nasjax: error"
    try:
        code = run(argv)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except _user_errors() as error:
        if debug:
            raise
        print(f"{prefix}: {_one_line(error)}", file=sys.stderr)
        _exit(EXIT_USAGE)
    except Exception as error:  # noqa: BLE001 — a bug, not the user's: one line and how to see more
        if debug:
            raise
        print(f"{prefix}: {type(error).__name__}: {_one_line(error)} (an internal error; rerun with --debug "
              "for the traceback and report it)", file=sys.stderr)
        _exit(1)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
