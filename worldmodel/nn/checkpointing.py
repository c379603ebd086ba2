"""Self-contained checkpoints of a module built from one dataclass config (the forward model, the policy).

``{"format": 1, "kind", "config", "state_dict", "step", **extra}``: plain tensors, dicts and numbers, loadable
with ``torch.load(..., weights_only=True)``; the config rebuilds the module, so nothing else is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch

CHECKPOINT_FORMAT = 1


class SelfContainedCheckpoint:
    """Mixin for an ``nn.Module`` whose ``__init__`` takes its config (``self.config``).

    Subclasses set ``checkpoint_kind`` (the ``"kind"`` written and required on load) and ``config_class``
    (a dataclass with ``to_dict`` / ``from_dict``).
    """

    checkpoint_kind: ClassVar[str]
    config_class: ClassVar[type]

    def checkpoint_dict(self, step: int, **extra) -> dict:
        """``{"format": 1, "kind", "config", "state_dict", "step", **extra}`` (weights_only-safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": self.checkpoint_kind,
            "config": self.config.to_dict(),
            "state_dict": self.state_dict(),
            "step": step,
            **extra,
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path | Mapping, map_location: str | torch.device = "cpu"):
        """Rebuild the module from a checkpoint file (or an already loaded checkpoint dict)."""
        ckpt = path if isinstance(path, Mapping) else torch.load(path, map_location=map_location, weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("kind") != cls.checkpoint_kind:
            raise ValueError(
                f"{cls.__name__}.from_checkpoint: expected format {CHECKPOINT_FORMAT}, kind {cls.checkpoint_kind!r}; "
                f"got format {ckpt.get('format')!r}, kind {ckpt.get('kind')!r}"
            )
        module = cls(cls.config_class.from_dict(ckpt["config"]))
        module.load_state_dict(ckpt["state_dict"])
        return module


__all__ = ["CHECKPOINT_FORMAT", "SelfContainedCheckpoint"]
