"""The bots' noise: per driver, an Ornstein-Uhlenbeck process of acceleration noise and one of lateral wander
around the lane centre (``NoiseConfig`` of the scenario), kept in the rows ``NOISE`` and ``WANDER`` of the
simulator's vehicle array and advanced once per step from the simulation's generator."""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.vehicles import NOISE, WANDER, WANDER_BOUND


def ou_coefficients(std: float, time_constant_s: float, dt: float) -> tuple[float, float] | None:
    """(decay per step, shock scale) of an Ornstein-Uhlenbeck process of stationary ``std``; None if 0."""
    if std <= 0:
        return None
    decay = np.exp(-dt / time_constant_s)
    return decay, std * np.sqrt(1 - decay**2)


class DriverNoise:
    """The two processes of every driver, for a scenario's ``noise`` settings and step ``dt`` [s]."""

    def __init__(self, noise, dt: float) -> None:
        self.accel = ou_coefficients(noise.accel_std_mps2, noise.accel_time_constant_s, dt)
        self.wander = ou_coefficients(noise.lateral_std_m, noise.lateral_time_constant_s, dt)
        self._both = None
        if self.accel and self.wander:  # as [2, 1] columns for the rows NOISE, WANDER
            self._both = tuple(np.array([[a], [w]]) for a, w in zip(self.accel, self.wander, strict=True))

    def advance(self, rng: np.random.Generator, d: np.ndarray, n: int, accel: np.ndarray) -> np.ndarray:
        """Advance both processes of cars ``[:n]`` of the vehicle array ``d``; returns ``accel`` [n] with the
        acceleration noise added."""
        if self._both is not None:  # one draw, one update for both rows (adjacent: NOISE, WANDER)
            decay, scale = self._both
            shocks = rng.standard_normal(2 * n).reshape(2, n)
            d[NOISE : WANDER + 1, :n] = decay * d[NOISE : WANDER + 1, :n] + scale * shocks
            return accel + d[NOISE, :n]
        for row, ou in ((NOISE, self.accel), (WANDER, self.wander)):
            if ou is not None:
                d[row, :n] = ou[0] * d[row, :n] + ou[1] * rng.standard_normal(n)
        return accel + d[NOISE, :n] if self.accel is not None else accel

    def lateral_offset(self, d: np.ndarray, n: int) -> np.ndarray | float:
        """Each bot's offset [m] from its lane centre: its wander, bounded (``WANDER_BOUND``) so that the car's
        side stays inside the lane: human drivers do not hold the centre line."""
        if self.wander is None:
            return 0.0
        bound = d[WANDER_BOUND, :n]
        return np.minimum(np.maximum(d[WANDER, :n], -bound), bound)


__all__ = ["DriverNoise", "ou_coefficients"]
