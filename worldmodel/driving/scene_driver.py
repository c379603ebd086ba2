"""A scene policy (``nn.scene_policy``) driving ``Replay-v0``: at each step, the object-level features of every
live episode's scene (``driving.scene``, from its simulation: what the car's sensors give) in one batch
through the policy. No views are read (``needs_context = False``).

A policy with a lane choice first picks the lane it drives toward (``ScenePolicy.choose_lanes``), then drives
with that lane's offset as its ``lane_target``. A change, once chosen, is held until the car is in the target lane
(its nearest) or the lane ends; then it chooses again, every step."""

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
        self._slots: dict[int, list] = {}  # slot -> [simulation, last executed action [2], target lane or None]

    def reset_slot(self, slot: int, env, obs: dict, info: dict) -> None:
        self._slots[slot] = [env.sim, np.zeros(2), None]

    def lane_targets(self, slots: list[int], vehicles: list[dict], features: torch.Tensor) -> torch.Tensor:
        """``[B]``: each slot's target lane's centre minus its car's y [lane widths], a new target chosen for each
        slot that is not changing lane (see the module docstring; ``vehicles``: each slot's ``sim.vehicles()``,
        ``features`` ``[B, F]`` their scenes)."""
        deciding, nearest = [], []
        for k, (slot, cars) in enumerate(zip(slots, vehicles, strict=True)):
            sim, _, target = self._slots[slot]
            x, y = cars["x"][:1], cars["y"][:1]
            lane = int(sim.road.nearest_lane(x, y)[0])
            start, end = sim.road.lane_extent_x()
            ongoing = target is not None and target != lane and 0 <= target < sim.road.total_lanes
            if not (ongoing and start[target] <= x[0] <= end[target]):
                deciding.append(k)
                nearest.append(lane)
        if deciding:
            offsets = self.policy.choose_lanes(features[deciding]).tolist()
            for k, lane, offset in zip(deciding, nearest, offsets, strict=True):
                self._slots[slots[k]][2] = lane + offset
        targets = []
        for slot, cars in zip(slots, vehicles, strict=True):
            sim, _, lane = self._slots[slot]
            targets.append((float(sim.road.lane_center_y(lane)) - float(cars["y"][0])) / sim.road.lane_width_m)
        return torch.tensor(targets, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def act_slots(self, slots: list[int], observations: list[dict], infos: list[dict]) -> np.ndarray:
        states = [self._slots[s] for s in slots]
        vehicles = [sim.vehicles() for sim, _, _ in states]
        features = np.stack([scene_features(cars, sim.road, last)
                             for cars, (sim, last, _) in zip(vehicles, states, strict=True)])  # fmt: skip
        features = torch.from_numpy(features).to(self.device)
        target = None if self.policy.lane_head is None else self.lane_targets(slots, vehicles, features)
        action = self.policy(features, target)["action"]
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
