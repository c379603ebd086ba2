"""Training loops: the forward model (``fm``), their checkpoints, run directories and DDP helpers.

Public names: ``TrainFMConfig``, ``train_fm``, ``FMTrainer``, ``TrainingError`` (from ``fm``);
``save_checkpoint``, ``load_checkpoint`` (from ``checkpoint``); ``RunDir`` (from ``run_dir``).
Importing this package runs nothing.
"""

from worldmodel.training.checkpoint import load_checkpoint, save_checkpoint
from worldmodel.training.fm import FMTrainer, TrainFMConfig, TrainingError, train_fm
from worldmodel.training.run_dir import RunDir

__all__ = ["FMTrainer", "RunDir", "TrainFMConfig", "TrainingError", "load_checkpoint", "save_checkpoint", "train_fm"]
