"""Drivers that use learned models: a trained policy checkpoint, or a planner through a forward model.

They follow the ``worldmodel.evaluation.drivers.Driver`` protocol (``reset(env, obs, info)``,
``act(obs, info) -> SI action [2]``, ``diagnostics()``) and are built by ``make_model_driver(spec, ...)``:

- a policy checkpoint path (``train policy``): the policy acts on its window of the last Tc real
  observations (views + ego mask, states with positions relative to the current frame); with ``fm``, its
  ``diagnostics()`` add the model's epistemic uncertainty of the policy's next ``uncertainty_horizon`` steps
  (normalised, hinged, as in training; for videos, not for evaluation: it costs K rollouts per step);
- ``plan:grad`` / ``plan:cem``: ``worldmodel.planning`` planners through the forward model ``fm``; options
  are the planner config's fields (``horizon=15``, ``samples=4``, ...) plus ``replan_every`` (steps executed
  from one plan before planning again) and ``stats`` (a policy checkpoint whose uncertainty statistics
  to use; without it the planner runs with the uncertainty weight at 0).

The ``ObservationWindow`` turns environment observations into the models' units.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from pathlib import Path

import numpy as np
import torch

from worldmodel.costs import UncertaintyStats, uncertainty_cost
from worldmodel.imagination import Context, Imagination
from worldmodel.nn.forward_model import ForwardModel
from worldmodel.nn.policy import Policy
from worldmodel.planning import PLANNERS
from worldmodel.training.checkpoint import load_checkpoint

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


class PolicyDriver:
    """A trained policy driving from its checkpoint (deterministic: the mean action)."""

    def __init__(self, checkpoint: str | Path, fm: str | None = None, device: str = "cpu", seed: int = 0,
                 uncertainty_horizon: int = 10, replicas: int = 10):  # fmt: skip
        self.device = torch.device(device)
        ckpt = load_checkpoint(checkpoint)
        self.policy = Policy.from_checkpoint(ckpt).to(self.device).eval()
        self.name = f"policy:{Path(checkpoint).name}"
        self.window = ObservationWindow(self.policy.config.context_frames, self.policy, self.device)
        self.imagination = None
        stats = ckpt.get("uncertainty_stats")
        if fm is not None and stats is not None:
            model = ForwardModel.from_checkpoint(load_checkpoint(fm)).to(self.device)
            self.imagination = Imagination(model, stats=UncertaintyStats.from_dict(stats))
            self.window = ObservationWindow(
                max(self.policy.config.context_frames, model.config.backbone.context_frames), model, self.device
            )
        self.horizon, self.replicas = uncertainty_horizon, replicas
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self._diagnostics: dict[str, float] = {}

    @torch.no_grad()
    def reset(self, env, obs: dict, info: dict) -> None:
        self.generator.manual_seed(_episode_seed())
        self.window.reset(info["context"], _car_size(env))
        ctx = self.window.context()
        self.cache = self.policy.init_cache(ctx.images, ctx.states, ctx.ego_mask)
        self.steps = 0

    @torch.no_grad()
    def act(self, obs: dict, info: dict) -> np.ndarray:
        if self.steps > 0:
            self.window.push(obs)
        states = self.window.normalised_states()[:, -self.policy.config.context_frames :]  # re-anchored each step
        if self.steps > 0:
            self.cache = self.policy.push(self.cache, self.window.latest_image(), states[:, -1])
        self.cache = self.cache._replace(states=states)
        action = self.policy(self.cache)["action"]
        self.steps += 1
        if self.imagination is not None:
            self._diagnostics = {"uncertainty": self._uncertainty()}
        return self.policy.unnormalise_actions(action)[0].cpu().numpy().astype(np.float64)

    def _uncertainty(self) -> float:
        im = self.imagination
        context = self.window.context()
        z = im.sample_z(1, self.horizon, self.generator)
        rollout = im.unroll(context, self.horizon, policy=self.policy, z=z)
        variances = im.variances(context, rollout["actions"], z, self.replicas)
        return float(uncertainty_cost(variances, im.stats, im.cost_config.uncertainty_hinge)["total"])

    def diagnostics(self) -> dict[str, float]:
        return dict(self._diagnostics)


class PlannerDriver:
    """A planner (``GradientMPC`` or ``CEM``) through a forward model, replanning every ``replan_every`` steps."""

    def __init__(self, kind: str, fm: str, device: str = "cpu", seed: int = 0, replan_every: int = 1,
                 stats: str | None = None, **planner_options):  # fmt: skip
        if kind not in PLANNERS:
            raise ValueError(f"unknown planner {kind!r}: expected one of {sorted(PLANNERS)}")
        self.device = torch.device(device)
        model = ForwardModel.from_checkpoint(load_checkpoint(fm)).to(self.device)
        uncertainty = None
        if stats is not None:
            uncertainty = UncertaintyStats.from_dict(load_checkpoint(stats)["uncertainty_stats"])
        planner_cls, config_cls = PLANNERS[kind]
        options = _typed_options(config_cls, planner_options)
        if uncertainty is None:
            options["uncertainty_weight"] = 0.0
        self.imagination = Imagination(model, stats=uncertainty)
        self.planner = planner_cls(self.imagination, config_cls(**options), seed=seed)
        self.replan_every = max(1, int(replan_every))
        self.window = ObservationWindow(model.config.backbone.context_frames, model, self.device)
        self.name = f"plan:{kind}"

    def reset(self, env, obs: dict, info: dict) -> None:
        self.planner.generator.manual_seed(_episode_seed())
        self.window.reset(info["context"], _car_size(env))
        self.planner.reset()
        self.steps, self.plan = 0, None

    def act(self, obs: dict, info: dict) -> np.ndarray:
        if self.steps > 0:
            self.window.push(obs)
        k = self.steps % self.replan_every
        if k == 0 or self.plan is None:
            self.plan = self.planner.plan(self.window.context())
        action = self.plan[:, min(k, self.plan.shape[1] - 1)]
        self.steps += 1
        with torch.no_grad():
            return self.imagination.model.unnormalise_actions(action)[0].cpu().numpy().astype(np.float64)

    def diagnostics(self) -> dict[str, float]:
        cost = self.planner.last_cost
        return {} if cost is None else {"planned_cost": float(cost[0])}


def _typed_options(config_cls, options: dict) -> dict:
    """Options (strings from the command line, or values) converted to the types of ``config_cls``'s fields."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out = {}
    for name, value in options.items():
        if name not in fields:
            raise ValueError(f"unknown option {name!r} for {config_cls.__name__}: expected one of {sorted(fields)}")
        if isinstance(value, str):
            kind = fields[name].type
            value = None if value.lower() == "none" else (int(value) if "int" in str(kind) else float(value))
        out[name] = value
    return out


def make_model_driver(spec: str, *, fm: str | None = None, device: str = "cpu", seed: int = 0, **options):
    """A driver for ``spec``: a policy checkpoint path, ``plan:grad`` or ``plan:cem`` (these need ``fm``)."""
    if spec.startswith("plan:"):
        if fm is None:
            raise ValueError(f"driver {spec} needs a forward model: pass --fm CHECKPOINT")
        return PlannerDriver(spec.split(":", 1)[1], fm, device=device, seed=seed, **options)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: no such policy checkpoint (drivers: a checkpoint, no-action, expert, bot, "
                                "plan:grad, plan:cem)")  # fmt: skip
    return PolicyDriver(path, fm=fm, device=device, seed=seed, **options)


__all__ = ["ObservationWindow", "PlannerDriver", "PolicyDriver", "make_model_driver"]
