"""Bot drivers: IDM car-following, MOBIL lane changes, a lateral controller. Vectorised over cars ``[N]``.

IDM (Treiber, Hennecke, Helbing 2000): ``a = a_max [1 - (v/v0)^4 - (s*/s)^2]`` with the desired gap
``s* = s0 + max(0, v T + v dv / (2 sqrt(a_max b)))``. The free-road term is bounded below by ``-b`` so a
car entering a slower zone brakes comfortably instead of hitting the physical limit.
MOBIL (Kesting, Treiber, Helbing 2007): change when ``a_c' - a_c + p (a_n' - a_n + a_o' - a_o) > threshold``
(+ a keep-right bias) and the new follower need not brake harder than ``safe_decel``.
The lateral controller turns a target lane centre into a curvature, so bots drive with the same
(acceleration, curvature) actions and kinematics as every other car.
"""

from __future__ import annotations

import numpy as np

IDM_DELTA = 4.0


def clip(values, low, high):
    """``np.clip`` without its overhead on small arrays (a large share of a step's time otherwise)."""
    return np.minimum(np.maximum(values, low), high)


#: Gaps below this are treated as this [m] (keeps IDM finite when cars touch).
MIN_GAP_M = 0.1


def idm_accel(
    v: np.ndarray,
    v0: np.ndarray,
    gap: np.ndarray,
    dv: np.ndarray,
    time_headway: np.ndarray,
    min_gap: np.ndarray,
    max_accel: np.ndarray,
    comfort_decel: np.ndarray,
) -> np.ndarray:
    """IDM acceleration [m/s^2] for speed ``v``, desired speed ``v0``, bumper gap [m] to the leader (``inf``
    for none) and approach rate ``dv = v - v_leader`` [m/s]. All arrays broadcast; float64."""
    ratio2 = (v / np.maximum(v0, 1e-3)) ** 2  # IDM_DELTA = 4: square twice (cheaper than a power)
    free = np.maximum(max_accel * (1.0 - ratio2 * ratio2), -comfort_decel)
    s_star = min_gap + np.maximum(0.0, v * (time_headway + dv / (2.0 * np.sqrt(max_accel * comfort_decel))))
    interaction = s_star / np.maximum(gap, MIN_GAP_M)
    return free - max_accel * interaction * interaction


def mobil_incentive(
    own_gain: np.ndarray,
    new_follower_gain: np.ndarray,
    old_follower_gain: np.ndarray,
    politeness: np.ndarray,
    bias: np.ndarray | float,
) -> np.ndarray:
    """MOBIL incentive [m/s^2]: own advantage plus politeness times the followers' changes, plus ``bias``."""
    return own_gain + politeness * (new_follower_gain + old_follower_gain) + bias


def lateral_curvature(
    y: np.ndarray,
    psi: np.ndarray,
    v: np.ndarray,
    y_target: np.ndarray,
    dt: float,
    lateral_time_s: float,
    max_lateral_speed_mps: float,
    max_heading_rad: np.ndarray | float = 0.25,
    max_curvature: float = 0.1,
) -> np.ndarray:
    """Curvature [1/m] that steers toward ``y_target``: the heading that gives a lateral speed of
    ``(y_target - y) / lateral_time_s`` (bounded) is reached in one step when the curvature bound allows
    (``max_curvature`` = 1 / the tightest turning radius). ``max_heading_rad`` may be per car: long vehicles
    turn less, so their ends do not swing into the next lane."""
    lateral_speed = clip((y_target - y) / lateral_time_s, -max_lateral_speed_mps, max_lateral_speed_mps)
    speed = np.maximum(v, 0.1)
    psi_target = np.arcsin(clip(lateral_speed / speed, -np.sin(max_heading_rad), np.sin(max_heading_rad)))
    travel = v * dt
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(travel > 1e-4, np.tan(clip(psi_target - psi, -1.2, 1.2)) / travel, 0.0)
    return clip(b, -max_curvature, max_curvature)
