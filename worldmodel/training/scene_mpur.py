"""``train policy --method mpur --observation scene``: a scene policy trained in an object-level imagination.

MPUR (Henaff et al. 2019) without pixels in the policy's input: the policy (``nn.scene_policy``) acts on the
object-level features of the cars around its *imagined* pose (``scene.features_at``), the exact kinematics move
it, and the driving objective the planners minimise (``objective.evaluate`` through
``policy_decoupled.mpur_terms``: proximity, lane, off-road, progress, heading, action and jerk terms read at its
poses from the world's frames) is back-propagated through the drive into its weights. The world of each train
window is imagined once (``driving.scene_windows``): the recorded car's moment, the other cars as ``world``
predicts them (``traffic``: the learned traffic model; ``cv``; ``oracle``: the recording, privileged), the frames
rendered from them at the recorded poses. A pool of ``world_pool`` windows is built at the start; each update
drives ``batch_size`` of them ``horizon`` steps.

What the gradient flows through: the costs at the ego's poses, the kinematics, the actions. With
``feature_gradient`` it also flows through the features the policy reads (their exact Jacobian): the whole closed
loop, whose 30-step products of Jacobians made the step unstable (every run at lr 1e-4 to 3e-4 blew up within
1,000 updates); without (the default) each action is credited with the costs it causes through the kinematics,
the later actions held, as a planner's gradient credits a plan.

A policy trained on recorded moments only meets, in closed loop, states the recorded cars never were in (its own
speed, its own gaps). With ``rounds`` R > 1 the ``steps`` are split into R rounds; before each round r > 0 the
policy drives ``round_episodes`` train cars in ``Replay-v0`` (``recorded_drives``), and windows cut every
``driven_stride`` steps of those drives (at most ``world_pool``) join the pool: the world imagined around the
policy's own states, its own drive as the reference (``scene_windows.driven_moments``). As DAgger aggregates the
states its student reaches, without a teacher: the objective itself says what to do there.

Every ``val_every`` updates, after each round and after the last: the imagined objective on ``val_windows``
windows of the val split (no gradient), ``checkpoints/last.pt``, and with ``val_episodes`` > 0 a closed-loop drive of that many val cars in
``Replay-v0`` (``best.pt``: the best by success, then distance). ``metrics.jsonl``: a line per ``log_every``
updates and per validation. A run is short (minutes) and does not resume: it starts again.

A lane change is a discrete choice that a gradient through a drive does not make (the lane cost between lanes
holds the policy in its own). With ``scene_lane_choice`` the choice is learnt apart from the driving: every window
is driven toward each lane that exists at its start (the policy reading the offset of that lane's centre,
``lane_intent`` pulling it there), and a lane head regresses what each of those drives cost; driving, the policy
takes the lane its head predicts cheapest (``nn.scene_policy``, ``driving.scene_driver``), as the planners try
their lane plans.

The policy starts from ``init_policy`` (e.g. DAgger's, ``training.dagger``) or fresh, standardised with the
features the recorded drive reads at the train windows' starts and the actions it took.
Shapes: B windows per batch, T steps, F features.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from worldmodel.driving.objective import ObjectiveConfig, discounted
from worldmodel.driving.recorded_drives import build_recorder
from worldmodel.driving.scene import FEATURE_NAMES, features_at
from worldmodel.driving.scene_windows import (
    ScenePool,
    build_pool,
    driven_moments,
    lane_centres,
    scene_drive,
    start_lanes,
    window_moments,
)
from worldmodel.driving.worlds import TrafficWorld, WorldFrames
from worldmodel.nn.checkpointing import CheckpointError
from worldmodel.nn.saving import save_checkpoint
from worldmodel.nn.scene_policy import LANE_COST_SCALE, ScenePolicy, lane_exists
from worldmodel.traffic.view import ViewSpec
from worldmodel.training.dagger import drive_train_cars, scene_normalisation, start_run
from worldmodel.training.policy import closed_loop_val
from worldmodel.training.policy_config import TrainPolicyConfig
from worldmodel.training.policy_decoupled import mpur_terms

log = logging.getLogger(__name__)

LAG_FREE_M = 2.0
"""``lag_weight``'s term starts this far behind the recorded car [m]."""


def lane_offsets(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every lane that exists where each ego is (``features`` ``[B, F]``, read for the nearest lane): ``rows``
    ``[R]`` (which ego) and ``offsets`` ``[R]`` (-1 left, 0 keep, +1 right), R between B and 3 B."""
    rows, lanes = torch.nonzero(lane_exists(features, FEATURE_NAMES).cpu(), as_tuple=True)
    return rows, lanes - 1


def imagined_terms(policy: ScenePolicy, pool: ScenePool, index: torch.Tensor, objective: ObjectiveConfig,
                   spec: ViewSpec, feature_gradient: bool = False, lane_intent: float = 0.0,
                   every_lane: bool = False, ego_gradient: bool = False,
                   lag_weight: float = 0.0) -> dict[str, torch.Tensor]:  # fmt: skip
    """The objective's terms (means over the windows ``index`` ``[B]``) of ``policy`` driven through ``pool``.

    With a lane choice (``ScenePolicyConfig.lane_choice``) each window is driven toward a lane (its offset the
    policy's ``lane_target``): with ``every_lane`` (training) once toward each lane that exists at its start (the
    means are then over those drives), else toward the policy's choice. ``lane_offset`` is the discounted squared distance
    from that lane's centre [lane widths^2], added to the loss with weight ``lane_intent`` (what makes the action
    head follow the lane it is given), and ``lane_mse`` the lane head's squared error [(tenths of the
    objective)^2] on each drive's objective (``total``), added as it is."""
    device = next(policy.parameters()).device
    lanes = offsets = seen = None
    if policy.lane_head is not None:
        windows = index.tolist()
        seen = features_at(pool.start[index], pool.previous_action[index], [pool.others[i][0] for i in windows],
                           [pool.roads[i] for i in windows], pool.car_size[index]).to(device)  # fmt: skip
        if every_lane:
            rows, offsets = lane_offsets(seen)
            index, seen = index[rows], seen[rows.to(device)]
        else:
            offsets = policy.choose_lanes(seen).cpu()
        lanes = [lane + offset for lane, offset in zip(start_lanes(pool, index), offsets.tolist(), strict=True)]
    driven = scene_drive(policy, pool, index, feature_gradient=feature_gradient, lanes=lanes,
                         ego_gradient=ego_gradient)  # fmt: skip
    world = WorldFrames(pool.frames[index][:, None].to(device).float().div_(255.0), pool.reference[index].to(device))
    terms = mpur_terms(objective, world, pool.ego(index).to(device), driven, spec, per_window=True)
    drive_total = terms.pop("window_total")
    if lag_weight > 0:
        recorded = torch.tensor([pool.moments[i].driven is None for i in index.tolist()], device=device)
        lag = (pool.reference[index][..., 0].to(device) - driven.states[..., 0] - LAG_FREE_M).relu() / 5.0  # [B, T]
        terms["lag"] = (discounted(lag.square(), objective.discount) * recorded).mean()
        terms["loss"] = terms["loss"] + lag_weight * terms["lag"]
    if lanes is not None:
        centre, width = (x.to(device)[:, None] for x in lane_centres(pool, index, lanes))
        off = (driven.states[..., 1] - centre) / width  # [R, T]
        terms["lane_offset"] = discounted(off.square(), objective.discount).mean()
        predicted = policy.lane_costs(seen).gather(-1, (offsets + 1).to(device)[:, None])[:, 0]
        terms["lane_mse"] = ((predicted - drive_total.detach()) * LANE_COST_SCALE).square().mean()
        terms["loss"] = terms["loss"] + lane_intent * terms["lane_offset"] + terms["lane_mse"]
    return terms


@torch.no_grad()
def imagined_objective(policy: ScenePolicy, pool: ScenePool, objective: ObjectiveConfig, spec: ViewSpec,
                       batch_size: int = 64) -> dict[str, float]:  # fmt: skip
    """The mean terms of ``policy`` over every window of ``pool`` (eval mode)."""
    policy.eval()
    sums: dict[str, float] = {}
    for first in range(0, len(pool), batch_size):
        index = torch.arange(first, min(first + batch_size, len(pool)))
        for name, value in imagined_terms(policy, pool, index, objective, spec).items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(index)
    return {name: value / len(pool) for name, value in sums.items()}


def recorded_normalisation(pool: ScenePool) -> dict[str, np.ndarray]:
    """A fresh policy's statistics: the features the recorded car reads at the windows' starts (with the action
    that brought it there) and the first actions it took (``dagger.scene_normalisation``)."""
    index = torch.arange(len(pool))
    features = features_at(pool.start, pool.previous_action, [pool.others[i][0] for i in index.tolist()],
                           pool.roads, pool.car_size)  # fmt: skip
    return scene_normalisation([{"features": features.numpy(), "labels": pool.actions[:, 0].numpy()}])


def start_policy(config: TrainPolicyConfig, pool: ScenePool, fresh: ScenePolicy) -> ScenePolicy:
    """``config.init_policy`` loaded (it must read this version's features), else ``fresh`` standardised."""
    if config.init_policy is None:
        fresh.set_normalisation(recorded_normalisation(pool))
        return fresh
    policy = ScenePolicy.from_checkpoint(config.init_policy)
    if policy.config.feature_names != FEATURE_NAMES:
        raise CheckpointError(config.init_policy, "the scene policy reads other features than this version computes",
                              "start from a policy of this version")  # fmt: skip
    return policy


def policy_moments(config: TrainPolicyConfig, checkpoint: Path, folder: Path, round_index: int) -> tuple[list, dict]:
    """Moments of the policy ``checkpoint``'s own drives of ``round_episodes`` train cars (a seeded draw per round),
    at most ``world_pool`` of them (drawn with the same seed), and the drives' summary."""
    c = config
    seed = c.seed * 1000 + round_index
    make = functools.partial(build_recorder, str(checkpoint), c.seed)
    chosen, records = drive_train_cars(c, folder, c.round_episodes, seed, str(checkpoint), make)
    moments = [m for episode, record in zip(chosen, records, strict=True)
               for m in driven_moments(episode.vehicle, record.pop("collected"), c.horizon, c.driven_stride)]  # fmt: skip
    if len(moments) > c.world_pool:
        keep = np.sort(np.random.default_rng(seed).choice(len(moments), c.world_pool, replace=False))
        moments = [moments[i] for i in keep]
    return moments, {"drive_success_rate": float(np.mean([r["success"] for r in records])), "driven": len(moments)}


def train_scene_mpur(config: TrainPolicyConfig, fresh: ScenePolicy, folder: Path | None) -> dict:
    """Train a scene policy (``fresh``, or ``config.init_policy``) by MPUR in object-level imagination on the
    dataset directory ``folder`` (see the module docstring). Returns a summary."""
    c = config
    out, checkpoints = start_run(c, folder, "a scene policy's imagination is built from the recordings")
    spec, objective = ViewSpec(), c.objective_config()
    traffic = TrafficWorld(c.traffic, spec) if c.world == "traffic" else None
    t0 = time.perf_counter()
    pool = build_pool(folder, window_moments(folder, "train", c.world_pool, c.horizon, c.seed), c.horizon, c.world,
                      traffic, spec)  # fmt: skip
    val_pool = build_pool(folder, window_moments(folder, "val", c.val_windows, c.horizon, c.seed), c.horizon, c.world,
                          traffic, spec)  # fmt: skip
    build_s = time.perf_counter() - t0
    log.info("scene mpur: %d train and %d val windows imagined in %.0f s (%s world)", len(pool), len(val_pool),
             build_s, c.world)  # fmt: skip
    device = next(fresh.parameters()).device
    policy = start_policy(c, pool, fresh).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=c.lr)
    # the lane head's regression is clipped apart: its error, tens of times the objective's gradient, would
    # otherwise scale the driving head's step down to nothing
    groups: dict[bool, list] = {}
    for name, parameter in policy.named_parameters():
        groups.setdefault(name.startswith("lane_head."), []).append(parameter)
    clipped = list(groups.values())
    generator = torch.Generator().manual_seed(c.seed)
    metrics = out / "metrics.jsonl"
    metrics.write_text("")
    best, history, sums, t1 = None, [], {}, time.perf_counter()

    def validate(step: int) -> dict:
        nonlocal best
        imagined = imagined_objective(policy, val_pool, objective, spec)
        line = {"step": step} | {f"val_{name}": value for name, value in imagined.items()}
        ckpt = policy.checkpoint_dict(step, method=c.method, world=c.world, train_config=c.to_dict())
        path = save_checkpoint(ckpt, checkpoints / "last.pt")
        if c.val_episodes > 0:
            drive = closed_loop_val(path, folder, c.val_episodes, c.seed, out / "val" / f"step-{step}.json", device,
                                    c.episode_workers)  # fmt: skip
            line |= {f"val_{name}": value for name, value in drive.items()}
            score = (drive["success_rate"], drive["mean_distance_m"])
        else:
            score = (-line["val_total"], 0.0)
        if best is None or score > best:
            best = score
            save_checkpoint(ckpt | {"val": line}, checkpoints / "best.pt")
        return line

    def write(line: dict) -> None:
        history.append(line)
        with open(metrics, "a") as f:
            f.write(json.dumps(line) + "\n")
        log.info("scene mpur: %s", line)

    write(validate(0) | {"build_s": round(build_s, 1)})
    per_round = -(-c.steps // c.rounds)
    for step in range(1, c.steps + 1):
        if step > 1 and (step - 1) % per_round == 0:  # a new round: windows at the policy's own states join
            t0, r = time.perf_counter(), (step - 1) // per_round
            moments, drives = policy_moments(c, checkpoints / "last.pt", folder, r)
            pool = ScenePool.join([pool, build_pool(folder, moments, c.horizon, c.world, traffic, spec)])
            write({"step": step - 1, "round": r, **drives, "windows": len(pool),
                   "round_s": round(time.perf_counter() - t0, 1)})  # fmt: skip
        policy.train()
        index = torch.randint(len(pool), (c.batch_size,), generator=generator)
        terms = imagined_terms(policy, pool, index, objective, spec, c.feature_gradient, c.lane_intent, True,
                               c.ego_gradient, c.lag_weight)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = sum(torch.nn.utils.clip_grad_norm_(group, c.grad_clip) for group in clipped)
        if not torch.isfinite(grad_norm):
            raise FloatingPointError(f"scene mpur: non-finite gradient at step {step}")
        optimizer.step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        if step % c.log_every == 0:
            write({"step": step} | {k: v / c.log_every for k, v in sums.items()}
                  | {"s_per_step": round((time.perf_counter() - t1) / step, 3)})  # fmt: skip
            sums = {}
        if step == c.steps or step % per_round == 0 or (c.val_every and step % c.val_every == 0):
            write(validate(step))
    return {"method": c.method, "observation": "scene", "world": c.world, "out": str(out), "final": history[-1]}


__all__ = ["imagined_objective", "imagined_terms", "lane_offsets", "policy_moments", "recorded_normalisation",
           "start_policy", "train_scene_mpur"]  # fmt: skip
