"""A scene policy (``nn.scene_policy``) driving ``Replay-v0``: at each step, the object-level features of every
live episode's scene (``driving.scene``, from its simulation: what the car's sensors give) in one batch
through the policy. No views are read (``needs_context = False``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldmodel.driving.drivers import FirstSlot
from worldmodel.driving.scene import FEATURE_NAMES, scene_features
from worldmodel.nn.checkpointing import CheckpointError, load_checkpoint
from worldmodel.nn.scene_policy import CHECKPOINT_KIND, ScenePolicy


class ScenePolicyDriver(FirstSlot):
    """A trained scene policy (its checkpoint) driving any number of episodes in lockstep."""

    max_slots = None
    needs_context = False
    view = None

    def __init__(self, checkpoint: str | Path, device: str = "cpu", seed: int = 0) -> None:
        self.device = torch.device(device)
        ckpt = load_checkpoint(checkpoint, CHECKPOINT_KIND)
        self.policy = ScenePolicy.from_checkpoint(ckpt).to(self.device).eval()
        if self.policy.config.feature_names != FEATURE_NAMES:
            raise CheckpointError(checkpoint, "the scene policy reads other features than this version computes",
                                  "retrain it with this version")  # fmt: skip
        self.name = f"scene-policy:{Path(checkpoint).name}"
        self._slots: dict[int, list] = {}  # slot -> [simulation, last executed action [2]]

    def reset_slot(self, slot: int, env, obs: dict, info: dict) -> None:
        self._slots[slot] = [env.sim, np.zeros(2)]

    @torch.no_grad()
    def act_slots(self, slots: list[int], observations: list[dict], infos: list[dict]) -> np.ndarray:
        features = np.stack([scene_features(sim.vehicles(), sim.road, last)
                             for sim, last in (self._slots[s] for s in slots)])  # fmt: skip
        action = self.policy(torch.from_numpy(features).to(self.device))["action"]
        actions = self.policy.unnormalise_actions(action).cpu().numpy().astype(np.float64)
        for slot, a in zip(slots, actions, strict=True):
            self._slots[slot][1] = a.copy()
        return actions

    def executed(self, slot: int, action: np.ndarray) -> None:
        """Another driver's ``action`` [2] was executed in ``slot`` (under ``labelling.LabellingDriver``)."""
        self._slots[slot][1] = np.asarray(action, dtype=np.float64).copy()

    def slot_diagnostics(self, slot: int) -> dict[str, float]:
        return {}


__all__ = ["ScenePolicyDriver"]
