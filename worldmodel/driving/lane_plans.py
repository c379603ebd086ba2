"""Start plans that take the ego to given lateral positions: the lane changes a local optimiser cannot find.

A gradient step on a plan that keeps its lane never crosses the lane line (the lane and heading terms rise
before the proximity of a follower falls), and CEM's per-step noise averages out before it moves the car a
lane. So the planners also score, once per control step, a small family of structured plans: for each
lateral target (the centres of the ego's lane and its neighbours, from the driver) and each constant
acceleration, the actions of a look-ahead tracking controller driven through the exact kinematics::

    psi_wanted = atan((y_target - y) / max(v * lookahead_s, lookahead_min_m))
    curvature  = (psi_wanted - psi) / max(v * settle_s, 1 m)     (clipped to +-max_curvature)

(the road runs along +x, as the objective's heading term assumes). The cheapest of them, the warm start
and any other starts is where the optimiser begins.
Shapes: B episodes, M lateral targets, A accelerations, T steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from worldmodel.driving import kinematics


@dataclass(frozen=True)
class LanePlanConfig:
    """The tracking controller's gains and the family's accelerations."""

    accels_mps2: tuple[float, ...] = (-3.0, 0.0, 1.5)
    """Constant accelerations of the family [m/s^2] (each combined with every lateral target)."""
    lookahead_s: float = 1.5
    """The lateral error is closed over this much travel [s] (a lane change takes ~2-3 s)."""
    lookahead_min_m: float = 6.0
    """Least look-ahead distance [m] (slow cars do not swerve)."""
    settle_s: float = 0.5
    """The heading error is closed over this much travel [s]."""
    max_curvature_per_m: float = 0.05
    """Curvature bound of the family [1/m]."""


def lane_plans(state: Tensor, lateral_targets: Tensor, horizon: int, dt: float,
               config: LanePlanConfig = LanePlanConfig()) -> Tensor:  # fmt: skip
    """Plans ``[B, M * A, T, 2]`` (SI: accel, curvature) from ``state`` ``[B, 4]`` (x, y, psi, v) toward each
    lateral target ``lateral_targets`` ``[B, M]`` (world y [m]) at each of ``config.accels_mps2``
    (target-major order)."""
    c = config
    b, m = lateral_targets.shape
    accels = torch.tensor(c.accels_mps2, dtype=state.dtype, device=state.device)  # [A]
    a = accels.numel()
    target = lateral_targets[:, :, None].expand(b, m, a)  # [B, M, A]
    accel = accels.expand(b, m, a)
    current = state[:, None, None, :].expand(b, m, a, 4)
    actions = []
    for _ in range(horizon):
        x, y, psi, v = current.unbind(-1)
        wanted = torch.atan((target - y) / (v * c.lookahead_s).clamp(min=c.lookahead_min_m))
        curvature = ((wanted - psi) / (v * c.settle_s).clamp(min=1.0)).clamp(-c.max_curvature_per_m,
                                                                             c.max_curvature_per_m)  # fmt: skip
        action = torch.stack([accel, curvature], dim=-1)  # [B, M, A, 2]
        actions.append(action)
        current = kinematics.step(current, action, dt)
    return torch.stack(actions, dim=-2).reshape(b, m * a, horizon, 2)


__all__ = ["LanePlanConfig", "lane_plans"]
