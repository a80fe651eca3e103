"""Validation end to end on COCO128, split into data, inference, NMS and metric time.

    .venv/bin/python benchmarks/validate.py [--data coco128] [--variant yolo_nas_s] [--imgsz 640]
        [--batch 8] [--json OUT]

The weights are deterministic random weights (`nasjax.build(variant)`, seed 0): no pretrained YOLO-NAS
weights can be had here. With validation's conf 0.001 such a model fills every image with 300
detections, so NMS and metric times are those of a worst case; the mAP is meaningless (about 0).

Two measurements:
1. Staged: each stage runs over the whole dataset before the next starts, after one warm-up batch has
   compiled the forward and the NMS functions (compile time reported apart):
   - data: reading the labels and image headers (`load_dataset`), then reading, resizing and padding
     every image (the predict() pre-processing, on the host, one thread);
   - inference: the jitted forward pass per batch (uint8 → [0, 1] → network), to device completion;
   - NMS: the jitted NMS per batch on the forward outputs, and the transfer of the detections back;
   - metric: boxes mapped back to original pixels, COCO records, pycocotools' COCOeval and the
     Ultralytics-style P / R (`coco_metrics.evaluate`).
2. End to end: `nasjax.validate.validate()` as the CLI runs it (reading threads overlapping the device,
   forward + NMS in one jitted call); wall time with and without its warm-up compile, and its Speed line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_ASSETS = HERE.parent.parent / "shared" / "assets"


def staged(detector, dataset, imgsz: int, batch: int, settings: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nasjax.validate import coco_metrics
    from nasjax.model import nms
    from nasjax.data import preprocessing
    from nasjax.model.core import forward
    from nasjax.validate.validator import _Collector, _internal_records, _round_records

    table = jnp.asarray(preprocessing.UNIT_SCALE_TABLE)
    forward_jit = jax.jit(lambda graphdef, variables, images: forward(graphdef, variables, table[images]),
                          static_argnums=0)
    iou32 = nms.iou_compare_threshold(settings["iou"])
    nms_jit = jax.jit(lambda boxes, scores: nms.non_max_suppression(
        boxes, scores, np.float32(settings["conf"]), iou32, top_k=settings["nms_top_k"], max_det=settings["max_det"],
        multi_label=settings["multi_label"], agnostic=settings["agnostic"]))
    config = detector.preprocessing  # the weights' resize / pad numbers
    pad_value, margin = config.pad_value, config.input_size - config.resize_longest_side
    samples = [s for chunk in dataset.chunks(10**9) for s in chunk]

    # data: read + pre-process every image into padded batches
    start = time.perf_counter()
    batches, transforms = [], []
    for i in range(0, len(samples), batch):
        part = samples[i: i + batch]
        array = np.zeros((batch, imgsz, imgsz, 3), np.uint8)
        for j, sample in enumerate(part):
            image = preprocessing.load_image(sample.source)
            array[j], transform = preprocessing.preprocess(image, settings["preprocess"], imgsz, pad_value,
                                                           resize_margin=margin, rounding=settings["resize_rounding"])
            transforms.append(transform)
        batches.append(array)
    data_s = time.perf_counter() - start

    variables = detector.variables
    start = time.perf_counter()
    out = forward_jit(detector.graphdef, variables, jnp.asarray(batches[0]))
    jax.block_until_ready(nms_jit(out.boxes, out.scores))
    compile_s = time.perf_counter() - start

    start = time.perf_counter()
    outputs = []
    for array in batches:
        out = forward_jit(detector.graphdef, variables, jnp.asarray(array))
        outputs.append((out.boxes, out.scores))
    jax.block_until_ready(outputs)
    inference_s = time.perf_counter() - start

    start = time.perf_counter()
    detections = [jax.device_get(nms_jit(boxes, scores)) for boxes, scores in outputs]
    nms_s = time.perf_counter() - start
    del outputs

    start = time.perf_counter()
    collector = _Collector(dataset)
    for k, sample in enumerate(samples):
        d = detections[k // batch]
        i, n = k % batch, int(detections[k // batch].count[k % batch])
        xywh, scores = _round_records(transforms[k].boxes_to_original(d.boxes[i, :n]), d.scores[i, :n])
        collector.add(sample, xywh, scores, d.classes[i, :n].astype(np.int64))
    evaluation = coco_metrics.evaluate(collector.images, dataset.names, dataset.category_ids,
                                       records=_internal_records(collector.images, collector.records))
    metric_s = time.perf_counter() - start
    return {"data_s": data_s, "compile_s": compile_s, "inference_s": inference_s, "nms_s": nms_s,
            "metric_s": metric_s, "total_s": data_s + inference_s + nms_s + metric_s,
            "detections": sum(map(len, collector.records)), "map50_95": evaluation.stats["map50_95"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="coco128")
    parser.add_argument("--variant", default="yolo_nas_s")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if "NASJAX_DATASETS_DIR" not in os.environ and (SHARED_ASSETS / args.data).is_dir():
        os.environ["NASJAX_DATASETS_DIR"] = str(SHARED_ASSETS)

    import jax

    import nasjax
    import nasjax.data as datasets
    from nasjax.validate.validator import DEFAULT_SETTINGS, validate

    detector = nasjax.build(args.variant)  # deterministic random weights, seed 0
    start = time.perf_counter()
    dataset = datasets.load_dataset(args.data)
    labels_s = time.perf_counter() - start
    settings = dict(DEFAULT_SETTINGS)
    stages = staged(detector, dataset, args.imgsz, args.batch, settings)
    stages["data_s"] += labels_s
    stages["total_s"] += labels_s
    stages["labels_s"] = labels_s

    start = time.perf_counter()
    metrics = validate(detector, args.data, imgsz=args.imgsz, batch_size=args.batch, print_results=False)
    end_to_end = {"wall_s": time.perf_counter() - start, **{f"{k}_s": v for k, v in metrics["timing_s"].items()},
                  "speed_ms_per_image": metrics["speed"]}
    end_to_end["wall_without_warmup_s"] = end_to_end["wall_s"] - metrics["timing_s"].get("warmup", 0.0)

    device = jax.devices()[0]
    report = {
        "data": args.data, "images": len(dataset), "variant": args.variant, "weights": "deterministic random (seed 0)",
        "imgsz": args.imgsz, "batch": args.batch, "settings": settings,
        "device": f"{device.platform} {device.device_kind}", "cpu_count": os.cpu_count(), "host": platform.node(),
        "staged": stages, "end_to_end": end_to_end,
    }
    n = len(dataset)
    print(f"{args.data}: {n} images, {args.variant} with deterministic random weights (seed 0), imgsz {args.imgsz}, "
          f"batch {args.batch}, conf {settings['conf']}, on {report['device']}")
    print("staged (each stage over all images):")
    for key in ("data", "inference", "nms", "metric"):
        seconds = stages[f"{key}_s"]
        print(f"  {key:<10} {seconds:8.2f} s  {1000 * seconds / n:8.1f} ms/image")
    print(f"  {'total':<10} {stages['total_s']:8.2f} s   (compile {stages['compile_s']:.1f} s apart; "
          f"labels + headers {labels_s:.2f} s of data; {stages['detections']} detections)")
    speed = end_to_end["speed_ms_per_image"]
    print(f"end to end validate(): {end_to_end['wall_s']:.2f} s wall, {end_to_end['wall_without_warmup_s']:.2f} s "
          f"without the warm-up compile; Speed: {speed['preprocess_ms']:.1f}ms pre-process, "
          f"{speed['inference_ms']:.1f}ms inference, {speed['postprocess_ms']:.1f}ms post-process per image; "
          f"metrics {end_to_end['metrics_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
