"""TFLite files: conversion from a SavedModel (float32, float16 weights, full-integer INT8 calibrated
on real images) and the `nasjax` metadata entry they carry (docs/export.md#float16, #int8, #metadata).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from nasjax.data import preprocessing
from nasjax.export.metadata import TFLITE_METADATA_NAME, ExportedModelError
from nasjax.export.options import ExportDependencyError, ExportOptions
from nasjax.export.versions import INSTALL_EXTRA, import_tf

# --- INT8 calibration ------------------------------------------------------------------------------


def calibration_inputs(files: Sequence[str], imgsz: int, config,
                       preprocess: str = "centre_pad") -> Iterator[np.ndarray]:
    """Each calibration image as predict() prepares it: (1, imgsz, imgsz, 3) float32 in [0, 1]."""
    for f in files:
        image = preprocessing.load_image(f)
        network_input, _ = preprocessing.preprocess(image, preprocess, imgsz, config.pad_value,
                                                    resize_margin=config.input_size - config.resize_longest_side)
        yield preprocessing.to_unit_float(network_input[None])


def representative_dataset(files: Sequence[str], imgsz: int, batch: int, config,
                           preprocess: str = "centre_pad") -> Iterator[list[np.ndarray]]:
    """The converter's representative dataset: batches of `batch` calibration inputs, the last group
    padded by repeating its images."""
    pending = []
    for x in calibration_inputs(files, imgsz, config, preprocess):
        pending.append(x)
        if len(pending) == batch:
            yield [np.concatenate(pending)]
            pending = []
    if pending:
        yield [np.concatenate((pending * batch)[:batch])]


# --- conversion ------------------------------------------------------------------------------------


def convert(saved_model: str | os.PathLike, options: ExportOptions | None = None, config=None) -> bytes:
    """The TFLite flatbuffer of a SavedModel. options: its quantization (half: float16 weights; int8:
    full-integer with uint8 input and float32 outputs, calibrated on options.calibration, pre-processed
    for `config`); None: float32 (the NMS graph)."""
    tf = import_tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if options is not None and options.half:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif options is not None and options.int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative_dataset(
            options.calibration, options.imgsz, options.batch, config, options.preprocess)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    return converter.convert()


# --- metadata --------------------------------------------------------------------------------------


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise ExportDependencyError(f"reading and writing .tflite files needs ai-edge-litert: {INSTALL_EXTRA}") from e
    return schema


def add_metadata(model: bytes, name: str, data: bytes) -> bytes:
    """`model` with a metadata entry `name` → `data` (replacing one of that name)."""
    schema = _schema()
    try:
        import flatbuffers
    except ImportError as e:
        raise ExportDependencyError(f"writing .tflite metadata needs flatbuffers: {INSTALL_EXTRA}") from e

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    m.metadata = [e for e in (m.metadata or []) if e.name.decode() != name]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    m.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(m.buffers) - 1
    m.metadata.append(entry)
    builder = flatbuffers.Builder(len(model) + len(data) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(path: str | os.PathLike, name: str = TFLITE_METADATA_NAME) -> bytes | None:
    """The bytes of metadata entry `name` of a .tflite file, or None. A file that is not a TFLite
    flatbuffer, or a damaged one, raises `ExportedModelError` (the Python flatbuffers reader does not
    verify offsets: every read past the data is caught here, and no count is trusted beyond the size)."""
    schema = _schema()
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ExportedModelError(f"{path} is not a TFLite model ({len(data)} bytes without the 'TFL3' identifier); "
                                 "export it again (nasjax export)")
    try:
        model = schema.Model.GetRootAs(data, 0)
        count = model.MetadataLength()
        if count > len(data) // 4:
            raise ValueError(f"{count} metadata entries in {len(data)} bytes")
        for i in range(count):
            entry = model.Metadata(i)
            if entry.Name() is not None and entry.Name().decode() == name:
                buffer = model.Buffers(entry.Buffer())
                if buffer.Offset() > 1:  # stored outside the flatbuffer (models over 2 GB)
                    if buffer.Offset() + buffer.Size() > len(data):
                        raise ValueError("a metadata buffer ends past the end of the file")
                    return data[buffer.Offset(): buffer.Offset() + buffer.Size()]
                return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    except (struct.error, IndexError, ValueError, TypeError, AttributeError) as e:
        # UnicodeDecodeError is a ValueError
        raise ExportedModelError(f"{path} is a damaged or truncated TFLite file ({e}); export it again") from e
    return None


# Their names before the split of exporter.py (still importable from nasjax.export.exporter).
add_tflite_metadata = add_metadata
read_tflite_metadata = read_metadata
