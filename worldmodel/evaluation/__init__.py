"""Evaluation: forward-model prediction metrics (``fm``), the metric formulas (``metrics``) and the markdown
table of closed-loop results (``table``; the closed-loop harness itself is ``worldmodel.driving``).

Public names: ``EvalFMConfig``, ``evaluate_fm`` (from ``fm``); ``psnr``, ``ssim``, ``spearman`` (from
``metrics``). Importing this package runs nothing.
"""

from worldmodel.evaluation.fm import EvalFMConfig, evaluate_fm
from worldmodel.evaluation.metrics import psnr, spearman, ssim

__all__ = ["EvalFMConfig", "evaluate_fm", "psnr", "spearman", "ssim"]
