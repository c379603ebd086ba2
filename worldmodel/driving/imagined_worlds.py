"""Imagined worlds of training windows, built once per window and cached (SPEC §9, issue 14).

In ``Replay-v0`` the other cars never react to the ego, so the future around it does not depend on what a
policy does: it is imagined once per training window along a *reference*, the recorded car's own future, and
the policy (or a planner) is then moved in it by the exact kinematics only.

- ``EgoWindow``: the recorded car of a batch of windows in SI units: its state at the last context frame
  (x, y, psi, v), its recorded actions and future poses, the speed target, the action before the first;
- world builders, each ``build(batch, ego) -> WorldFrames`` ``[B, K, T, 3, H, W]`` at every step 1..T:
  ``ModelWorldBuilder``: the frozen forward model rolled out from the window's context with the recorded
  actions (``ModelWorld.rollout``: K = z samples x dropout replicas), the frames taken as centred on the poses
  the exact kinematics give for those actions from the last context state; ``OracleWorldBuilder``: the
  window's own recorded future frames (K = 1), centred on the recorded car (its recorded poses);
- ``WorldCache``: an LRU of built worlds by window index, frames stored as uint8 (2.5 MB per window at K = 10,
  T = 30 and 117 x 24 views), with the extras of a window (a teacher's plan).

No ``cv`` builder: a window holds the views and the recorded car's states only; extrapolating the other cars
at constant velocity needs their states (the trajectories file, and a render per window and step).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from worldmodel.data.hdf5 import DT_S
from worldmodel.data.windows import WindowDataset
from worldmodel.driving import kinematics
from worldmodel.driving.model_world import ModelWorld
from worldmodel.driving.worlds import WorldFrames

#: World builders of policy training (``--world``).
TRAIN_WORLDS = ("model", "oracle", "cv", "traffic")


def kinematic_state(states: Tensor) -> Tensor:
    """Recorded states ``[..., 4]`` (x, y, vx, vy) SI -> kinematic states ``[..., 4]`` (x, y, psi, v)."""
    return torch.stack([states[..., 0], states[..., 1], torch.atan2(states[..., 3], states[..., 2]),
                        torch.hypot(states[..., 2], states[..., 3])], dim=-1)  # fmt: skip


def recorded_state(states: Tensor) -> Tensor:
    """Kinematic states ``[..., 4]`` (x, y, psi, v) -> recorded-state layout ``[..., 4]`` (x, y, vx, vy)."""
    x, y, psi, v = states.unbind(-1)
    return torch.stack([x, y, v * torch.cos(psi), v * torch.sin(psi)], dim=-1)


@dataclass(frozen=True)
class EgoWindow:
    """The recorded car of B windows (SI): ``start`` ``[B, 4]`` (x, y, psi, v) at the last context frame (x, y
    ego-relative: 0), ``actions`` ``[B, T, 2]`` recorded, ``poses`` ``[B, T, 3]`` recorded after each action,
    ``target_speed`` ``[B]`` [m/s]: the recorded car's mean speed over the future (a window holds no other car's
    state), ``previous_action`` ``[B, 2]``: the action before the first, from the last two context states,
    ``car_size`` ``[B, 2]`` (length, width [m])."""

    start: Tensor
    actions: Tensor
    poses: Tensor
    target_speed: Tensor
    previous_action: Tensor
    car_size: Tensor

    @classmethod
    def from_batch(cls, batch: Mapping[str, Tensor], dataset: WindowDataset, horizon: int) -> EgoWindow:
        """From a ``WindowDataset`` batch in the dataset's units (its ``denormalise_*``)."""
        context = kinematic_state(dataset.denormalise_states(batch["context_states"]).double())  # [B, Tc, 4]
        future = kinematic_state(dataset.denormalise_states(batch["future_states"][:, :horizon]).double())
        actions = dataset.denormalise_actions(batch["actions"][:, :horizon]).double()
        previous = torch.zeros_like(actions[:, 0])
        if context.shape[1] > 1:  # the step into the last context frame, inverted
            previous = kinematics.invert_step(context[:, -2], context[:, -1], DT_S)
        return cls(context[:, -1].float(), actions.float(), future[..., :3].float(), future[..., 3].mean(1).float(),
                   previous.float(), batch["car_size"].float())  # fmt: skip

    def to(self, device: torch.device | str) -> EgoWindow:
        return EgoWindow(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


class ModelWorldBuilder:
    """The ``model`` world: the frozen forward model of ``world`` rolled out with the recorded actions."""

    name = "model"

    def __init__(self, world: ModelWorld) -> None:
        self.world = world

    @property
    def replicas(self) -> int:
        return self.world.config.replicas

    def build(self, batch: Mapping[str, Tensor], ego: EgoWindow, seed: int | None = None) -> WorldFrames:
        """``batch``: windows in the model's units (``to_model_units``); frames ``[B, K, T, 3, H, W]`` on the
        CPU. With ``seed`` the draws (z, dropout masks) are its own: the world is a function of the seed."""
        horizon = ego.actions.shape[1]
        world, device = self.world, self.world.device
        reference = kinematics.rollout(ego.start.double(), ego.actions.double(), DT_S)[..., :3].float()
        args = (batch["context_images"].to(device), batch["context_states"].to(device),
                batch["actions"][:, :horizon].to(device), list(range(1, horizon + 1)))  # fmt: skip
        if "base_images" in batch:  # a base="cv" model's frames to correct (``window_worlds.RenderedWindows``)
            args = (*args, batch["base_images"][:, :horizon].to(device))
        if seed is None:
            frames = world.rollout(*args)
        else:
            saved = world.generator.get_state()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                world.generator.manual_seed(seed)
                frames = world.rollout(*args)
            world.generator.set_state(saved)
        return WorldFrames(frames, reference.cpu(), replicas=self.replicas)


class OracleWorldBuilder:
    """The ``oracle`` world: the windows' recorded future frames (K = 1), centred on the recorded car."""

    name, replicas = "oracle", 1

    def build(self, batch: Mapping[str, Tensor], ego: EgoWindow, seed: int | None = None) -> WorldFrames:
        horizon = ego.actions.shape[1]
        return WorldFrames(batch["future_images"][:, None, :horizon].float().cpu(), ego.poses.cpu(), replicas=1)


class RenderedWorldBuilder:
    """A rendered world (``cv``: the cars of each window's last context frame moved at constant velocity;
    ``traffic``: moved by a traffic model), rendered at the recorded car's poses: the windows' ``world_images``
    (``window_worlds.RenderedWindows(..., key="world_images")``; K = 1)."""

    replicas = 1

    def __init__(self, name: str) -> None:
        self.name = name

    def build(self, batch: Mapping[str, Tensor], ego: EgoWindow, seed: int | None = None) -> WorldFrames:
        if "world_images" not in batch:
            raise ValueError(f"the {self.name} world reads the windows' world_images (window_worlds.RenderedWindows)")
        horizon = ego.actions.shape[1]
        images = batch["world_images"][:, None, :horizon].float().cpu()
        return WorldFrames(images.div_(255.0) if batch["world_images"].dtype == torch.uint8 else images,
                           ego.poses.cpu(), replicas=1)  # fmt: skip


class WorldCache:
    """Built worlds by key (a window index, or any hashable), the ``capacity`` most recently used kept (frames as uint8, ``[K, T, 3, H,
    W]`` per window, with their reference ``[T, 3]`` and extras such as a teacher's plan)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"WorldCache: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.entries: OrderedDict[object, dict[str, Tensor]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for e in self.entries.values() for t in e.values())

    def missing(self, keys: Sequence) -> list[int]:
        """The positions in ``keys`` whose world is not cached (counted as misses; the others as hits)."""
        out = [i for i, k in enumerate(keys) if k not in self.entries]
        self.misses += len(out)
        self.hits += len(keys) - len(out)
        return out

    def store(self, keys: Sequence, frames: WorldFrames, extras: Mapping[str, Tensor] | None = None) -> None:
        """Cache the worlds of ``keys`` (``frames`` ``[len(keys), K, T, ...]``, extras ``[len(keys), ...]``)."""
        images = frames.images.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        for i, key in enumerate(keys):
            entry = {"images": images[i], "reference": frames.reference[i].cpu()}
            entry |= {name: value[i].detach().cpu() for name, value in (extras or {}).items()}
            self.entries[key] = entry
            self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def get(self, keys: Sequence, replicas: int, device: torch.device | str = "cpu") -> tuple[WorldFrames, dict]:
        """The cached worlds of ``keys`` as one ``WorldFrames`` (float in [0, 1] on ``device``) and the extras."""
        entries = [self.entries[k] for k in keys]
        for k in keys:
            self.entries.move_to_end(k)
        stacked = {name: torch.stack([e[name] for e in entries]).to(device) for name in entries[0]}
        images = stacked.pop("images").float().div_(255.0)
        return WorldFrames(images, stacked.pop("reference"), replicas=replicas), stacked


__all__ = ["TRAIN_WORLDS", "EgoWindow", "ModelWorldBuilder", "OracleWorldBuilder", "RenderedWorldBuilder", "WorldCache",
           "kinematic_state", "recorded_state"]  # fmt: skip
