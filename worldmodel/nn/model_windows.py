"""A forward model fed from window datasets: the shared steps of its evaluation, training and videos.

``load_model`` (checkpoint -> model in eval mode), ``window_dataset`` (windows as the model was trained),
``select_windows`` (a seeded draw), ``to_model_units`` (a batch moved to the model's device and
normalisation), ``predict`` (mean, shuffled-action, z-sample and dropout rollouts of one batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.nn.checkpointing import load_checkpoint
from worldmodel.nn.forward_model import CHECKPOINT_KIND, ForwardModel


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[ForwardModel, dict]:
    """The model of a checkpoint, on ``device``, in eval mode with dropout off; and the checkpoint's metadata.

    Raises ``CheckpointError`` (one line) for any problem with the file."""
    ckpt = load_checkpoint(checkpoint, CHECKPOINT_KIND, map_location="cpu")
    model = ForwardModel.from_checkpoint(ckpt).to(device).eval()
    model.set_dropout(False)
    train_config = ckpt.get("train_config")
    meta = {"step": ckpt.get("step"), "train_config": train_config if isinstance(train_config, dict) else {}}
    return model, meta


def window_dataset(data: str | Path, model: ForwardModel, meta: Mapping, split: str, horizon: int) -> WindowDataset:
    """Windows of the model's context length and ``horizon`` predicted frames, as the model was trained."""
    ego_relative = bool(meta.get("train_config", {}).get("ego_relative", True))
    config = WindowConfig(model.config.backbone.context_frames, horizon, ego_relative, split)
    return WindowDataset(data, config)


def select_windows(n_available: int, n: int, seed: int) -> np.ndarray:
    """``min(n, n_available)`` distinct window indices drawn with ``seed``, in random order."""
    return np.random.default_rng(seed).choice(n_available, size=min(n, n_available), replace=False)


def to_model_units(batch: Mapping[str, Tensor], dataset: WindowDataset, model: ForwardModel) -> dict[str, Tensor]:
    """Move a dataset batch to the model's device, states and actions in the model's normalisation."""
    device = model.state_mean.device
    out = {k: v.to(device) for k, v in batch.items()}
    for key in ("context_states", "future_states"):
        si = dataset.denormalise_states(batch[key]).to(device)
        out[key] = model.normalise_states(si)
    out["actions"] = model.normalise_actions(dataset.denormalise_actions(batch["actions"]).to(device))
    return out


@torch.no_grad()
def predict(
    model: ForwardModel,
    batch: Mapping[str, Tensor],
    k: int,
    generator: torch.Generator,
    shuffled: bool = True,
    mc_k: int | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Every prediction the evaluation needs, for a batch in model units (``to_model_units``; with
    ``base_images`` for a ``base="cv"`` model).

    Returns ``{"mean", "shuffled"}``: images [B, Tp, C, H, W], states [B, Tp, S] normalised; ``{"samples",
    "mc"}``: [B, K, Tp, ...] (z samples without dropout; ``mc_k`` (default K) dropout replicas with z = the
    prior mean). The model is left in eval mode with dropout off.
    """
    args = (batch["context_images"], batch["context_states"])
    actions, base = batch["actions"], {"base_images": batch.get("base_images")}
    model.eval().set_dropout(False)
    out = {"mean": model.rollout(*args, actions, **base)}
    if shuffled:
        out["shuffled"] = model.rollout(*args, actions.roll(1, dims=0), **base)
    if model.config.stochastic:
        out["samples"] = model.rollout(*args, actions, z="sample", n_samples=k, generator=generator, **base)
    else:  # no latent: every "sample" is the mean prediction
        out["samples"] = {name: x[:, None].expand(-1, k, *x.shape[1:]) for name, x in out["mean"].items()}
    model.set_dropout(True)
    out["mc"] = model.rollout(*args, actions, z=None, n_samples=mc_k or k, **base)
    model.set_dropout(False)
    return out
