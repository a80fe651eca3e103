"""The JAX → TensorFlow graph: the network and the NMS as pure JAX functions, converted by `jax2tf`
and saved as SavedModels (docs/export.md#route, #stablehlo).

`jax2tf.convert` (native serialisation: one `XlaCallModule` op holding StableHLO, lowered for CPU) of
a pure function (variables, images) → named outputs; the variables become `tf.Variable`s on a
`tf.Module`; a `tf.function` with a fixed input signature is saved as the `serving_default` signature.
The TFLite converter (`tflite.py`) reads such a SavedModel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nasjax.export.metadata import DETECTION_OUTPUTS, INPUT_NAME, SIGNATURE, detection_shapes
from nasjax.export.options import ExportOptions
from nasjax.export.versions import import_tf
from nasjax.model.nms import NMSSettings

CONVERT_OPTIONS = dict(with_gradient=False, native_serialization_platforms=("cpu",))


def output_fn(network, host_tail: bool):
    """(the pure function (flat variable leaves, images) → dict of named outputs, the leaves).
    host_tail: the outputs are the raw head outputs `reg_distri`, `cls_logits`; else `boxes`, `scores`."""
    import jax

    from nasjax.model.core import forward

    leaves, treedef = jax.tree.flatten(network.variables)
    graphdef = network.graphdef

    def fn(flat, images):
        out = forward(graphdef, jax.tree.unflatten(treedef, flat), images)
        if host_tail:
            return {"reg_distri": out.reg_distri, "cls_logits": out.cls_logits}
        return {"boxes": out.boxes, "scores": out.scores}

    return fn, leaves


def nms_fn(settings: NMSSettings, baked: bool):
    """NMS of a batch as a pure function: (boxes, scores, conf, iou) → the four detection_* outputs, or,
    baked, (boxes, scores) → the same with settings.conf and settings.iou fixed (docs/export.md#nms)."""
    from nasjax.model import nms

    static = settings.static()

    def fn(boxes, scores, conf, iou):
        return dict(zip(DETECTION_OUTPUTS, nms.non_max_suppression(boxes, scores, conf, iou, **static)))

    if baked:
        conf, iou = np.float32(settings.conf), nms.iou_compare_threshold(settings.iou)
        return lambda boxes, scores: fn(boxes, scores, conf, iou)
    return fn


def _jax2tf():
    import_tf()  # first: a clear error when TensorFlow is missing (jax2tf imports it)
    from jax.experimental import jax2tf

    return jax2tf


def save_network(network, options: ExportOptions, directory: Path) -> None:
    """Write the SavedModel of the network to `directory`: input `images` (batch, S, S, 3) float32 (the
    batch symbolic when options.batch is None), the outputs of `output_fn`, and with options.nms on a
    SavedModel export the baked NMS per image (`tf.map_fn`: XLA cannot sort along a symbolic batch)."""
    tf = import_tf()
    jax2tf = _jax2tf()
    fn, leaves = output_fn(network, options.host_tail)
    s, batch = options.imgsz, options.batch
    shapes = [None, f"(b, {s}, {s}, 3)"] if batch is None else None
    converted = jax2tf.convert(fn, polymorphic_shapes=shapes, **CONVERT_OPTIONS)
    module = tf.Module()
    module.variables_list = [tf.Variable(np.asarray(x), trainable=False) for x in leaves]
    fake_quant = options.int8
    spec = tf.TensorSpec([batch, s, s, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec], autograph=False)
    def serve(images):
        if fake_quant:  # pins the INT8 input quantisation to scale 1/255, zero point 0: raw pixels (#int8)
            images = tf.quantization.fake_quant_with_min_max_args(images, min=0.0, max=1.0, num_bits=8)
        return converted(module.variables_list, images)

    if options.nms and options.format == "saved_model":
        per_image = jax2tf.convert(nms_fn(options.nms, baked=True), **CONVERT_OPTIONS)
        dtypes = {"detection_classes": tf.int32, "num_detections": tf.int32}
        signature = {k: tf.TensorSpec(shape, dtypes.get(k, tf.float32))
                     for k, shape in detection_shapes(1, options.nms.max_det).items()}
        network_serve = serve

        @tf.function(input_signature=[spec], autograph=False)
        def serve(images):
            outputs = dict(network_serve(images))
            detections = tf.map_fn(lambda bs: per_image(bs[0][None], bs[1][None]),
                                   (outputs["boxes"], outputs["scores"]), fn_output_signature=signature)
            outputs.update({k: v[:, 0] for k, v in detections.items()})
            return outputs

    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE: serve})


def save_nms(settings: NMSSettings, batch: int, num_anchors: int, num_classes: int, directory: Path) -> None:
    """Write the SavedModel of the NMS alone (the source of `<name>_nms.tflite`): inputs `boxes`,
    `scores` and the scalars `conf`, `iou`; top_k, max_det, multi_label, agnostic baked in."""
    tf = import_tf()
    converted = _jax2tf().convert(nms_fn(settings, baked=False), **CONVERT_OPTIONS)

    @tf.function(input_signature=[tf.TensorSpec([batch, num_anchors, 4], tf.float32, name="boxes"),
                                  tf.TensorSpec([batch, num_anchors, num_classes], tf.float32, name="scores"),
                                  tf.TensorSpec([], tf.float32, name="conf"),
                                  tf.TensorSpec([], tf.float32, name="iou")], autograph=False)
    def serve(boxes, scores, conf, iou):
        return converted(boxes, scores, conf, iou)

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE: serve})
