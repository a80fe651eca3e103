"""Train: fine-tuning and training from scratch. One job per module (docs/training.md):

    config.py       TrainConfig: the run's settings as data (JSON in run.json), checked field by field
    initial.py      the network a run starts from, for every model source
    step.py         the jitted pure train step, optimizer, schedule, EMA (no I/O)
    checkpoints.py  the run directory, run.json, the orbax training state, best/ and last/, results.json
    trainer.py      the loop: `train(data, model, config=..., resume=..., **overrides)`
    loss.py, assigners.py   PPYoloELoss and its target assigners; plots.py: the curves
"""
from nasjax.train.config import TrainConfig, TrainingError
from nasjax.train.trainer import train

__all__ = ["TrainConfig", "TrainingError", "train"]
