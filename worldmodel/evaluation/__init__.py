"""Evaluation: forward-model prediction metrics (``fm``) and the metric formulas (``metrics``).

Public names: ``EvalFMConfig``, ``evaluate_fm`` (from ``fm``); ``psnr``, ``ssim``, ``spearman`` (from
``metrics``). Importing this package runs nothing.
"""

from worldmodel.evaluation.fm import EvalFMConfig, evaluate_fm
from worldmodel.evaluation.metrics import psnr, spearman, ssim

__all__ = ["EvalFMConfig", "evaluate_fm", "psnr", "spearman", "ssim"]
