"""Drivers that use learned models: a trained policy checkpoint, or a planner through a forward model.

They follow the ``worldmodel.driving.drivers.Driver`` protocol (``reset(env, obs, info)``,
``act(obs, info) -> SI action [2]``, ``diagnostics()``) and are built by ``make_model_driver(spec, ...)``:

- a policy checkpoint path (``train policy``): the policy acts on its window of the last Tc real
  observations (views + ego mask, states with positions relative to the current frame); with ``fm``, its
  ``diagnostics()`` add the model's epistemic uncertainty of the policy's next ``uncertainty_horizon`` steps
  (normalised, hinged, as in training, on the model's view and cost geometry; for videos, not for
  evaluation: it costs K rollouts per step) and its ``intent`` (``driver_protocol.Intent``): the imagined
  rollout behind that number, the policy acting on the model's predictions, its actions moving the car by the
  exact kinematics from its true state (the path) and the model's frames (K = 1) taken as centred on it;
- ``plan:grad`` / ``plan:cem``: ``worldmodel.driving.planner_driver`` (planners over a world provider:
  ``world=oracle|cv|model``, the model world with the forward model ``fm``).

The ``ObservationWindow`` turns environment observations into the models' units.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import numpy as np
import torch

from worldmodel.costs import CostConfig, UncertaintyStats, uncertainty_cost
from worldmodel.driving import kinematics
from worldmodel.driving.driver_protocol import Intent
from worldmodel.driving.drivers import FirstSlot
from worldmodel.driving.envs import ACTION_HIGH, ACTION_LOW
from worldmodel.driving.imagination import Context, Imagination
from worldmodel.nn.checkpointing import load_checkpoint
from worldmodel.nn.forward_model import ForwardModel
from worldmodel.nn.policy import Policy, PolicyCache

log = logging.getLogger(__name__)


class ObservationWindow:
    """The last ``frames`` observations of the controlled car, in model units.

    ``normaliser``: a module with ``state_mean`` / ``state_std`` buffers (a ``ForwardModel`` or ``Policy``).
    """

    def __init__(self, frames: int, normaliser: torch.nn.Module, device: torch.device):
        self.frames, self.normaliser, self.device = frames, normaliser, device
        self.images: deque[np.ndarray] = deque(maxlen=frames)
        self.states: deque[np.ndarray] = deque(maxlen=frames)

    def reset(self, context: list[dict], car_size: tuple[float, float]) -> None:
        if len(context) < self.frames:
            raise ValueError(f"ObservationWindow: needs {self.frames} context observations, got {len(context)}")
        self.images.clear()
        self.states.clear()
        for obs in context[-self.frames :]:
            self.push(obs)
        self.ego_mask = torch.from_numpy(context[-1]["image"][3]).float().div_(255.0)[None].to(self.device)
        self.car_size = torch.tensor([car_size], dtype=torch.float32, device=self.device)

    def push(self, obs: dict) -> None:
        self.images.append(obs["image"][:3])
        self.states.append(np.asarray(obs["state"], dtype=np.float64))

    def latest_image(self) -> torch.Tensor:
        """[1, 3, H, W] in [0, 1]: the newest view."""
        return torch.from_numpy(self.images[-1]).float().div_(255.0)[None].to(self.device)

    def normalised_states(self) -> torch.Tensor:
        """[1, Tc, S]: positions relative to the newest frame, normalised."""
        states = np.stack(self.states)
        states[:, :2] -= states[-1, :2]
        si = torch.from_numpy(states).float()[None].to(self.device)
        return (si - self.normaliser.state_mean) / self.normaliser.state_std

    def context(self) -> Context:
        images = torch.from_numpy(np.stack(self.images)).float().div_(255.0)[None].to(self.device)
        return Context(images, self.normalised_states(), self.car_size, self.ego_mask)


def _episode_seed() -> int:
    """A seed drawn from torch's global generator, which the harness seeds per episode (so that results do
    not depend on how episodes are spread over workers)."""
    return int(torch.randint(0, 2**62, (1,)))


def _car_size(env) -> tuple[float, float]:
    return float(env.sim.length), float(env.sim.width)


class _Slot:
    """One episode driven by a ``PolicyDriver``: its observation window, policy cache and generator."""

    def __init__(self, window: ObservationWindow, generator: torch.Generator) -> None:
        self.window, self.generator = window, generator
        self.cache = None
        self.steps = 0
        self.diagnostics: dict[str, float] = {}
        self.sim = None  # the episode's simulation (the car's true state)
        self.imagined: tuple | None = None  # (state [1, 4], SI actions [1, T, 2], images [1, T, 3, H, W])


class PolicyDriver(FirstSlot):
    """A trained policy driving from its checkpoint (deterministic: the mean action).

    A ``LockstepDriver`` with any number of slots: ``act_slots`` encodes the newest frame of every slot and
    runs the policy once for all of them (a batch); ``reset`` / ``act`` / ``diagnostics`` drive slot 0.
    """

    max_slots = None

    def __init__(self, checkpoint: str | Path, fm: str | None = None, device: str = "cpu", seed: int = 0,
                 uncertainty_horizon: int = 10, replicas: int = 10, imagine: bool = False):  # fmt: skip
        self.device = torch.device(device)
        ckpt = load_checkpoint(checkpoint, "policy")
        self.policy = Policy.from_checkpoint(ckpt).to(self.device).eval()
        self.name = f"policy:{Path(checkpoint).name}"
        self.imagination = None
        stats = ckpt.get("uncertainty_stats")
        # ``imagine``: the model's rollout (the intent) even for a policy without uncertainty statistics (videos)
        if fm is not None and (stats is not None or imagine):
            model = ForwardModel.from_checkpoint(load_checkpoint(fm, "forward_model")).to(self.device)
            # the policy's training weights (hinge) on the model's view and cost geometry
            trained = (ckpt.get("train_config") or {}).get("costs")
            costs = model.config.cost_config
            if trained is not None:
                costs = CostConfig.from_dict(trained).with_geometry(costs)
            stats = None if stats is None else UncertaintyStats.from_dict(stats)
            self.imagination = Imagination(model, costs, stats=stats)
        # the environments render the model's view (a policy without a model: PPUU's, the runner's default)
        self.view = None if self.imagination is None else self.imagination.model.config.view_spec
        self.horizon, self.replicas, self.seed = uncertainty_horizon, replicas, seed
        self._slots: dict[int, _Slot] = {}

    def _new_slot(self) -> _Slot:
        frames, normaliser = self.policy.config.context_frames, self.policy
        if self.imagination is not None:
            model = self.imagination.model
            frames, normaliser = max(frames, model.config.backbone.context_frames), model
        generator = torch.Generator(self.device).manual_seed(self.seed)
        return _Slot(ObservationWindow(frames, normaliser, self.device), generator)

    # ------------------------------------------------------------------ lockstep
    @torch.no_grad()
    def reset_slot(self, slot: int, env, obs: dict, info: dict) -> None:
        if slot not in self._slots:
            self._slots[slot] = self._new_slot()
        state = self._slots[slot]
        state.generator.manual_seed(_episode_seed())
        state.window.reset(info["context"], _car_size(env))
        state.cache = None  # the context is encoded at the slot's first act, with the other new slots'
        state.steps = 0
        state.sim, state.imagined = env.sim, None

    @torch.no_grad()
    def act_slots(self, slots: list[int], observations: list[dict], infos: list[dict]) -> np.ndarray:
        tc = self.policy.config.context_frames
        chosen = [self._slots[s] for s in slots]
        self._encode_contexts([state for state in chosen if state.cache is None])
        moved = [state for state in chosen if state.steps > 0]
        for state, obs in zip(chosen, observations, strict=True):
            if state.steps > 0:
                state.window.push(obs)
        states = [state.window.normalised_states()[:, -tc:] for state in chosen]  # re-anchored each step
        if moved:  # the newest frame of every slot that moved, encoded in one batch
            images = torch.cat([state.window.latest_image() for state in moved])
            masks = torch.cat([state.cache.ego_mask for state in moved])
            features = self.policy.encode_frame(images, masks).split(1)
            for state, feature in zip(moved, features, strict=True):
                state.cache = state.cache._replace(features=(*state.cache.features[1:], feature))
        for state, window_states in zip(chosen, states, strict=True):
            state.cache = state.cache._replace(states=window_states)
            state.steps += 1
        actions = self.policy([state.cache for state in chosen])["action"]  # one batch after per-window mixing
        if self.imagination is not None:
            for state in chosen:
                uncertainty = self._imagine(state)
                state.diagnostics = {} if uncertainty is None else {"uncertainty": uncertainty}
        return self.policy.unnormalise_actions(actions).cpu().numpy().astype(np.float64)

    def slot_diagnostics(self, slot: int) -> dict[str, float]:
        return dict(self._slots[slot].diagnostics)

    def slot_intent(self, slot: int) -> Intent | None:
        """The rollout imagined at the slot's last act (with a model only; else None): T =
        ``uncertainty_horizon`` poses, frames ``[1, T, 3, H, W]`` at steps 1..T, centred on the path."""
        state = self._slots[slot]
        if state.imagined is None:
            return None
        start, actions, images = state.imagined
        poses = kinematics.rollout(start, actions, float(state.sim.dt))[0, :, :3].numpy()  # [T, 3]
        view = self.imagination.view
        return Intent(poses, images.cpu().numpy(), tuple(range(1, len(poses) + 1)), poses, view, "model")

    def _encode_contexts(self, fresh: list[_Slot]) -> None:
        """The policy caches of new episodes: their context frames encoded in one batch."""
        if not fresh:
            return
        contexts = [state.window.context() for state in fresh]
        images, states, masks = (
            torch.cat([getattr(c, name) for c in contexts]) for name in ("images", "states", "ego_mask")
        )
        cache = self.policy.init_cache(images, states, masks)  # uses the last Tc frames
        for i, state in enumerate(fresh):
            state.cache = PolicyCache(tuple(f[i : i + 1] for f in cache.features), cache.states[i : i + 1],
                                      cache.ego_mask[i : i + 1])  # fmt: skip

    def _imagine(self, state: _Slot) -> float | None:
        """The policy's next ``horizon`` steps imagined from the slot's window: kept (``state.imagined``, the
        slot's intent), and their epistemic uncertainty returned (None without uncertainty statistics)."""
        im = self.imagination
        context = state.window.context()
        z = im.sample_z(1, self.horizon, state.generator)
        rollout = im.unroll(context, self.horizon, policy=self.policy, z=z)
        sim = state.sim
        start = torch.tensor([[sim.x, sim.y, sim.psi, sim.v]], dtype=torch.float64)
        actions = self.policy.unnormalise_actions(rollout["actions"]).double().cpu()
        actions = torch.clamp(actions, torch.from_numpy(ACTION_LOW).double(), torch.from_numpy(ACTION_HIGH).double())
        state.imagined = (start, actions, rollout["images"].float())  # images [1 (K), T, 3, H, W]
        if im.stats is None:
            return None
        variances = im.variances(context, rollout["actions"], z, self.replicas)
        return float(uncertainty_cost(variances, im.stats, im.cost_config.uncertainty_hinge)["total"])


def make_model_driver(spec: str, *, fm: str | None = None, device: str = "cpu", seed: int = 0, **options):
    """A driver for ``spec``: a policy checkpoint path (a view policy or a scene policy, by the checkpoint's
    kind), ``plan:grad`` or ``plan:cem`` (options: ``world``, ``objective`` and the fields of the planner,
    objective and model-world configs)."""
    if spec.startswith("plan:"):
        from worldmodel.driving.planner_driver import make_planner_driver

        return make_planner_driver(spec.split(":", 1)[1], fm=fm, device=device, seed=seed, **options)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: no such policy checkpoint (drivers: a checkpoint, no-action, expert, bot, "
                                "plan:grad, plan:cem)")  # fmt: skip
    if load_checkpoint(path).get("kind") == "scene-policy":
        from worldmodel.driving.scene_driver import ScenePolicyDriver

        return ScenePolicyDriver(path, device=device, seed=seed, **options)
    return PolicyDriver(path, fm=fm, device=device, seed=seed, **options)


__all__ = ["ObservationWindow", "PolicyDriver", "make_model_driver"]
