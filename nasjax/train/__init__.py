"""Train: fine-tuning and training from scratch (`trainer.py`) with PPYoloELoss (`loss.py`,
`assigners.py`); curves in `plots.py`."""
from nasjax.train.trainer import TrainingError, train

__all__ = ["TrainingError", "train"]
