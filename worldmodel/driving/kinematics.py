"""The kinematics every car shares (SPEC §1), in torch: batched and differentiable.

The same equations as ``worldmodel.traffic.kinematics.step`` (the simulator's numpy definition; a test holds
them equal to float precision): state ``(x, y, psi, v)`` [m, m, rad, m/s], action ``(a, b)`` [m/s^2, 1/m]::

    x += v cos(psi) dt;  y += v sin(psi) dt;  psi += atan(b v dt);  v = max(v + a dt, 0)

Shapes: states ``[..., 4]`` (x, y, psi, v), actions ``[..., 2]`` (accel, curvature), rollouts over ``T``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Column order of a state tensor.
STATE_NAMES = ("x", "y", "psi", "v")


def step(state: Tensor, action: Tensor, dt: float) -> Tensor:
    """One step: state ``[..., 4]`` and action ``[..., 2]`` -> the next state ``[..., 4]``."""
    x, y, psi, v = state.unbind(-1)
    accel, curvature = action.unbind(-1)
    return torch.stack(
        [
            x + v * torch.cos(psi) * dt,
            y + v * torch.sin(psi) * dt,
            psi + torch.atan(curvature * v * dt),
            (v + accel * dt).clamp(min=0.0),
        ],
        dim=-1,
    )


def invert_step(before: Tensor, after: Tensor, dt: float, min_speed_mps: float = 0.5) -> Tensor:
    """The action ``[..., 2]`` that takes state ``before`` to ``after`` (``[..., 4]`` each) under ``step``: the
    speed change over dt, and the curvature that turns by the heading change (0 below ``min_speed_mps``, where
    the heading says little)."""
    accel = (after[..., 3] - before[..., 3]) / dt
    turn = torch.tan(after[..., 2] - before[..., 2]) / (before[..., 3] * dt).clamp(min=1e-3)
    return torch.stack([accel, torch.where(before[..., 3] > min_speed_mps, turn, torch.zeros_like(turn))], dim=-1)


def rollout(state: Tensor, actions: Tensor, dt: float) -> Tensor:
    """The states after each of T actions: state ``[..., 4]``, actions ``[..., T, 2]`` -> ``[..., T, 4]`` (row
    t is the state after action t, i.e. at step t + 1). Equal to T calls of ``step``, computed without a
    loop over time (a planner back-propagates through it at every iteration)::

        v_{t+1}   = S_{t+1} - min(0, min_{s <= t+1} S_s),  S_t = v_0 + dt sum_{s < t} a_s   (the clamp at 0:
                                                                                          Lindley's recursion)
        psi_{t+1} = psi_0 + sum_{s <= t} atan(b_s v_s dt)
        p_{t+1}   = p_0 + dt sum_{s <= t} v_s (cos psi_s, sin psi_s)
    """
    x0, y0, psi0, v0 = (state[..., i, None] for i in range(4))  # [..., 1]
    accel, curvature = actions[..., 0], actions[..., 1]  # [..., T]
    free = v0 + torch.cumsum(accel * dt, dim=-1)  # [..., T] speeds without the clamp
    low = torch.cummin(free, dim=-1).values
    # only a strictly negative minimum moves the floor: at a tie with 0 (a car at rest) the speed keeps the
    # gradient of its acceleration, as the clamp of ``step`` does (cummin would cancel it exactly)
    floor = torch.where(low < 0, low, torch.zeros_like(low))
    v_after = free - floor  # [..., T] speed after each action
    v_before = torch.cat([v0, v_after[..., :-1]], dim=-1)  # [..., T] speed each action starts from
    psi_after = psi0 + torch.cumsum(torch.atan(curvature * v_before * dt), dim=-1)
    psi_before = torch.cat([psi0, psi_after[..., :-1]], dim=-1)
    x = x0 + torch.cumsum(v_before * torch.cos(psi_before) * dt, dim=-1)
    y = y0 + torch.cumsum(v_before * torch.sin(psi_before) * dt, dim=-1)
    return torch.stack([x, y, psi_after, v_after], dim=-1)


def relative_pose(pose: Tensor, reference: Tensor) -> Tensor:
    """``pose`` ``[..., 3]`` (x, y, psi) seen from ``reference`` ``[..., 3]``: ``[..., 3]`` = (forward [m],
    lateral [m, positive to the reference's right], heading difference [rad]) (``ViewSpec``'s ego frame)."""
    dx, dy = pose[..., 0] - reference[..., 0], pose[..., 1] - reference[..., 1]
    cos, sin = torch.cos(reference[..., 2]), torch.sin(reference[..., 2])
    return torch.stack([dx * cos + dy * sin, -dx * sin + dy * cos, pose[..., 2] - reference[..., 2]], dim=-1)


__all__ = ["STATE_NAMES", "invert_step", "relative_pose", "rollout", "step"]
