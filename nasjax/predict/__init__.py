"""Predict: images in (files, folders, globs, arrays), `Results` out (`predictor.py`), drawn and
serialised by `results.py`. The device work is the model's batch interface (nasjax.model.core)."""
from nasjax.predict.predictor import Item, class_names_of, list_sources, predict
from nasjax.predict.results import Boxes, Results

__all__ = ["Boxes", "Item", "Results", "class_names_of", "list_sources", "predict"]
