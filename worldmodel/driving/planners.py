"""Planners that optimise the ego's actions through its exact kinematics over fixed world frames (SPEC §9).

The world is predicted once per control step (``worlds``) along a reference (the warm-started plan); the
planners then only move the ego: actions -> ``kinematics.rollout`` -> the objective at the ego's poses
(``objective.evaluate``, costs read by moving the masks). No network runs inside the optimisation loop.

- ``grad``: Adam on the action buffer (in units of the objective's action scales), ``iterations`` steps,
  each plan's gradient norm clipped on its own, actions kept in the environment's bounds; with
  ``grid_starts``, started from the cheapest of the warm start and a grid of constant-action plans (after
  Sobal et al.'s grid planner; off by default: on 40 i80-sim test cars it changed no outcome's rate, 82.5 %
  either way, and cost 30 % more time).
- both start from the cheapest of the warm start and the other starts: ``lane_plans`` (plans that take the
  ego to its lane's centre or a neighbour's at a few accelerations, from the driver's ``lateral_targets``:
  the lane changes neither optimiser finds from a plan that keeps its lane) and, with ``grid_starts``, the
  grid of constant actions.
- ``cem``: cross-entropy method: ``population`` Gaussian candidates around the current mean (the warm start
  among them), the ``elites`` cheapest refit mean and std, ``iterations`` times.

Both aggregate a plan's cost over the K futures of the world (``aggregate``: ``mean``, or ``max``: the worst
case), and add the uncertainty cost at the ego's pose when the world's frames carry its statistics
(``driving.uncertainty``: a model world with dropout replicas and the objective's ``uncertainty`` weight).
Shapes: B episodes, P candidates, K futures, T steps; actions SI ``[B, T, 2]`` outside, scaled inside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor

from worldmodel.driving import kinematics
from worldmodel.driving.envs import ACTION_HIGH, ACTION_LOW
from worldmodel.driving.lane_plans import LanePlanConfig, lane_plans
from worldmodel.driving.objective import ObjectiveConfig, evaluate
from worldmodel.driving.pose_costs import PixelSet, pixel_set
from worldmodel.driving.uncertainty import pose_cost, replica_variance
from worldmodel.driving.worlds import WorldFrames
from worldmodel.traffic.view import ViewSpec

#: Planning methods.
METHODS = ("grad", "cem")


@dataclass(frozen=True)
class PlannerConfig:
    """Settings of the planners (``grad`` and ``cem``; a field says when it is one method's only)."""

    method: str = "grad"
    """``grad`` (gradient MPC) or ``cem`` (cross-entropy method)."""
    horizon: int = 20
    """T: planned steps (2 s at dt = 0.1 s)."""
    iterations: int | None = None
    """Adam steps (grad) or refits (cem) per control step; None: 5 (grad), 3 (cem)."""
    lr: float = 0.3
    """grad: Adam learning rate, in action units (``ObjectiveConfig.accel_scale_mps2``, ...)."""
    grad_clip: float = 1.0
    """grad: each plan's gradient norm is clipped to this."""
    grid_starts: bool = False
    """grad: also score a grid of constant-action plans (``grid_accel_mps2`` x ``grid_curvature_per_m``, one
    batched evaluation) and start from the cheapest of them and the warm start (escapes the local minimum
    of the warm start: braking where accelerating pays, keeping a lane where leaving it pays)."""
    grid_accel_mps2: tuple[float, ...] = (-4.0, -1.5, 0.0, 1.0, 2.0)
    """grad: accelerations of the grid [m/s^2]."""
    grid_curvature_per_m: tuple[float, ...] = (-0.01, -0.004, 0.0, 0.004, 0.01)
    """grad: curvatures of the grid [1/m]."""
    lane_plans: LanePlanConfig | None = field(default_factory=LanePlanConfig)
    """Also start from plans toward the inputs' ``lateral_targets`` (``lane_plans``); None: not."""
    min_lane_change_speed_mps: float = 0.0
    """Lane plans head for a neighbour lane only at or above this speed (an on-ramp's cars always may): in a
    jam, the recorded followers of the next lane, who never react, drive into an ego that cut in (0: always)."""
    population: int = 32
    """cem: candidates per refit."""
    elites: int = 4
    """cem: the cheapest candidates that refit the distribution."""
    init_std: float = 0.5
    """cem: std of the candidates around the warm start, in action units."""
    frame_every: int = 2
    """World frames (and pose costs) at every this-many steps of the horizon (rendering and cost time / n)."""
    lane_rows_m: float | None = 15.0
    """Lane and off-road pixels are read within this distance of the reference along it [m] (``pose_costs``;
    None: every pixel)."""
    aggregate: str = "mean"
    """Over the K futures of the world: ``mean`` or ``max`` (worst case)."""
    slow_horizon: int | None = 30
    """Drivers: below ``slow_speed_mps`` plan over this many steps instead (frames every ``slow_frame_every``):
    in slow traffic the view covers more time than ``horizon``, and a follower closing fast on a slow ego
    is seen sooner; None: ``horizon`` at every speed. (On the 428 i80-sim test cars, oracle world: 86.7 %
    against 84.1 % with 2 s at every speed; 3 s at every speed: 72.7 %, fast cars swerved off the road.)"""
    slow_speed_mps: float = 8.0
    """Speed [m/s] below which ``slow_horizon`` applies."""
    slow_frame_every: int = 3
    """``frame_every`` of the slow horizon."""
    replan_every: int = 1
    """Control steps per plan (drivers): the plan's next actions are executed in between, open loop (the ego's
    kinematics are exact, so its poses are the planned ones; the world is as seen at the last plan)."""
    episodes_per_pass: int | None = 2
    """Plans are scored this many episodes at a time (the pixel-wise costs of one episode's candidates fit in
    a CPU's cache: on 2 cores, one at a time is about twice as fast as the whole batch); None: the whole batch
    at once (for a GPU)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"PlannerConfig: method must be one of {list(METHODS)}, got {self.method!r}")
        if self.aggregate not in ("mean", "max"):
            raise ValueError(f"PlannerConfig: aggregate must be mean or max, got {self.aggregate!r}")
        if self.frame_every < 1 or self.horizon % self.frame_every:
            raise ValueError(f"PlannerConfig: frame_every must divide horizon, got {self.frame_every}, {self.horizon}")
        if self.iterations is None:
            object.__setattr__(self, "iterations", 5 if self.method == "grad" else 3)
        if not 1 <= self.replan_every <= self.horizon:
            raise ValueError(f"PlannerConfig: replan_every must be in 1..horizon, got {self.replan_every}")
        if self.slow_horizon is not None and (
            self.slow_horizon % self.slow_frame_every or not self.replan_every <= self.slow_horizon
        ):
            raise ValueError(f"PlannerConfig: slow_frame_every must divide slow_horizon (>= replan_every), got "
                             f"{self.slow_frame_every}, {self.slow_horizon}")  # fmt: skip
        if self.episodes_per_pass is not None and self.episodes_per_pass < 1:
            raise ValueError(f"PlannerConfig: episodes_per_pass must be >= 1 or None, got {self.episodes_per_pass}")
        if self.horizon < 1 or self.iterations < 1 or self.lr <= 0 or not 1 <= self.elites <= self.population:
            raise ValueError("PlannerConfig: horizon, iterations >= 1, lr > 0, 1 <= elites <= population")

    def to_dict(self) -> dict:
        return asdict(self)

    def slow(self) -> PlannerConfig:
        """The settings below ``slow_speed_mps``: ``slow_horizon`` and ``slow_frame_every`` (self without one)."""
        if self.slow_horizon is None:
            return self
        return replace(self, horizon=self.slow_horizon, frame_every=self.slow_frame_every, slow_horizon=None)


@dataclass(frozen=True)
class PlanInputs:
    """What a plan is scored with: the ego's ``state`` ``[B, 4]`` (x, y, psi, v), the world ``frames``, the
    ``previous_action`` ``[B, 2]`` (SI), the ``target_speed`` ``[B]`` [m/s], the ``car_size`` ``[B, 2]`` [m],
    and optionally ``lateral_targets`` ``[B, M]``: world y [m] of the lane centres the ego may head for."""

    state: Tensor
    frames: WorldFrames
    previous_action: Tensor
    target_speed: Tensor
    car_size: Tensor
    lateral_targets: Tensor | None = None

    def select(self, episodes: slice) -> PlanInputs:
        """The inputs of some of the episodes."""
        frames = replace(self.frames, images=self.frames.images[episodes], reference=self.frames.reference[episodes])
        lateral = None if self.lateral_targets is None else self.lateral_targets[episodes]
        return PlanInputs(self.state[episodes], frames, self.previous_action[episodes], self.target_speed[episodes],
                          self.car_size[episodes], lateral)  # fmt: skip


class Planner:
    """``plan(inputs, warm)`` -> (the plan ``[B, T, 2]`` SI, its cost ``[B]``, its named terms ``[B]``)."""

    def __init__(self, config: PlannerConfig, objective: ObjectiveConfig, dt: float, spec: ViewSpec | None = None,
                 seed: int = 0):  # fmt: skip
        self.config, self.objective, self.dt, self.spec = config, objective, dt, spec or ViewSpec()
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def frame_steps(self) -> list[int]:
        """Steps of the horizon (1 = the next) that the world gives frames of."""
        every = self.config.frame_every
        return list(range(every, self.config.horizon + 1, every))

    def reference(self, state: Tensor, plan: Tensor) -> Tensor:
        """Poses ``[B, F, 3]`` at ``frame_steps`` of the ego driven by ``plan`` ``[B, T, 2]`` from ``state``
        ``[B, 4]``."""
        every = self.config.frame_every
        return kinematics.rollout(state, plan, self.dt)[..., every - 1 :: every, :3]

    def pixels(self, inputs: PlanInputs) -> PixelSet:
        """The world frames' pixels that the costs read, ``[B, 1, K, F, N]`` (computed once per plan)."""
        return pixel_set(
            inputs.frames.images, self.spec, self.config.lane_rows_m, self.objective.road_ahead_m
        ).expand_leading(1)

    def cost(
        self, inputs: PlanInputs, actions: Tensor, pixels: PixelSet | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Cost ``[B, P]`` of candidate plans ``[B, P, T, 2]`` (SI), aggregated over the K futures, and the
        named terms ``[B, P]`` (mean over the futures). ``pixels``: ``self.pixels(inputs)``, if already made.
        Scored ``episodes_per_pass`` episodes at a time."""
        pixels = self.pixels(inputs) if pixels is None else pixels
        b, step = actions.shape[0], self.config.episodes_per_pass or actions.shape[0]
        if step >= b or torch.is_grad_enabled():  # the gradient's passes: per-op overheads x B outweigh the cache
            return self._cost(inputs, actions, pixels)
        parts = [self._cost(inputs.select(slice(i, i + step)), actions[i : i + step], pixels.select(slice(i, i + step)))
                 for i in range(0, b, step)]  # fmt: skip
        return torch.cat([cost for cost, _ in parts]), {
            name: torch.cat([terms[name] for _, terms in parts]) for name in parts[0][1]
        }

    def _cost(self, inputs: PlanInputs, actions: Tensor, pixels: PixelSet) -> tuple[Tensor, dict[str, Tensor]]:
        b, p = actions.shape[:2]
        states = kinematics.rollout(inputs.state[:, None].expand(b, p, 4), actions, self.dt)  # [B, P, T, 4]
        frames = inputs.frames
        terms = evaluate(self.objective, pixels, frames.reference[:, None, None], states[:, :, None],
                         actions[:, :, None], inputs.previous_action[:, None, None], inputs.target_speed[:, None, None],
                         inputs.car_size[:, None, None], self.config.frame_every)  # fmt: skip
        total = terms["total"]
        cost = total.amax(-1) if self.config.aggregate == "max" else total.mean(-1)
        out = {name: value.detach().mean(-1) for name, value in terms.items()}
        if frames.uncertainty is not None and self.objective.uncertainty > 0:
            variance = replica_variance(pose_cost(terms), frames.replicas)  # [B, P]
            uncertainty = self.objective.uncertainty * frames.uncertainty.penalty(
                variance, self.objective.uncertainty_hinge
            )
            cost = cost + uncertainty
            out["uncertainty"] = uncertainty.detach()
            out["total"] = out["total"] + out["uncertainty"]
        return cost, out

    def plan(self, inputs: PlanInputs, warm: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        return (self._gradient if self.config.method == "grad" else self._cem)(inputs, warm)

    def _bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.objective.action_scale(like)
        low, high = (
            torch.as_tensor(v, dtype=like.dtype, device=like.device) / scale for v in (ACTION_LOW, ACTION_HIGH)
        )
        return low, high

    def _gradient(self, inputs: PlanInputs, warm: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        c = self.config
        scale = self.objective.action_scale(warm)
        low, high = self._bounds(warm)
        pixels = self.pixels(inputs)
        start = self._best_start(inputs, warm, pixels)
        units = (start / scale).clone().requires_grad_(True)  # [B, T, 2]
        optimizer = torch.optim.Adam([units], lr=c.lr)
        for _ in range(c.iterations):
            cost, _ = self.cost(inputs, (units * scale)[:, None], pixels)
            optimizer.zero_grad(set_to_none=True)
            cost.sum().backward()
            with torch.no_grad():
                norm = units.grad.flatten(1).norm(dim=1).clamp(min=1e-12)  # [B]: each plan clipped on its own
                units.grad.mul_((c.grad_clip / norm).clamp(max=1.0)[:, None, None])
            optimizer.step()
            with torch.no_grad():
                units.copy_(torch.maximum(torch.minimum(units, high), low))
        with torch.no_grad():
            plan = units.detach() * scale
            cost, terms = self.cost(inputs, plan[:, None], pixels)
        return plan, cost[:, 0], {k: v[:, 0] for k, v in terms.items()}

    @torch.no_grad()
    def _best_start(self, inputs: PlanInputs, warm: Tensor, pixels: PixelSet) -> Tensor:
        """The cheapest of the warm start, the lane plans and the grid of constant actions: ``[B, T, 2]`` SI
        (the warm start itself when there are no other starts)."""
        c = self.config
        b, t = warm.shape[:2]
        starts = [warm[:, None]]
        if c.lane_plans is not None and inputs.lateral_targets is not None:
            starts.append(lane_plans(inputs.state, inputs.lateral_targets, t, self.dt, c.lane_plans))
        if c.grid_starts:
            accel, curvature = (torch.tensor(v, dtype=warm.dtype) for v in (c.grid_accel_mps2,
                                                                            c.grid_curvature_per_m))  # fmt: skip
            grid = torch.stack(torch.meshgrid(accel, curvature, indexing="ij"), -1).reshape(-1, 1, 2)  # [G, 1, 2]
            starts.append(grid.expand(-1, t, -1)[None].expand(b, -1, -1, -1))
        if len(starts) == 1:
            return warm
        low, high = self._bounds(warm)
        scale = self.objective.action_scale(warm)
        candidates = torch.maximum(torch.minimum(torch.cat(starts, dim=1), high * scale), low * scale)
        cost, _ = self.cost(inputs, candidates, pixels)  # [B, starts]
        return candidates[torch.arange(b), cost.argmin(1)]

    @torch.no_grad()
    def _cem(self, inputs: PlanInputs, warm: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        c = self.config
        scale = self.objective.action_scale(warm)
        low, high = self._bounds(warm)
        pixels = self.pixels(inputs)
        mean = self._best_start(inputs, warm, pixels) / scale  # [B, T, 2]
        std = torch.full_like(mean, c.init_std)
        b = mean.shape[0]
        for _ in range(c.iterations):
            noise = torch.randn((b, c.population, *mean.shape[1:]), generator=self.generator).to(mean)
            candidates = torch.maximum(torch.minimum(mean[:, None] + std[:, None] * noise, high), low)
            candidates[:, 0] = mean  # the current mean always competes
            cost, _ = self.cost(inputs, candidates * scale, pixels)  # [B, P]
            elite = cost.topk(c.elites, dim=1, largest=False).indices  # [B, E]
            chosen = torch.gather(candidates, 1, elite[:, :, None, None].expand(-1, -1, *mean.shape[1:]))
            mean = chosen.mean(1)
            std = chosen.std(1, unbiased=False).clamp(min=1e-3) if c.elites > 1 else std
        plan = mean * scale
        cost, terms = self.cost(inputs, plan[:, None], pixels)
        return plan, cost[:, 0], {k: v[:, 0] for k, v in terms.items()}


def shift(plan: Tensor) -> Tensor:
    """The warm start of the next control step: ``plan`` ``[B, T, 2]`` shifted by one, the last action kept."""
    return torch.cat([plan[:, 1:], plan[:, -1:]], dim=1)


__all__ = ["METHODS", "PlanInputs", "Planner", "PlannerConfig", "shift"]
