"""The kinematics every car shares (SPEC §1), forward and inverted.

State (x, y) [m], heading psi [rad from +x], speed v [m/s]; action (a [m/s^2] longitudinal acceleration,
b [1/m] curvature = heading change per metre travelled). One step of ``dt``:

    p   += v * d * dt                  d = (cos psi, sin psi)
    d   <- normalize(d + d_perp * b * v * dt)   i.e. psi += atan(b * v * dt)
    v   += a * dt                      (v is kept >= 0)

Replaying the recorded actions of a car from its first state reproduces its trajectory, because
``invert`` below is the exact inverse of ``step`` (up to float rounding). ``invert_actions`` is the one
place that infers replayable actions from recorded positions (inverted, accelerations clipped as PPUU did).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Time step of the simulator and of every recording [s] (DESIGN.md §4).
DT_S = 0.1
#: Replayed actions are clipped to |a| <= this [m/s^2] (PPUU).
MAX_REPLAY_ACCEL_MPS2 = 6.2


def step(
    x: np.ndarray,
    y: np.ndarray,
    psi: np.ndarray,
    v: np.ndarray,
    accel: np.ndarray,
    curvature: np.ndarray,
    dt: float,
    cos_psi: np.ndarray | None = None,
    sin_psi: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One kinematic step for arrays of cars ``[N]`` (float64 recommended). Returns new (x, y, psi, v).
    ``cos_psi``, ``sin_psi``: the heading's cosine and sine if the caller has them already."""
    x_new = x + v * (np.cos(psi) if cos_psi is None else cos_psi) * dt
    y_new = y + v * (np.sin(psi) if sin_psi is None else sin_psi) * dt
    psi_new = psi + np.arctan(curvature * v * dt)
    v_new = np.maximum(v + accel * dt, 0.0)
    return x_new, y_new, psi_new, v_new


def invert(
    x: np.ndarray, y: np.ndarray, dt: float, min_speed_mps: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Actions that reproduce a trajectory ``[T]`` of positions under ``step``.

    Returns ``psi [T], v [T], accel [T], curvature [T]``: the heading and speed at each frame and the action
    taken there (the last frame repeats the previous action; its state comes from the last displacement).
    Where the car stands still (displacement below ``min_speed_mps * dt``) the heading is carried over.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] < 2:
        zeros = np.zeros_like(x)
        return zeros, zeros.copy(), zeros.copy(), zeros.copy()
    dx, dy = np.diff(x), np.diff(y)
    v = np.hypot(dx, dy) / dt  # [T-1] speed used between frames t and t+1
    psi = np.arctan2(dy, dx)
    moving = v > min_speed_mps
    if not moving.all():  # carry the last valid heading over stops (forward fill)
        idx = np.where(moving, np.arange(len(psi)), 0)
        np.maximum.accumulate(idx, out=idx)
        first = np.argmax(moving) if moving.any() else 0
        psi = np.where(np.arange(len(psi)) < first, psi[first], psi[idx])
    psi = np.unwrap(psi)
    v = np.append(v, v[-1])
    psi = np.append(psi, psi[-1])
    accel = np.diff(v, append=v[-1]) / dt
    turn = np.diff(psi, append=psi[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        curvature = np.where(v * dt > 1e-6, np.tan(turn) / (v * dt), 0.0)
    return psi, v, accel, curvature


class InvertedTrack(NamedTuple):
    """A track's states and replayable actions inferred from its positions (``invert_actions``), all ``[T]``."""

    psi: np.ndarray
    """Heading [rad]."""
    v: np.ndarray
    """Speed [m/s]."""
    accel: np.ndarray
    """Acceleration [m/s^2], clipped to ``|a| <= max_accel_mps2``."""
    curvature: np.ndarray
    """Curvature [1/m]."""
    clipped: np.ndarray
    """bool: where the inverted acceleration exceeded the bound."""


def invert_actions(
    x: np.ndarray, y: np.ndarray, dt: float, max_accel_mps2: float = MAX_REPLAY_ACCEL_MPS2
) -> InvertedTrack:
    """``invert`` a trajectory ``[T]`` of positions [m], then clip the accelerations to ``|a| <=
    max_accel_mps2`` (PPUU): the actions a replay of recorded positions takes (data extraction, the expert
    driver, ``replay_drift``)."""
    psi, v, accel, curvature = invert(x, y, dt)
    clipped = np.abs(accel) > max_accel_mps2
    return InvertedTrack(psi, v, np.clip(accel, -max_accel_mps2, max_accel_mps2), curvature, clipped)
