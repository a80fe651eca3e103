"""Build a YOLO-NAS model in Flax, print its summary, and run the jitted forward on an image.

    python examples/run_model.py --model yolo_nas_s [--image bus.jpg] [--imgsz 640]

Without pretrained weights on this machine the model gets deterministic random weights
(`nasjax.build`), so the boxes are meaningless; the point is the pipeline: a (1, 640, 640, 3) RGB
batch in [0, 1] in, (1, 8400, 4) xyxy boxes and (1, 8400, 80) scores out, compiled once.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

import nasjax


def load_image(path: str | None, size: int) -> np.ndarray:
    if path is None:
        return np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
    image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return (np.asarray(image, np.float32) / 255.0)[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolo_nas_s", choices=nasjax.VARIANTS)
    parser.add_argument("--image", default=None)
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()

    detector = nasjax.build(args.model)
    detector.info(imgsz=args.imgsz)
    images = load_image(args.image, args.imgsz)
    for attempt in ("compile + run", "run"):
        start = time.perf_counter()
        boxes, scores = detector(images)
        boxes.block_until_ready()
        print(f"{attempt}: {(time.perf_counter() - start) * 1e3:.0f} ms")
    scores = np.asarray(scores)
    print(f"boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)}, "
          f"{int((scores.max(-1) > 0.25).sum())} anchors with a class score above 0.25")


if __name__ == "__main__":
    main()
