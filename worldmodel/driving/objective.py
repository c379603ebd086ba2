"""The driving objective: one definition with named terms, for planners, policy training and rewards.

A plan (or a policy's rollout) is scored on world frames rendered or predicted along a reference
(``worlds``), at the ego's exact poses (``kinematics``), per step ``t`` of the horizon:

| term | per step | why |
|---|---|---|
| ``proximity_ahead`` / ``proximity_behind`` | ``pose_costs`` peaks of the proximity mask x vehicles, squared | PPUU's proximity, split at the ego's centre (``ppuu`` uses their max, linear); squared, a squeezed ego settles between leader and follower |
| ``lane``, ``offroad`` | ``pose_costs`` peaks of the lane mask x lanes / off-road | PPUU's lane and off-road costs |
| ``offroad_ahead`` | ``pose_costs`` peak of the off-road ahead in the ego's lane band (30 m ramp) | the end of a ramp seen while there is time to merge |
| ``speed`` | ``((v - v_target) / speed_scale_mps)^2`` | progress: nothing else rewards moving, and slower is cheaper for proximity |
| ``heading`` | ``psi^2`` (the road runs along +x) | no sideways escape: the car leaves its lane only if a change pays |
| ``action`` | ``(a / accel_scale)^2 + (b / curvature_scale)^2`` | no full-scale steps from tiny gradients |
| ``jerk`` | the same of the action's change from the step before | smooth driving |
| ``barrier`` | ``relu(abs(df) - barrier_along_m)^2 + relu(abs(dl) - barrier_across_m)^2`` | the ego stays where the frames are valid |

Each term is weighted, discounted (``sum_t gamma^t c_t / T``) and returned by name, with ``"total"``.
Presets: ``ObjectiveConfig.ppuu()`` (PPUU's costs only: the proximity max, 0.2 lane, 1.0 off-road) and
``ObjectiveConfig.drive()`` (the terms above, with a rear reach and a wider lateral profile).
``target_speed`` gives the speed target from what the ego observes (traffic ahead in its lane).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from worldmodel.costs import CostConfig
from worldmodel.driving.kinematics import relative_pose
from worldmodel.driving.pose_costs import PixelSet, costs_at_pose

#: Named terms of the objective, in the order of ``evaluate``'s dict (``"total"`` is added).
TERMS = ("proximity_ahead", "proximity_behind", "proximity", "lane", "offroad", "offroad_ahead", "speed", "heading",
         "action", "jerk", "barrier")  # fmt: skip


@dataclass(frozen=True)
class ObjectiveConfig:
    """Weights and geometry of the driving objective (defaults: the ``drive`` preset)."""

    proximity_ahead: float = 1.5
    """Weight of the proximity peak ahead of the ego's centre."""
    proximity_behind: float = 1.0
    """Weight of the proximity peak behind it (a rear-end ends the episode as surely as running into the car
    ahead; at 0.5 the planner took it rather than close up to a leader: 71 % against 83 % success on 100
    i80-sim test cars, oracle world)."""
    proximity: float = 0.0
    """Weight of PPUU's proximity: the max of the two peaks (the ``ppuu`` preset)."""
    proximity_power: float = 2.0
    """The proximity peaks are raised to this power before weighting (1: PPUU's linear ramps, whose sum is
    cheapest at one end of a gap, against the leader or the follower; 2: convex in the gap, so a squeezed ego
    settles between them)."""
    lane: float = 0.2
    """Weight of the lane cost."""
    offroad: float = 1.0
    """Weight of the off-road cost."""
    offroad_ahead: float = 0.5
    """Weight of the off-road ahead in the ego's lane band (``pose_costs``: the end of a ramp, seen while there
    is time to merge)."""
    offroad_ahead_m: float = 30.0
    """Reach of ``offroad_ahead`` beyond the ego's front [m]."""
    speed: float = 0.1
    """Weight of the progress term ``((v - v_target) / speed_scale_mps)^2``."""
    heading: float = 5.0
    """Weight of ``psi^2`` [rad^2]."""
    action: float = 0.01
    """Weight of the squared scaled action."""
    jerk: float = 0.01
    """Weight of the squared scaled change of action between steps."""
    barrier: float = 1.0
    """Weight of the squared excursion [m^2] outside the frames' valid region."""
    rear_reach_m: float = 17.0
    """Least length [m] of the proximity ramp behind the ego's plateau (it ends ~16.5 m behind the rear bumper
    of a 4.5 m car: a stopped ego sees a follower closing at 10 m/s 1.5 s before contact); 0: PPUU's (the
    safe distance)."""
    lateral_reach_m: float | None = 2.5
    """Where the proximity ramp reaches 0 across [m from the ego's centre line]; None: the ego's width (PPUU)."""
    softness: float = 0.0
    """Soft max temperature of the pixel peaks (0: the max, PPUU)."""
    speed_scale_mps: float = 5.0
    """Speed error that costs 1 [m/s]."""
    accel_scale_mps2: float = 3.0
    """Acceleration that costs 1 [m/s^2] (also the planners' action unit)."""
    curvature_scale_per_m: float = 0.02
    """Curvature that costs 1 [1/m] (also the planners' action unit)."""
    barrier_along_m: float = 30.0
    """Free excursion along the reference [m] (the view reaches ~36 m ahead and behind)."""
    barrier_across_m: float = 4.0
    """Free excursion across the reference [m] (the view reaches ~7.4 m each side)."""
    discount: float = 0.99
    """Per-step discount gamma."""
    uncertainty: float = 0.0
    """Weight of the epistemic uncertainty cost at the ego's pose (``driving.uncertainty``; needs a model world
    with dropout replicas); 0: off."""
    uncertainty_hinge: float = 0.5
    """Hinge on the normalised replica variance of the uncertainty cost."""
    costs: CostConfig = field(default_factory=CostConfig)
    """PPUU's cost geometry (safe distance, tolerance, lane width); its weights are not used here."""

    @classmethod
    def drive(cls, **overrides) -> ObjectiveConfig:
        """The objective that drives (the defaults)."""
        return cls(**overrides)

    @classmethod
    def ppuu(cls, **overrides) -> ObjectiveConfig:
        """PPUU's objective: ``proximity + 0.2 lane + 1.0 off-road`` with its masks, nothing else."""
        base = dict(proximity_ahead=0.0, proximity_behind=0.0, proximity=1.0, speed=0.0, heading=0.0, action=0.0,
                    jerk=0.0, rear_reach_m=0.0, lateral_reach_m=None, softness=0.0, proximity_power=1.0,
                    offroad_ahead=0.0)  # fmt: skip
        return cls(**(base | overrides))

    @classmethod
    def preset(cls, name: str, **overrides) -> ObjectiveConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown objective preset {name!r}: expected one of {sorted(PRESETS)}")
        return getattr(cls, name)(**overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def road_ahead_m(self) -> float:
        """How far ahead of the ego's front the road pixels are read [m] (0 unless ``offroad_ahead`` counts)."""
        return self.offroad_ahead_m if self.offroad_ahead > 0 else 0.0

    def action_scale(self, like: Tensor) -> Tensor:
        """``[2]``: the SI size of one planner action unit (accel, curvature)."""
        return torch.tensor([self.accel_scale_mps2, self.curvature_scale_per_m], dtype=like.dtype, device=like.device)


PRESETS = ("drive", "ppuu")


def discounted(per_step: Tensor, discount: float) -> Tensor:
    """``sum_t gamma^t c[..., t] / T``: ``[..., T] -> [...]``."""
    t = per_step.shape[-1]
    weights = discount ** torch.arange(t, dtype=per_step.dtype, device=per_step.device)
    return (per_step * weights).sum(-1) / t


def evaluate(
    config: ObjectiveConfig,
    pixels: PixelSet,
    reference: Tensor,
    states: Tensor,
    actions: Tensor,
    previous_action: Tensor,
    target_speed_mps: Tensor,
    car_size: Tensor,
    frame_every: int = 1,
) -> dict[str, Tensor]:
    """The weighted, discounted terms ``TERMS`` and ``"total"``, each ``[...]`` (one per plan and future).

    pixels: the ``pose_costs.PixelSet`` ``[..., F]`` of world frames at every ``frame_every``-th step of the
    horizon (F = T // frame_every), centred on ``reference`` ``[..., F, 3]`` (x, y, psi); the pose terms (costs,
    barrier) are read there; states: ``[..., T, 4]`` the ego's states (x, y, psi, v) after each action
    (``kinematics.rollout``);
    actions: ``[..., T, 2]`` SI actions that led to them; previous_action: ``[..., 2]`` the action executed
    before the first; target_speed_mps: ``[...]``; car_size: ``[..., 2]`` (length, width [m]). Leading axes
    broadcast (frames ``[B, 1, K, T, ...]`` against plans ``[B, P, 1, T, ...]``).
    """
    c = config
    at_frames = states[..., frame_every - 1 :: frame_every, :]  # [..., F, 4]
    relative = relative_pose(at_frames[..., :3], reference)  # [..., F, 3]
    pose = costs_at_pose(pixels, relative, at_frames[..., 3], car_size[..., 0, None], car_size[..., 1, None], c.costs,
                         c.rear_reach_m, c.lateral_reach_m, c.softness, c.road_ahead_m)  # fmt: skip
    scale = c.action_scale(actions)
    scaled = actions / scale  # [..., T, 2]
    before = (previous_action / scale)[..., None, :].expand(*scaled.shape[:-2], 1, 2)
    changes = torch.diff(scaled, dim=-2, prepend=before)
    excursion = (relative[..., 0].abs() - c.barrier_along_m).relu() ** 2 + (
        relative[..., 1].abs() - c.barrier_across_m
    ).relu() ** 2
    ahead, behind = pose["proximity_ahead"] ** c.proximity_power, pose["proximity_behind"] ** c.proximity_power
    per_step = {
        "proximity_ahead": ahead,
        "proximity_behind": behind,
        "proximity": torch.maximum(ahead, behind),
        "lane": pose["lane"],
        "offroad": pose["offroad"],
        "offroad_ahead": pose["offroad_ahead"],
        "speed": ((states[..., 3] - target_speed_mps[..., None]) / c.speed_scale_mps) ** 2,
        "heading": states[..., 2] ** 2,
        "action": scaled.pow(2).sum(-1),
        "jerk": changes.pow(2).sum(-1),
        "barrier": excursion,
    }
    terms = {name: getattr(c, name) * discounted(per_step[name], c.discount) for name in TERMS}
    shape = torch.broadcast_shapes(*(t.shape for t in terms.values()))
    terms["total"] = sum(t.expand(shape) for t in terms.values())
    return terms


def target_speed(vehicles: dict, road, lookahead_m: float = 40.0, lane_end_decel_mps2: float | None = 1.5) -> float:
    """Speed target [m/s] of the ego (row 0 of ``vehicles``, as ``ReplaySimulation.vehicles()``): the mean
    speed of the other cars whose centre is ahead within ``lookahead_m`` in its lane, else the road's limit;
    in a lane that ends (an on-ramp), at most the speed from which braking at ``lane_end_decel_mps2`` stops the
    ego's front at the lane's end, ``sqrt(2 b d)`` (None: no such cap). Uses only what the ego observes now.
    (A 100 m lookahead lowered the mean target on 100 i80-sim test cars from 9.0 to 7.1 m/s, and the recorded
    followers, who do not react, rear-ended 13 more egos. Without the lane-end cap, ramp cars with nobody ahead
    aimed at the limit and reached the ramp's end at 19-24 m/s, too fast to merge: 13 of the oracle-world
    planner's 78 failures on the 428 test cars.)"""
    x, y = vehicles["x"], vehicles["y"]
    lane = int(road.nearest_lane(np.array([x[0]]), np.array([y[0]]))[0])
    others_lane = road.lane_at(x[1:], y[1:])
    ahead = (others_lane == lane) & (x[1:] > x[0]) & (x[1:] < x[0] + lookahead_m)
    target = float(np.mean(vehicles["v"][1:][ahead])) if ahead.any() else float(road.config.speed_limit_mps)
    if lane_end_decel_mps2 is not None and road.is_ramp_lane(lane):
        room = max(float(road.ramp_end_m(np.array([lane]))[0]) - x[0] - 0.5 * float(vehicles["length"][0]), 0.0)
        target = min(target, float(np.sqrt(2.0 * lane_end_decel_mps2 * room)))
    return target


__all__ = ["PRESETS", "TERMS", "ObjectiveConfig", "discounted", "evaluate", "target_speed"]
