"""The backbone on its own: exported after pretraining, loaded (optionally frozen) by the models that reuse it.

``export_backbone`` writes ``{"format": 1, "kind": "backbone", "config", "state_dict", "step", ...}``;
``load_backbone`` rebuilds it (``weights_only=True``) and checks its config against the caller's.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from worldmodel.nn.backbone import Backbone, BackboneConfig
from worldmodel.nn.checkpointing import CheckpointError, advice_for, checkpoint_errors, load_checkpoint, load_weights
from worldmodel.nn.saving import save_checkpoint


def export_backbone(backbone: Backbone, path: str | os.PathLike, step: int = 0, **extra) -> Path:
    """Write ``{"format": 1, "kind": "backbone", "config", "state_dict", "step", ...}`` atomically."""
    checkpoint = {
        "format": 1,
        "kind": "backbone",
        "config": backbone.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
        "step": int(step),
        **extra,
    }
    return save_checkpoint(checkpoint, path)


def load_backbone(path: str | os.PathLike, config: BackboneConfig | None = None, freeze: bool = False) -> Backbone:
    """A ``Backbone`` from ``export_backbone``'s file (``weights_only=True``).

    ``config``: the config the caller needs (e.g. ``ForwardModelConfig.backbone``); it must equal the
    file's up to ``dropout`` (no weights), and is the one used. ``freeze``: its parameters get no gradient
    (``requires_grad=False``). The forward model takes it as ``ForwardModel(config, backbone=...)``.
    """
    advice = advice_for("backbone")
    checkpoint = load_checkpoint(path, "backbone", advice=advice)
    with checkpoint_errors(path, "invalid config", advice):
        saved = BackboneConfig.from_dict(checkpoint["config"])
    if config is not None and replace(config, dropout=saved.dropout) != saved:
        raise CheckpointError(path, f"the backbone was trained with {saved}, the model asks for {config}",
                              "pretrain with the same --preset as the model")  # fmt: skip
    with checkpoint_errors(path, "invalid config", advice):
        backbone = Backbone(config or saved)
    load_weights(backbone, checkpoint["state_dict"], path, advice)
    if freeze:
        backbone.requires_grad_(False)
    return backbone
