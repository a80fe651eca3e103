"""What validate() prints: Ultralytics' validation table and speed line, kept apart from the numbers so
that the metrics code stays free of formatting and the layout can be matched to Ultralytics' by eye.

    Class     Images  Instances          P          R      mAP50   mAP50-95
      all        128        929      0.703      0.626      0.696      0.521

The columns are Ultralytics' (%22s, %11i, %11.3g); P and R are Ultralytics' (ultralytics_metrics.py),
mAP50 and mAP50-95 pycocotools' (coco_metrics.py), so the mAP columns match COCO's tools rather than
Ultralytics' own 101-point AP (which the metrics dict carries as ultralytics_map50 / _map50_95).
"""
from __future__ import annotations

from typing import Mapping

from nasjax.validate.coco_metrics import Evaluation

TABLE_HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
_ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4


def format_table(evaluation: Evaluation, verbose: bool = False) -> str:
    """The 'all' row, and one row per class with instances if verbose."""
    s = evaluation.stats
    lines = [TABLE_HEADER, _ROW % ("all", evaluation.images, evaluation.instances, evaluation.precision,
                                   evaluation.recall, s["map50"], s["map50_95"])]
    if verbose:
        for row in evaluation.per_class:
            lines.append(_ROW % (row["name"][:22], row["images"], row["instances"], row["precision"], row["recall"],
                                 row["map50"], row["map50_95"]))
    return "\n".join(lines)


def format_speed(speed: Mapping[str, float], batch_size: int, imgsz: int) -> str:
    """Ultralytics' speed line: milliseconds per image for each stage, and the batch shape."""
    return (f"Speed: {speed['preprocess_ms']:.1f}ms pre-process, {speed['inference_ms']:.1f}ms inference, "
            f"{speed['postprocess_ms']:.1f}ms post-process per image at shape ({batch_size}, {imgsz}, {imgsz}, 3)")
