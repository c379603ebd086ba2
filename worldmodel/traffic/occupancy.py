"""Lane occupancy: which car is ahead of (or behind) a position in a lane, for all queries at once.

A car occupies its lane (during a lane change: its target lane) and every lane its body still reaches (the
lane it is leaving; a long truck at an angle overlaps its neighbour): those extra entries (``extra_idx``,
``extra_lane``) let the car also follow the leaders there. Once its body has left a lane it no longer waits
for that lane's traffic. Cars are sorted by the key ``lane * LANE_KEY + x``; a query is one
``searchsorted``.
"""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.drivers import clip
from worldmodel.traffic.road import Road

LANE_KEY = 1.0e5  # lane * LANE_KEY + x orders cars by lane, then position (x stays far below this)
NO_LANE = -10  # lane of a controlled car off the road: a key nobody queries
COURTESY_ZONE_M = 40.0  # mainline cars yield to ramp cars within this distance of the ramp's end [m]


class LaneOccupancy:
    """The sorted lane keys of cars ``[n]`` at one instant (``lane``, ``x``, ``y`` [m], ``psi`` [rad],
    ``length``, ``width`` [m]; ``lane_end`` [m] per lane, inf on the mainline)."""

    def __init__(self, road: Road, lane_end: np.ndarray, lane, x, y, psi, length, width) -> None:
        n = len(lane)
        reach = 0.5 * (length * np.abs(np.sin(psi)) + width * np.cos(psi))
        top = road.total_lanes - 1
        lo = clip(np.floor((y - reach) / road.lane_width_m), 0, top)
        hi = clip(np.floor((y + reach) / road.lane_width_m), 0, top)
        on_road = lane != NO_LANE
        extra_idx, extra_lane = [], []
        for other, also_new in ((lo, True), (hi, lo != hi)):
            sel = np.nonzero((other != lane) & also_new & on_road)[0]
            extra_idx.append(sel)
            extra_lane.append(other[sel])
        # courtesy (zipper merge): a ramp car near the end of its lane is also listed in the mainline lane
        # beside it, so the cars there let it in instead of streaming past a car that cannot move sideways
        if road.ramps:
            end = lane_end[clip(lane, 0, top).astype(np.int64)]
            waiting = np.nonzero((lane >= road.lanes) & (x > end - COURTESY_ZONE_M) & (lo >= road.lanes))[0]
            extra_idx.append(waiting)
            extra_lane.append(lane[waiting] - 1)
        self.extra_idx = np.concatenate(extra_idx)
        """[E] cars listed in a lane besides their own."""
        self.extra_lane = np.concatenate(extra_lane)
        """[E] that lane."""
        keys = np.concatenate([lane * LANE_KEY + x, self.extra_lane * LANE_KEY + x[self.extra_idx]])
        idx = np.concatenate([np.arange(n), self.extra_idx])
        order = np.argsort(keys, kind="stable")
        self._keys, self._idx = keys[order], idx[order]
        self._lane = np.concatenate([lane, self.extra_lane])[order]

    def neighbour(self, lane: np.ndarray, x: np.ndarray, ahead: bool) -> tuple[np.ndarray, np.ndarray]:
        """Nearest car strictly ahead (or at/behind, excluding an exact key match ahead) in ``lane`` of
        position ``x``: (car index, found)."""
        keys, idx = self._keys, self._idx
        m = len(keys)
        q = lane * LANE_KEY + x
        if ahead:
            pos = np.searchsorted(keys, q, side="right")
        else:
            pos = np.searchsorted(keys, q, side="left") - 1
        if m == 0:
            return np.zeros(len(q), dtype=np.int64), np.zeros(len(q), dtype=bool)
        safe = pos % m  # -1 -> m - 1 and m -> 0; both rejected below unless in the same lane by chance
        found = (self._lane[safe] == lane) & (pos >= 0) & (pos < m)
        return idx[safe], found
