"""`target="frigate"`: an ONNX file in the form Frigate NVR's `yolonas` model type reads
(docs/export.md#frigate).

Frigate (its ONNX and OpenVINO detectors with `model_type: yolonas`, `input_tensor: nchw`,
`input_pixel_format: bgr`) feeds the model a (1, 3, H, W) uint8 BGR frame region, already resized to
the model's size, and reads its first output as the "flat" detections of super-gradients' export: one
row per detection, (image index, x1, y1, x2, y2, score, class), in input pixels. So this wraps the
float ONNX graph with its NMS:

* in front: uint8 → float32, BGR → RGB, / 255 (the float graph's own input encoding);
* behind: the first `num_detections` rows of `detection_boxes`, `detection_scores`,
  `detection_classes` as one (K, 7) float32 output `output`, K the number of detections (at most
  max_det), best first.

The batch is 1 (Frigate's). Frigate reads at most 20 rows; `max_det` caps K.
"""
from __future__ import annotations

import numpy as np

from nasjax.export.metadata import FRIGATE_COLUMNS as FLAT_COLUMNS
from nasjax.export.metadata import FRIGATE_OUTPUT as FLAT_OUTPUT
from nasjax.export.metadata import INPUT_NAME

_FLOAT_INPUT = "frigate/float_images"


def wrap(model):
    """The Frigate form of `model`, an ONNX ModelProto with input `images` (1, 3, S, S) float32 RGB in
    [0, 1] and the four detection_* outputs (onnx_nms.py): uint8 BGR in, the flat detections out."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    for node in graph.node:  # the float graph now reads the converted pixels
        node.input[:] = [_FLOAT_INPUT if name == INPUT_NAME else name for name in node.input]
    old_input = graph.input[0]
    shape = [d.dim_value for d in old_input.type.tensor_type.shape.dim]
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, shape))

    made: set[str] = set()

    def const(name, value):
        if name not in made:
            made.add(name)
            graph.initializer.append(numpy_helper.from_array(np.asarray(value), f"frigate/const_{name}"))
        return f"frigate/const_{name}"

    front = [
        helper.make_node("Cast", [INPUT_NAME], ["frigate/float"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["frigate/float", const("rgb", np.array([2, 1, 0], np.int64))], ["frigate/rgb"],
                         axis=1),
        helper.make_node("Div", ["frigate/rgb", const("255", np.float32(255.0))], [_FLOAT_INPUT]),
    ]
    count = "frigate/count"
    back = [
        helper.make_node("Cast", ["num_detections"], ["frigate/count64"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["frigate/count64", const("one", np.array([1], np.int64))], [count]),
    ]
    columns = []
    for name, width in (("detection_boxes", 4), ("detection_scores", 1), ("detection_classes", 1)):
        rows = f"frigate/{name}_rows"
        back.append(helper.make_node("Slice", [name, const("zero", np.array([0], np.int64)), count,
                                               const("axis1", np.array([1], np.int64))], [rows]))
        flat = f"frigate/{name}_flat"
        back.append(helper.make_node("Reshape", [rows, const(f"shape{width}", np.array([-1, width], np.int64))], [flat]))
        if name == "detection_classes":
            back.append(helper.make_node("Cast", [flat], [flat + "_f"], to=TensorProto.FLOAT))
            flat += "_f"
        columns.append(flat)
    # The image index column: zeros shaped like the scores column.
    back.append(helper.make_node("Mul", [columns[1], const("zero_f", np.float32(0.0))], ["frigate/image"]))
    back.append(helper.make_node("Concat", ["frigate/image", *columns], [FLAT_OUTPUT], axis=1))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(front + nodes + back)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(FLAT_OUTPUT, TensorProto.FLOAT, ["detections", len(FLAT_COLUMNS)]))
    return model
