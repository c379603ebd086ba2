"""Lane occupancy: which car is ahead of (or behind) a position in a lane, for all queries at once.

A car occupies its lane (during a lane change: its target lane) and every lane its body still reaches (the
lane it is leaving; a long truck at an angle overlaps its neighbour): those extra entries (``extra_idx``,
``extra_lane``) let the car also follow the leaders there. Once its body has left a lane it no longer waits
for that lane's traffic. Cars are sorted by the key ``lane * LANE_KEY + x``; a query is one
``searchsorted``.

Every lane a query can name (``NO_LANE``, -1 .. total_lanes) is bracketed by sentinel keys, so a query never
needs a check of the lane it landed in: a query that finds no car lands on a sentinel, which stands for
column ``n`` (``AHEAD_NONE``: nobody ahead) or ``n + 1`` (``BEHIND_NONE``: nobody behind) of the
simulation's vehicle array, where it keeps a car at x = +inf or -inf (``simulation.py``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from worldmodel.traffic.road import Road

LANE_KEY = 1.0e5  # lane * LANE_KEY + x orders cars by lane, then position (x stays far below this)
NO_LANE = -10  # lane of a controlled car off the road: a key nobody queries
COURTESY_ZONE_M = 40.0  # mainline cars yield to ramp cars within this distance of the ramp's end [m]
AHEAD_NONE, BEHIND_NONE = 0, 1  # offsets from n of the columns that stand for "no car" ahead / behind
# sentinel positions within a lane's key range: the lane's cars lie in (-_EDGE, _EDGE) * LANE_KEY
_EDGE, _BEYOND = 0.25, 0.3


@lru_cache(maxsize=16)
def sentinels(total_lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``[S]`` and "no car" offsets ``[S]`` of the sentinels of every lane a query can name: one before
    the lane's cars (nobody behind) and two after them (nobody ahead; the second answers the query for the
    car after "nobody")."""
    lanes = np.concatenate([[NO_LANE], np.arange(-1, total_lanes + 1)]).astype(np.float64)
    keys = np.concatenate([(lanes - _EDGE) * LANE_KEY, (lanes + _EDGE) * LANE_KEY, (lanes + _BEYOND) * LANE_KEY])
    offsets = np.repeat([BEHIND_NONE, AHEAD_NONE, AHEAD_NONE], len(lanes))
    keys.flags.writeable = offsets.flags.writeable = False  # shared by every instance
    return keys, offsets


class LaneOccupancy:
    """The sorted lane keys of cars ``[n]`` at one instant.

    ``lane``, ``x``, ``y`` [m], ``sin_psi``, ``cos_psi`` (of the heading), ``length``, ``width`` [m]: arrays
    ``[n]``; ``lane_index``: ``lane`` as integers; ``courtesy_start``: where the courtesy zone of each lane
    starts [m], indexed by lane (inf on the mainline and at ``NO_LANE``); ``on_road``: bool ``[n]``, False
    for cars in ``NO_LANE`` (None: all on the road). Index answers are columns: ``< n`` a car, ``>= n`` none
    (``AHEAD_NONE``, ``BEHIND_NONE`` after ``n``).
    """

    def __init__(
        self, road: Road, courtesy_start: np.ndarray, lane, x, y, sin_psi, cos_psi, length, width,
        lane_index: np.ndarray, on_road: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        n = len(lane)
        reach = 0.5 * (length * np.abs(sin_psi) + width * cos_psi)
        # candidate extra lanes [3, n]: the lowest and the highest lane the body reaches; the lane left of a
        # ramp lane (courtesy, below)
        other = np.empty((3, n))
        span = other[:2]
        np.subtract(y, reach, out=span[0])
        np.add(y, reach, out=span[1])
        np.divide(span, road.lane_width_m, out=span)
        np.floor(span, out=span)
        np.maximum(span, 0.0, out=span)
        np.minimum(span, road.total_lanes - 1.0, out=span)
        np.subtract(lane, 1.0, out=other[2])
        listed = np.empty((3, n), dtype=bool)
        np.not_equal(span, lane, out=listed[:2])
        listed[1] &= span[0] != span[1]
        if on_road is not None:
            listed[:2] &= on_road
        # courtesy (zipper merge): a ramp car near the end of its lane is also listed in the mainline lane
        # beside it, so the cars there let it in instead of streaming past a car that cannot move sideways
        np.greater(x, courtesy_start[lane_index], out=listed[2])
        listed[2] &= span[0] >= road.lanes
        which, extra_idx = listed.nonzero()  # all lo entries, then all hi entries, then the courtesy ones
        extra_lane = other[which, extra_idx]
        self.n = n
        self.extra_idx = extra_idx
        """[E] cars listed in a lane besides their own."""
        self.extra_lane = extra_lane
        """[E] that lane."""
        sentinel_keys, sentinel_offsets = sentinels(road.total_lanes)
        keys = np.concatenate([lane * LANE_KEY + x, extra_lane * LANE_KEY + x[extra_idx], sentinel_keys])
        self.keys = keys[: n + len(extra_idx)]
        """[n + E] the key of every entry: each car in its own lane, then the extra entries."""
        idx = np.concatenate([np.arange(n), extra_idx, sentinel_offsets + n])
        order = np.argsort(keys, kind="stable")
        self._keys, self._idx = keys[order], idx[order]

    @classmethod
    def from_sorted(cls, keys: np.ndarray, sorted_keys: np.ndarray, sorted_index: np.ndarray, extra_idx: np.ndarray,
                    extra_lane: np.ndarray) -> LaneOccupancy:  # fmt: skip
        """The occupancy made elsewhere (``compiled.neighbours_and_following``): the entries' ``keys`` [n + E]
        (own, then extra), all keys sorted with the sentinels' [n + E + S] and their columns, the extra
        entries' cars and lanes [E]."""
        occ = cls.__new__(cls)
        occ.n = len(keys) - len(extra_idx)
        occ.extra_idx, occ.extra_lane, occ.keys = extra_idx, extra_lane, keys
        occ._keys, occ._idx = sorted_keys, sorted_index
        return occ

    def ahead(self, keys: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The nearest entry strictly ahead of each query key ``lane * LANE_KEY + x`` [Q]: (its column [Q],
        written to ``out`` if given; its position in the sorted order [Q], for ``after``)."""
        pos = np.searchsorted(self._keys, keys, side="right")
        return self._idx.take(pos, out=out), pos

    def after(self, pos: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The column [Q] of the nearest entry strictly ahead of the entries at sorted positions ``pos``
        (from ``ahead``): the car after the leader."""
        return self._idx.take(np.searchsorted(self._keys, self._keys[pos], side="right"), out=out)

    def behind(self, keys: np.ndarray) -> np.ndarray:
        """The column [Q] of the nearest entry strictly behind each query key (an entry of an equal key, such
        as the querying car's own, is not behind it)."""
        return self._idx[np.searchsorted(self._keys, keys, side="left") - 1]
