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

import dataclasses
import difflib
import errno
import functools
import importlib.resources
import inspect
import json
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
def command_keys() -> dict[str, tuple[str, dict[str, Key]]]:
    """{command: (help, {key: Key})} from settings.yaml."""
    import yaml

    text = importlib.resources.files("nasjax").joinpath("settings.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)

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
        value = {"int": int, "float": float, "path": Path, "str": str}[key.type](text)
    except ValueError:
        raise UsageError(f"{where}: expected {'true or false' if key.type == 'bool' else 'a number' if key.type in ('int', 'float') else key.type}") from None
    if key.choices and value not in key.choices:
        raise UsageError(f"{where}: expected one of {', '.join(map(str, key.choices))}")
    return value


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
        if command == "predict":
            from nasjax.predict import predict as fn
        elif command == "val":
            from nasjax.validate import validate as fn
        elif command == "export":
            from nasjax.export import check_options as fn
        elif command == "train":
            from nasjax.train import TrainConfig

            return {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        else:
            return {}
    except ImportError:
        return {}
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.default is not inspect.Parameter.empty}


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
        if k.name == "batch" and command in ("predict", "val"):
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
    from nasjax.predict.save import PredictionRun, check_save_dir

    source = s["source"]
    if not Path(source).exists() and not set("*?[") & set(source):  # before any weights are fetched
        raise FileNotFoundError(f"source {source}: no such file or folder")
    save_dir, created = _run_dir(s, "predict", claim=True)
    check_save_dir(save_dir)  # a file in the way or an earlier run there: refused before the model loads
    options = {**_nms_options("predict", s, given),
               **_options("predict", s, given, ("imgsz", "batch", "skip_errors", "exif_transpose", "workers"))}
    # The run's files appear only when it has succeeded (nasjax/predict/save.py); an unwritable folder
    # fails here, before the model is loaded.
    with PredictionRun(save_dir, created=created) as run:
        model = _load_model(s, "detections")
        for result in predict(model, s["source"], dtype=_dtype(s), stream=True, **options):
            record = run.add(result, save_image=s["save"])
            print(f"{result.path or record['annotated']}: {result.summary()}")
        path = run.finish({"model": s["model"], "random_weights": s["random_weights"],
                           "settings": {**options, "dtype": s["dtype"]}})
    print(f"{len(run.records)} images → {save_dir} ({'annotated images and ' if s['save'] else ''}{path.name})")


def cmd_val(s: dict, given: set[str]) -> None:
    from nasjax.data import load_dataset
    from nasjax.validate import validate
    from nasjax.validate.predictions import write_metrics

    # The dataset first: a missing or malformed dataset fails before any weights are fetched.
    data_options = _options("val", s, given, ("images", "download", "exif_transpose", "tfds_data_dir", "tfds_download"))
    dataset = load_dataset(s["data"], s["split"] or "val", **data_options)
    save_dir = _run_dir(s, "val")
    # Unwritable outputs fail now, not after the whole validation has run.
    _check_writable(save_dir / "metrics.json", *(Path(s[k]) for k in ("json", "save_predictions") if s[k] is not None))
    model = None if s["predictions"] is not None else _load_model(s, "metrics")
    options = {**_nms_options("val", s, given), **data_options,
               **_options("val", s, given, ("split", "imgsz", "batch", "reference_mode", "save_predictions",
                                            "predictions", "verbose", "workers"))}
    metrics = validate(model, dataset, dtype=_dtype(s), **options)
    record = {**metrics, "model": None if s["predictions"] else s["model"], "random_weights": s["random_weights"],
              "data": s["data"], "predictions": str(s["predictions"]) if s["predictions"] else None}
    save_dir.mkdir(parents=True, exist_ok=True)
    targets = [save_dir / "metrics.json"] + ([Path(s["json"])] if s["json"] is not None else [])
    for target in targets:
        write_metrics(target, record)
    print(f"wrote metrics to {', '.join(map(str, targets))}")


def cmd_export(s: dict, given: set[str]) -> None:
    from nasjax.export import export
    from nasjax.export.metadata import metadata_path, nms_model_path
    from nasjax.export.options import check_options, default_output

    options = _options("export", s, given, ("imgsz", "batch", "int8", "half", "data", "calib_images", "int8_tail",
                                            "nms", "conf", "iou", "max_det", "preprocess"))
    export_format = s["format"] or "tflite"
    checked = check_options(export_format, **options)  # bad options fail before the model loads
    model = _load_model(s, "detections")
    output = s["output"] if s["output"] is not None else default_output(model, checked)
    path = export(model, export_format, output, verbose=True, **options)
    extra = f" (+ {nms_model_path(path).name})" if checked.nms and checked.format == "tflite" else ""
    print(f"exported {path}{extra} and {metadata_path(path)}")


def cmd_train(s: dict, given: set[str]) -> None:
    from nasjax.train import train

    overrides = _options("train", s, given, [k for k in command_keys()["train"][1] if k not in ("data", "model")])
    result = train(s["data"], s["model"], **overrides)
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
    "predict": cmd_predict, "val": cmd_val, "export": cmd_export, "train": cmd_train, "convert": cmd_convert,
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
    _notes.clear()
    COMMANDS[command](settings, given)
    for note in _notes:
        print(note, file=sys.stderr)
    return 0


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
        raise SystemExit(EXIT_USAGE) from None
    except Exception as error:  # noqa: BLE001 — a bug, not the user's: one line and how to see more
        if debug:
            raise
        print(f"{prefix}: {type(error).__name__}: {_one_line(error)} (an internal error; rerun with --debug "
              "for the traceback and report it)", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
