"""Small generated detection data for tests: grey images with one or two coloured boxes, the colour
telling the class, so that a model can learn them in a few steps and labels are exact."""
from __future__ import annotations

import numpy as np

COLOURS = [(230, 40, 40), (40, 60, 230)]  # class 0 red, class 1 blue


def draw_boxes(image: np.ndarray, rng: np.random.Generator, sides: tuple[int, int] = (10, 30)) -> list[tuple]:
    """Paint 1-2 boxes (sides in [sides[0], sides[1]) px) into `image`; their (class, x centre, y centre,
    width, height), normalised by the image size as YOLO label files hold them."""
    height, width = image.shape[:2]
    boxes = []
    for _ in range(rng.integers(1, 3)):
        cls = int(rng.integers(0, len(COLOURS)))
        w, h = rng.integers(*sides, 2)
        x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
        image[y0:y0 + h, x0:x0 + w] = COLOURS[cls]
        boxes.append((cls, (x0 + w / 2) / width, (y0 + h / 2) / height, w / width, h / height))
    return boxes
