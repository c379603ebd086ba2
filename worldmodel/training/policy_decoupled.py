"""Policy training over decoupled imagined worlds (SPEC §9, issue 14): ``mpur`` and ``distill``.

The world of a training window is imagined once, along the recorded car's own future (``driving.
imagined_worlds``: K futures ``[B, K, T, 3, H, W]`` centred on reference poses ``[B, T, 3]``), and cached. Then:

1. ``drive``: the policy acts on its window of Tc views + states (the recorded context first); its action
   (normalised -> SI) moves the ego by the exact kinematics; the next view is the world's frame resampled at the
   ego's pose (``pose_views.view_at_pose``, bilinear, differentiable in the pose), of one of the K futures
   (``observe``, drawn per window and update); T steps. No forward model runs.
2. ``mpur_terms``: the driving objective (``objective.evaluate``, the ``drive`` preset by default) at the
   ego's poses in each of the K futures, averaged over them, plus the uncertainty cost: the variance across
   dropout replicas of the pose cost at the ego's poses, normalised by statistics calibrated on training
   windows (``uncertainty.calibrate``), hinged and weighted (``objective.uncertainty``).
3. ``distill_terms``: the gradient planner (``planners.Planner``, grad), run once per window over the same
   world from the recorded actions, is the teacher; the policy, driven along the teacher's plan (views at the
   teacher's poses), regresses its actions (MSE in normalised units).

``DecoupledImagination`` owns the world builder, the cache, the objective, the statistics and the teacher.
Each window's world (and teacher plan) is a function of (seed, window index): a resumed run rebuilds the same.
Shapes: B windows, K futures (z samples x dropout replicas, replicas consecutive), T steps, Tc context.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.utils.data import Dataset

from worldmodel.data.hdf5 import DT_S
from worldmodel.data.windows import WindowDataset
from worldmodel.driving import kinematics
from worldmodel.driving.imagination import Context
from worldmodel.driving.imagined_worlds import (
    TRAIN_WORLDS,
    EgoWindow,
    ModelWorldBuilder,
    OracleWorldBuilder,
    RenderedWorldBuilder,
    WorldCache,
    recorded_state,
)
from worldmodel.driving.model_world import ModelWorld, ModelWorldConfig
from worldmodel.driving.objective import ObjectiveConfig, evaluate
from worldmodel.driving.planners import PlanInputs, Planner, PlannerConfig
from worldmodel.driving.pose_costs import pixel_set
from worldmodel.driving.pose_views import view_at_pose
from worldmodel.driving.uncertainty import PoseUncertaintyStats, calibrate, pose_cost, replica_variance
from worldmodel.driving.worlds import WorldFrames
from worldmodel.nn.model_windows import to_model_units
from worldmodel.nn.policy import Policy, PolicyCache
from worldmodel.traffic.view import ViewSpec

log = logging.getLogger(__name__)

#: Lane and off-road pixels read within this distance of the reference along it [m]: the barrier's 30 m plus
#: half a long vehicle (``pose_costs``: exact while the ego stays within it).
LANE_ROWS_M = 36.0


@dataclass(frozen=True)
class Drive:
    """A policy's imagined drive: ``states`` ``[B, T, 4]`` (x, y, psi, v) after each action, ``actions``
    ``[B, T, 2]`` SI and ``normalised`` ``[B, T, 2]`` (the policy's outputs)."""

    states: Tensor
    actions: Tensor
    normalised: Tensor


def drive(policy: Policy, context: Context, world: WorldFrames, ego: EgoWindow, observe: Tensor,
          spec: ViewSpec, follow: Tensor | None = None) -> Drive:  # fmt: skip
    """The policy driven T steps in ``world`` from ``ego.start``, observing future ``observe`` ``[B]`` (index
    into K) at its own poses; with ``follow`` ``[B, T, 2]`` (SI) the ego is moved by those actions instead of the
    policy's (teacher forcing: the policy still acts at each step, on the views along them)."""
    frames = observed_frames(world, observe)
    cache = policy.init_cache(context.images, context.states, context.ego_mask)
    return drive_from(policy, cache, ego.start, frames, world.reference, spec, follow)[0]


def observed_frames(world: WorldFrames, observe: Tensor) -> Tensor:
    """The future ``observe`` ``[B]`` of each window: ``[B, T, 3, H, W]``."""
    return world.images[torch.arange(world.images.shape[0], device=observe.device), observe]


def drive_from(policy: Policy, cache: PolicyCache, state: Tensor, frames: Tensor, reference: Tensor, spec: ViewSpec,
               follow: Tensor | None = None, push_last: bool = False) -> tuple[Drive, PolicyCache]:  # fmt: skip
    """``drive`` from a policy window ``cache`` and ego ``state`` ``[B, 4]`` through ``frames`` ``[B, T, 3, H, W]``
    centred on ``reference`` ``[B, T, 3]``; returns the drive and the window after it (with the last step's
    view pushed when ``push_last``, so that another drive can continue it)."""
    horizon = reference.shape[1]
    states, actions, normalised = [], [], []
    for t in range(horizon):
        action = policy(cache)["action"]  # [B, 2] normalised
        si = policy.unnormalise_actions(action) if follow is None else follow[:, t]
        state = kinematics.step(state, si, DT_S)
        if t < horizon - 1 or push_last:
            relative = kinematics.relative_pose(state[:, :3], reference[:, t])
            view = view_at_pose(frames[:, t], relative, spec)  # [B, 3, H, W]
            cache = policy.push(cache, view, policy.normalise_states(recorded_state(state)))
        states.append(state)
        actions.append(si)
        normalised.append(action)
    return Drive(torch.stack(states, 1), torch.stack(actions, 1), torch.stack(normalised, 1)), cache


def mpur_terms(objective: ObjectiveConfig, world: WorldFrames, ego: EgoWindow, driven: Drive, spec: ViewSpec,
               stats: PoseUncertaintyStats | None = None, pixels=None,
               per_window: bool = False) -> dict[str, Tensor]:  # fmt: skip
    """The objective's named terms (means over windows and futures), ``uncertainty`` and ``loss`` = ``total`` +
    ``objective.uncertainty`` x the uncertainty cost (when ``stats`` and the world has replicas; else 0); with
    ``per_window`` also ``window_total`` ``[B]``, each window's total (mean over its futures)."""
    pixels = pixel_set(world.images, spec, LANE_ROWS_M, objective.road_ahead_m) if pixels is None else pixels
    terms = evaluate(objective, pixels, world.reference[:, None], driven.states[:, None], driven.actions[:, None],
                     ego.previous_action[:, None], ego.target_speed[:, None], ego.car_size[:, None], 1)  # fmt: skip
    out = {name: value.mean() for name, value in terms.items()}  # [B, K] -> means
    if per_window:
        out["window_total"] = terms["total"].mean(1)
    out["uncertainty"] = out["total"].new_zeros(())
    if stats is not None and objective.uncertainty > 0 and world.replicas > 1:
        variance = replica_variance(pose_cost(terms), world.replicas)  # [B]
        out["uncertainty"] = stats.penalty(variance, objective.uncertainty_hinge).mean()
    out["loss"] = out["total"] + objective.uncertainty * out["uncertainty"]
    with torch.no_grad():
        out["speed_mps"] = driven.states[..., 3].mean()
        out["action_norm"] = driven.normalised.norm(dim=-1).mean()
    return out


def distill_terms(policy: Policy, context: Context, world: WorldFrames, ego: EgoWindow, observe: Tensor,
                  spec: ViewSpec, plan: Tensor | None = None, teach=None, own_steps: int = 0) -> dict[str, Tensor]:  # fmt: skip
    """The policy's regression of the teacher's plan (SI) along it: ``action_mse`` = ``loss`` (normalised units),
    and ``accel_mae`` [m/s^2] of the first regressed action.

    ``own_steps`` = 0: the teacher's ``plan`` ``[B, T, 2]`` from the window's start (cached per window). ``own_steps``
    = m > 0 (DAgger in imagination): the policy first drives m steps itself (no gradient), then ``teach(world, ego,
    state, previous_action, step)`` (``DecoupledImagination.teach``) plans from where it got to over the remaining
    T - m steps, and the policy regresses that plan from the states it reached itself: the teacher's corrections
    of the policy's own drift.

    Targets are clamped to what the policy can output (``Policy.action_bounds``): beyond them the straight-through
    clamp would push the raw output, and the weights, without end (with the 3-sigma clamp on i80-sim, sigma
    0.75 m/s^2, a teacher braking at -6 m/s^2 is 8 sigma)."""
    frames = observed_frames(world, observe)
    cache = policy.init_cache(context.images, context.states, context.ego_mask)
    state, reference = ego.start, world.reference
    if own_steps > 0:
        with torch.no_grad():
            own, cache = drive_from(policy, cache, state, frames[:, :own_steps], reference[:, :own_steps], spec,
                                    push_last=True)  # fmt: skip
        state, previous = own.states[:, -1], own.actions[:, -1]
        plan = teach(world, ego, state, previous, own_steps)
        frames, reference = frames[:, own_steps:], reference[:, own_steps:]
    driven, _ = drive_from(policy, cache, state, frames, reference, spec, follow=plan)
    low, high = policy.action_bounds()
    target = policy.normalise_actions(plan).clamp(low, high)
    mse = (driven.normalised - target).pow(2).mean()
    with torch.no_grad():
        first = (policy.unnormalise_actions(driven.normalised[:, 0]) - plan[:, 0]).abs()
    return {"action_mse": mse, "accel_mae": first[:, 0].mean(), "loss": mse}


class DecoupledImagination:
    """The worlds of windows (``builder``, built once per window and kept in a ``WorldCache`` of
    ``cache_windows``), the ``objective``, its uncertainty ``stats`` and, for ``distill``, the teacher."""

    def __init__(self, builder, objective: ObjectiveConfig, spec: ViewSpec, cache_windows: int, seed: int = 0,
                 stats: PoseUncertaintyStats | None = None, teacher_iterations: int = 0,
                 device: torch.device | str = "cpu") -> None:  # fmt: skip
        self.builder, self.objective, self.spec, self.seed = builder, objective, spec, seed
        self.stats, self.device = stats, torch.device(device)
        self.cache = WorldCache(cache_windows)
        self.build_seconds, self.built = 0.0, 0
        self.teacher, self.teacher_iterations = None, teacher_iterations  # 0: no teacher

    def _teacher(self, horizon: int) -> Planner:
        if self.teacher is None or self.teacher.config.horizon != horizon:
            config = PlannerConfig(method="grad", horizon=horizon, iterations=self.teacher_iterations, frame_every=1,
                                   lane_plans=None, lane_rows_m=LANE_ROWS_M)  # fmt: skip
            self.teacher = Planner(config, self.objective, DT_S, self.spec, seed=self.seed)
        return self.teacher

    def teach(self, world: WorldFrames, ego: EgoWindow, state: Tensor | None = None,
              previous_action: Tensor | None = None, step: int = 0) -> Tensor:  # fmt: skip
        """The gradient planner's plan ``[B, T - step, 2]`` (SI) over ``world`` from its ``step``, warm-started
        with the recorded actions; from the window's start unless ``state`` ``[B, 4]`` (with the action before
        it, ``previous_action`` ``[B, 2]``) says where the ego is at ``step``."""
        frames = WorldFrames(world.images[:, :, step:], world.reference[:, step:], world.replicas,
                             self.stats if world.replicas > 1 else None)  # fmt: skip
        state = ego.start if state is None else state
        previous_action = ego.previous_action if previous_action is None else previous_action
        inputs = PlanInputs(state, frames, previous_action, ego.target_speed, ego.car_size)
        with torch.enable_grad():
            plan, _, _ = self._teacher(ego.actions.shape[1] - step).plan(inputs, ego.actions[:, step:])
        return plan.detach()

    def worlds(self, keys: Sequence[int], batch: Mapping[str, Tensor], ego: EgoWindow,
               salt: int = 0) -> tuple[WorldFrames, dict[str, Tensor]]:  # fmt: skip
        """The worlds of windows ``keys`` (``batch``: them in the model's units, ``ego``: SI), built where not
        cached, one window at a time with the seed ``(seed, salt, key)``; with a teacher, its plans (``plan``)."""
        keys = [(salt, int(k)) for k in keys]  # salt: which dataset (0 train, 1 val)
        for i in self.cache.missing(keys):
            t0 = time.perf_counter()
            one = {name: value[i : i + 1] for name, value in batch.items()}
            ego_one = EgoWindow(*(getattr(ego, f)[i : i + 1].cpu() for f in EgoWindow.__dataclass_fields__))
            seed = (self.seed * 1_000_003 + keys[i][1]) * 4 + salt
            world = self.builder.build(one, ego_one, seed=seed)
            extras = {"plan": self.teach(world, ego_one)} if self.teacher_iterations > 0 else None
            self.cache.store([keys[i]], world, extras)
            self.build_seconds += time.perf_counter() - t0
            self.built += 1
        world, extras = self.cache.get(keys, self.builder.replicas, self.device)
        return world, extras

    def seconds_per_window(self) -> float:
        """Mean seconds to build one window's world (and teacher plan) so far."""
        return self.build_seconds / max(self.built, 1)


class IndexedWindows(Dataset):
    """The windows ``indices`` of ``dataset``, each item with its ``window`` index (the cache's key)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.dataset[self.indices[i]] | {"window": torch.tensor(self.indices[i])}


def decoupled_loss(method: str, policy: Policy, imagination: DecoupledImagination, batch: Mapping[str, Tensor],
                   dataset: WindowDataset, model, horizon: int, generator: torch.Generator,
                   salt: int = 0, own_steps: int = 0) -> dict[str, Tensor]:  # fmt: skip
    """The named terms of ``mpur`` or ``distill`` on a batch of ``IndexedWindows`` (``dataset``'s units; ``model``:
    the forward model whose units the policy reads); ``generator`` draws the observed futures and, for
    ``distill`` with ``own_steps`` > 0, how many steps (0 to ``own_steps``) the policy drives before the teacher
    takes over (``distill_terms``)."""
    keys = batch["window"].tolist()
    ego = EgoWindow.from_batch(batch, dataset, horizon).to(imagination.device)
    units = to_model_units({k: v for k, v in batch.items() if k != "window"}, dataset, model)
    world, extras = imagination.worlds(keys, units, ego, salt)
    k = world.images.shape[1]
    observe = torch.randint(k, (len(keys),), generator=generator).to(imagination.device)
    context = Context.from_batch(units)
    if method == "distill":
        own = int(torch.randint(min(own_steps, horizon - 1) + 1, (), generator=generator)) if own_steps > 0 else 0
        terms = distill_terms(policy, context, world, ego, observe, imagination.spec, extras["plan"],
                              imagination.teach, own)  # fmt: skip
    else:
        driven = drive(policy, context, world, ego, observe, imagination.spec)
        terms = mpur_terms(imagination.objective, world, ego, driven, imagination.spec, imagination.stats)
    with torch.no_grad():
        terms["world_build_s"] = torch.tensor(imagination.seconds_per_window())
        cache = imagination.cache
        terms["cache_hit_rate"] = torch.tensor(cache.hits / max(cache.hits + cache.misses, 1))
    return terms


def make_imagination(method: str, world: str, fm_path: str, episodes: str, objective: ObjectiveConfig,
                     samples: int, replicas: int, cache_windows: int, stats_windows: int, teacher_iterations: int,
                     horizon: int, seed: int, device: torch.device, dataset: WindowDataset,
                     calibrate_stats: bool = True) -> DecoupledImagination:  # fmt: skip
    """The ``DecoupledImagination`` of a run: the ``world`` builder (``model``: ``samples`` x ``replicas``
    futures of the forward model ``fm_path``; ``oracle``), the objective with the data's cost geometry, the
    uncertainty statistics (model world, weight > 0, ``calibrate_stats``: measured on ``stats_windows`` train
    windows of ``episodes``) and, for ``distill``, a teacher of ``teacher_iterations`` Adam steps."""
    objective = replace(objective, costs=objective.costs.with_geometry(dataset.cost_config))
    stats = None
    if world == "model":
        model_world = ModelWorld(fm_path, ModelWorldConfig(samples, replicas, max(stats_windows, 2), episodes),
                                 objective, str(device), seed)  # fmt: skip
        builder = ModelWorldBuilder(model_world)
        objective = model_world.objective
        if objective.uncertainty > 0 and calibrate_stats:
            stats = calibrate(model_world, episodes, stats_windows, list(range(1, horizon + 1)), horizon,
                              LANE_ROWS_M, seed)  # fmt: skip
            log.info("pose uncertainty calibrated on %d train windows: mean %.3g, std %.3g", stats.windows,
                     stats.mean, stats.std)  # fmt: skip
    elif world == "oracle":
        builder = OracleWorldBuilder()
    elif world in ("cv", "traffic"):
        builder = RenderedWorldBuilder(world)
    else:
        raise ValueError(f"unknown world {world!r}: expected one of {TRAIN_WORLDS}")
    return DecoupledImagination(builder, objective, dataset.view, cache_windows, seed, stats,
                                teacher_iterations if method == "distill" else 0, device)  # fmt: skip


__all__ = [
    "LANE_ROWS_M",
    "DecoupledImagination",
    "Drive",
    "IndexedWindows",
    "decoupled_loss",
    "distill_terms",
    "drive",
    "make_imagination",
    "mpur_terms",
]
