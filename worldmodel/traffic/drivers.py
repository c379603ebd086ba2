"""The bot: IDM car-following, MOBIL lane changes, lane keeping. Vectorised over cars ``[N]``.

One driver model for every bot: the simulator's (``simulation.py``, all its cars at once) and the
closed-loop ``BotDriver`` (``driving/drivers.py``, one car among recorded traffic). Each finds its
neighbours its own way (lane occupancy keys; the recorded cars' positions) and hands their gaps, speeds and
accelerations to the functions here, with one ``DriverSettings``.

IDM (Treiber, Hennecke, Helbing 2000): ``a = a_max [1 - (v/v0)^4 - (s*/s)^2]`` with the desired gap
``s* = s0 + max(0, v T + v dv / (2 sqrt(a_max b)))``. The free-road term is bounded below by ``-b`` so a
car entering a slower zone brakes comfortably instead of hitting the physical limit. A car follows the
stricter of its leader and the car after it (a long truck's rear can be nearer than that of the shorter
car whose centre is nearer).
MOBIL (Kesting, Treiber, Helbing 2007): change when ``a_c' - a_c + p (a_n' - a_n + a_o' - a_o) > threshold``
(+ a keep-right bias) and the change is safe: bumper gaps of ``min_change_gap_m`` (behind: plus what the new
follower closes in ``follower_horizon_s``), and neither the car nor its new follower need brake harder than
``safe_decel_mps2``.
The lane keeper turns a target lateral position into a curvature, so bots drive with the same
(acceleration, curvature) actions and kinematics as every other car.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IDM_DELTA = 4.0
#: Gaps below this are treated as this [m] (keeps IDM finite when cars touch).
MIN_GAP_M = 0.1
#: Heading bound of every bot [rad].
MAX_HEADING_RAD = 0.25
#: A bot changing lanes turns at most so far that its ends swing this much sideways [m].
MAX_SWING_M = 0.5
#: A bot keeping its lane turns at most so far that its ends swing this much sideways [m].
KEEP_SWING_M = 0.25

Array = float | np.ndarray


@dataclass(frozen=True)
class DriverSettings:
    """How a bot drives. IDM and MOBIL fields are floats (one driver) or arrays ``[N]`` aligned with the
    cars a function is given (the simulator draws them per car). Defaults: the mean driver of the i80
    scenario."""

    time_headway_s: Array = 1.3
    """IDM time headway T [s]."""
    min_gap_m: Array = 2.0
    """IDM standstill gap s0 [m] (bumper to bumper)."""
    max_accel_mps2: Array = 1.0
    """IDM maximum acceleration a [m/s^2]."""
    comfort_decel_mps2: Array = 2.0
    """IDM comfortable deceleration b [m/s^2]."""
    politeness: Array = 0.4
    """MOBIL politeness p (weight of the followers' accelerations)."""
    change_threshold_mps2: Array = 0.5
    """MOBIL threshold [m/s^2] the incentive must exceed."""
    right_bias_mps2: float = 0.1
    """MOBIL keep-right bias [m/s^2] (added for a change to the right, subtracted to the left)."""
    merge_bias_mps2: float = 10.0
    """Incentive [m/s^2] of leaving an on-ramp (mandatory: politeness 0, only safety counts)."""
    safe_decel_mps2: float = 3.0
    """MOBIL safety: neither the car nor its new follower would need to brake harder than this [m/s^2]."""
    min_change_gap_m: float = 2.0
    """Smallest bumper gap [m] to the new leader and the new follower for a change."""
    follower_horizon_s: float = 3.0
    """Safety against a new follower that may not react (recorded traffic): the gap to it must also exceed
    what it closes in this time at its current speed [s]; 0 for followers that brake (simulated bots)."""
    min_change_speed_mps: float = 1.0
    """No discretionary change below this speed [m/s]: a car cannot move sideways without moving forward."""
    change_period_s: float = 1.0
    """Time between lane-change decisions [s]."""
    change_cooldown_s: float = 4.0
    """No new decision this long after a change ended [s]."""
    change_done_m: float = 0.15
    """A lane change ends (the car stops minding its origin lane) this close to its lateral target [m]."""
    lateral_time_s: float = 1.2
    """Lane keeper: time to close the lateral offset to the target [s]."""
    max_lateral_speed_mps: float = 1.2
    """Lane keeper: bound on the lateral speed [m/s]."""


def clip(values, low, high):
    """``np.clip`` without its overhead on small arrays (a large share of a step's time otherwise)."""
    return np.minimum(np.maximum(values, low), high)


# ------------------------------------------------------------------------------------------ IDM
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


def follow_accel(
    s: DriverSettings,
    v: np.ndarray,
    v0: np.ndarray,
    gap: np.ndarray,
    dv: np.ndarray,
    second_gap: np.ndarray | None = None,
    second_dv: np.ndarray | None = None,
) -> np.ndarray:
    """IDM acceleration [m/s^2] of cars ``[N]`` (settings ``s``) behind their leader (bumper ``gap`` [m],
    ``inf`` for none; ``dv = v - v_leader``) and, if given, the second car ahead (``second_gap``,
    ``second_dv``): the stricter of the two."""
    a = idm_accel(v, v0, gap, dv, s.time_headway_s, s.min_gap_m, s.max_accel_mps2, s.comfort_decel_mps2)
    if second_gap is None:
        return a
    second = idm_accel(v, v0, second_gap, second_dv, s.time_headway_s, s.min_gap_m, s.max_accel_mps2,
                       s.comfort_decel_mps2)  # fmt: skip
    return np.minimum(a, second)


def end_of_lane_accel(s: DriverSettings, v: np.ndarray, v0: np.ndarray, gap_to_end: np.ndarray) -> np.ndarray:
    """IDM acceleration [m/s^2] toward the end of a ramp lane ``gap_to_end`` [m] ahead (a standing obstacle)."""
    return follow_accel(s, v, v0, gap_to_end, v)


# ------------------------------------------------------------------------------------------ MOBIL
def mobil_incentive(
    own_gain: np.ndarray,
    new_follower_gain: np.ndarray,
    old_follower_gain: np.ndarray,
    politeness: np.ndarray,
    bias: np.ndarray | float,
) -> np.ndarray:
    """MOBIL incentive [m/s^2]: own advantage plus politeness times the followers' changes, plus ``bias``."""
    return own_gain + politeness * (new_follower_gain + old_follower_gain) + bias


def change_incentive(
    s: DriverSettings,
    direction: float,
    on_ramp: np.ndarray,
    v: np.ndarray,
    a_own: np.ndarray,
    a_new: np.ndarray,
    front_gap: np.ndarray,
    rear_gap: np.ndarray,
    rear_closing_mps: np.ndarray,
    new_follower: tuple[np.ndarray, np.ndarray],
    old_follower: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """MOBIL incentive [m/s^2] of cars ``[N]`` to change one lane in ``direction`` (-1 left, +1 right), or
    ``-inf`` where the change is unsafe, the car too slow for a discretionary change, or the incentive not
    above its threshold.

    ``a_own``: acceleration [m/s^2] in the own lane; ``a_new``: behind the new leader; ``front_gap``,
    ``rear_gap``: bumper gaps [m] to the new leader and the new follower (``inf``: none);
    ``rear_closing_mps``: how fast the new follower approaches (0: none); ``new_follower``,
    ``old_follower``: their accelerations (before, after) the change (0, 0 where there is none). From an
    on-ramp (``on_ramp``) the change is mandatory: ``merge_bias_mps2``, politeness 0.
    """
    safe = (front_gap >= s.min_change_gap_m) & (
        rear_gap >= s.min_change_gap_m + np.maximum(rear_closing_mps, 0.0) * s.follower_horizon_s
    )
    safe &= new_follower[1] >= -s.safe_decel_mps2
    safe &= a_new >= -s.safe_decel_mps2
    bias = np.where(on_ramp, s.merge_bias_mps2, direction * s.right_bias_mps2)
    politeness = np.where(on_ramp, 0.0, s.politeness)
    # accelerations compared within the comfortable range: a car about to brake hard for its leader does not
    # see a huge "gain" in every other lane
    low, high = -s.comfort_decel_mps2, s.max_accel_mps2
    own_gain = clip(a_new, low, high) - clip(a_own, low, high)
    gain = mobil_incentive(
        own_gain, new_follower[1] - new_follower[0], old_follower[1] - old_follower[0], politeness, bias
    )
    moving = on_ramp | (v > s.min_change_speed_mps)
    return np.where(safe & moving & (gain > s.change_threshold_mps2), gain, -np.inf)


def best_lane(lane: np.ndarray, options: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The lane each car ``[N]`` changes to: among ``options`` (target lane, ``change_incentive``) the one of
    the highest finite incentive (the first on a tie), else its own ``lane``."""
    best_gain = np.full(np.shape(lane), -np.inf)
    best = np.array(lane, copy=True)
    for target, gain in options:
        take = gain > best_gain
        best_gain = np.where(take, gain, best_gain)
        best = np.where(take, target, best)
    return best


# ------------------------------------------------------------------------------------------ lane keeping
def turn_limit_rad(length_m: np.ndarray) -> np.ndarray:
    """Heading bound [rad] of a car changing lanes: long vehicles turn less, so their ends do not swing
    more than ``MAX_SWING_M`` into the next lane."""
    return np.minimum(MAX_HEADING_RAD, np.arcsin(np.minimum(1.0, MAX_SWING_M / (0.5 * length_m))))


def keep_limit_rad(length_m: np.ndarray) -> np.ndarray:
    """Heading bound [rad] of a car keeping its lane: its ends swing at most ``KEEP_SWING_M``."""
    return np.arcsin(np.minimum(1.0, KEEP_SWING_M / (0.5 * length_m)))


def heading_limit_rad(length_m: np.ndarray, changing: np.ndarray, turn_limit: np.ndarray | None = None) -> np.ndarray:
    """Heading bound [rad]: ``turn_limit`` (default ``turn_limit_rad(length_m)``) while changing lanes;
    while keeping the lane also so small that the ends swing at most ``KEEP_SWING_M`` (with the simulator's
    wander clearance, two long trucks side by side never touch)."""
    turn = turn_limit_rad(length_m) if turn_limit is None else turn_limit
    return np.where(changing, turn, np.minimum(turn, keep_limit_rad(length_m)))


def lateral_curvature(
    y: np.ndarray,
    psi: np.ndarray,
    v: np.ndarray,
    y_target: np.ndarray,
    dt: float,
    lateral_time_s: float,
    max_lateral_speed_mps: float,
    max_heading_rad: np.ndarray | float = MAX_HEADING_RAD,
    max_curvature: float = 0.1,
) -> np.ndarray:
    """Curvature [1/m] that steers toward ``y_target``: the heading that gives a lateral speed of
    ``(y_target - y) / lateral_time_s`` (bounded) is reached in one step when the curvature bound allows
    (``max_curvature`` = 1 / the tightest turning radius). ``max_heading_rad`` may be per car."""
    return steering_curvature(y, psi, v, y_target, dt, lateral_time_s, max_lateral_speed_mps,
                              np.sin(max_heading_rad), max_curvature)  # fmt: skip


def steering_curvature(
    y: np.ndarray,
    psi: np.ndarray,
    v: np.ndarray,
    y_target: np.ndarray,
    dt: float,
    lateral_time_s: float,
    max_lateral_speed_mps: float,
    sin_max_heading: np.ndarray | float,
    max_curvature: float = 0.1,
) -> np.ndarray:
    """``lateral_curvature`` given the sine of the heading bound (the simulator keeps it per car)."""
    lateral_speed = clip((y_target - y) / lateral_time_s, -max_lateral_speed_mps, max_lateral_speed_mps)
    speed = np.maximum(v, 0.1)
    psi_target = np.arcsin(clip(lateral_speed / speed, -sin_max_heading, sin_max_heading))
    travel = v * dt
    # where the car barely moves the curvature is 0 (the division there is discarded: no warning)
    b = np.where(travel > 1e-4, np.tan(clip(psi_target - psi, -1.2, 1.2)) / np.maximum(travel, 1e-4), 0.0)
    return clip(b, -max_curvature, max_curvature)


def lane_keeping_curvature(
    s: DriverSettings,
    y: np.ndarray,
    psi: np.ndarray,
    v: np.ndarray,
    y_target: np.ndarray,
    length_m: np.ndarray,
    changing: np.ndarray,
    dt: float,
    turn_limit: np.ndarray | None = None,
) -> np.ndarray:
    """Curvature [1/m] of cars ``[N]`` steering toward ``y_target`` [m] (their lane's centre, plus any
    wander), within ``heading_limit_rad``."""
    limit = heading_limit_rad(length_m, changing, turn_limit)
    return lateral_curvature(y, psi, v, y_target, dt, s.lateral_time_s, s.max_lateral_speed_mps, limit)
