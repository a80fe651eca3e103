"""Data: reading and pre-processing images (`preprocessing.py`), datasets (`datasets.py`), and the
training input pipeline with the recipe's augmentations (`input_pipeline.py`)."""
