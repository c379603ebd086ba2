"""The traffic beyond the road end (``DownstreamConfig``): per lane, a desired speed that follows a
mean-reverting random process (Ornstein-Uhlenbeck), common to all lanes in part."""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.scenario import DownstreamConfig

UPDATE_EVERY = 5  # the process is updated every this many steps


class DownstreamSpeed:
    """Desired speed [m/s] of each lane ``[lanes]`` in the downstream zone (``speed``); ``by_index``: the same
    indexed by any integer lane from -11 to ``lanes`` (a lane beyond an edge reads the edge lane's speed)."""

    def __init__(self, config: DownstreamConfig, lanes: int, dt: float, rng: np.random.Generator) -> None:
        self.config, self.dt = config, dt
        self._state = rng.standard_normal(1 + lanes)  # common + per lane, unit OU
        self.speed = np.full(lanes, config.speed_mean_mps)
        self.by_index = np.concatenate([self.speed, self.speed[-1:], np.full(11, self.speed[0])])
        self.update(rng, frame=0, first=True)

    def update(self, rng: np.random.Generator, frame: int, first: bool = False) -> None:
        """Advance the process (on every ``UPDATE_EVERY``-th frame; ``first``: only set the speeds)."""
        ds = self.config
        if ds.speed_std_mps == 0:
            return
        if not first and frame % UPDATE_EVERY:
            return
        decay = np.exp(-self.dt * UPDATE_EVERY / ds.time_constant_s)
        if not first:
            self._state = decay * self._state + np.sqrt(1 - decay**2) * rng.standard_normal(len(self._state))
        c = ds.lane_correlation
        z = np.sqrt(c) * self._state[0] + np.sqrt(1 - c) * self._state[1:]
        self.speed = np.maximum(ds.speed_mean_mps + ds.speed_std_mps * z, ds.speed_min_mps)
        self.by_index = np.concatenate([self.speed, self.speed[-1:], np.full(11, self.speed[0])])
