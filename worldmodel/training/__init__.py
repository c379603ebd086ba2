"""Training: the shared loop (``loop``), the forward model (``fm``), the policy (``policy``), run directories.

Public names: ``TrainFMConfig``, ``train_fm``, ``FMTrainer``, ``TrainingError`` (from ``fm``); ``RunDir``
(from ``run_dir``). Checkpoint files and DDP helpers live below, in ``worldmodel.nn.saving`` and
``worldmodel.nn.distributed``. Importing this package runs nothing.
"""

from worldmodel.training.fm import FMTrainer, TrainFMConfig, TrainingError, train_fm
from worldmodel.training.run_dir import RunDir

__all__ = ["FMTrainer", "RunDir", "TrainFMConfig", "TrainingError", "train_fm"]
