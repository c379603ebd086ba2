"""The simulator step's neighbour search and car following as one compiled kernel (numba), bit for bit the
numpy path's arithmetic.

A step of ``TrafficSimulation`` is ~200 numpy calls on arrays of ~200 cars: their dispatch, not their
arithmetic, sets its speed. Steps 1-2 of the step (``LaneOccupancy``: the lanes every car's body reaches,
the sorted lane keys; the leader and the car after it of every entry; IDM behind both and behind a ramp's
end; the per-car minimum) are a third of those calls; here they are one call. The operations are those of
the numpy path, in the same order (IEEE arithmetic, no fast-math; ``x * x`` where numpy squares), so the
traffic is the same for the same seed, which a test holds to equality.

numba is optional: ``available()`` says whether it imports; without it the simulator takes the numpy path.
The first call compiles (a few seconds, cached on disk afterwards).
"""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.drivers import MIN_GAP_M
from worldmodel.traffic.occupancy import LANE_KEY, NO_LANE
from worldmodel.traffic.vehicles import (
    AMAX,
    BCOMF,
    COS,
    HALF_DIAGONAL,
    HALF_LENGTH,
    HALF_WIDTH,
    HEADWAY,
    LANE,
    LENGTH,
    S0,
    SIN,
    V0,
    WIDTH,
    V,
    X,
    Y,
)

try:
    from numba import njit
except ImportError:  # pragma: no cover - exercised where numba is not installed
    njit = None


def available() -> bool:
    """Whether the compiled kernel can run (numba imports)."""
    return njit is not None


def _idm(v, v0, gap, dv, headway, s0, amax, bcomf):
    """``drivers.idm_accel`` for one pair, with numpy's order of operations."""
    ratio = v / max(v0, 1e-3)
    ratio2 = ratio * ratio
    free = max(amax * (1.0 - ratio2 * ratio2), -bcomf)
    s_star = s0 + max(0.0, v * (headway + dv / (2.0 * np.sqrt(amax * bcomf))))
    interaction = s_star / max(gap, MIN_GAP_M)
    return free - amax * interaction * interaction


def _follow(d, f, lead, v0):
    """IDM acceleration of column ``f`` behind column ``lead`` at desired speed ``v0`` (``_follow`` of the
    simulation: the bumper gap ``x_l - x_f - (l_l + l_f) / 2``)."""
    xf, vf, lf = d[X, f], d[V, f], d[LENGTH, f]
    gap = d[X, lead] - xf - 0.5 * (d[LENGTH, lead] + lf)
    return _idm(vf, v0, gap, vf - d[V, lead], d[HEADWAY, f], d[S0, f], d[AMAX, f], d[BCOMF, f])


def _neighbours_and_following(d, n, on_road_only, courtesy_start, lane_width, total_lanes, lanes, sentinel_keys,
                              sentinel_offsets, speed_by_lane, downstream_start):  # fmt: skip
    """Steps 1-2 of the simulation's step for cars ``[:n]`` of the vehicle array ``d`` (its stand-in columns
    after them set). ``on_road_only``: cars in ``NO_LANE`` are listed in no other lane (a controlled car is on
    the road); the rest as ``LaneOccupancy`` and ``TrafficSimulation.step`` take them.

    Returns ``keys`` [n + E] (own entries, then the extra ones), ``sorted_keys``, ``sorted_index`` [n + E + S],
    ``extra_idx``, ``extra_lane`` [E], ``leader`` [n + E] (the nearest entry ahead of each entry), ``a_own``
    [n] (IDM in the own lane: the leader and the car after it) and ``accel`` [n] (also behind the leaders of
    the extra lanes and, for ramp cars, behind their lane's end)."""
    # -- LaneOccupancy: the lowest and highest lane the body reaches; the courtesy listing of ramp cars
    span = np.empty((2, n))
    listed = np.zeros((3, n), dtype=np.bool_)
    for i in range(n):
        lane = d[LANE, i]
        reach = 0.5 * (d[LENGTH, i] * abs(d[SIN, i]) + d[WIDTH, i] * d[COS, i])
        lo = min(max(np.floor((d[Y, i] - reach) / lane_width), 0.0), total_lanes - 1.0)
        hi = min(max(np.floor((d[Y, i] + reach) / lane_width), 0.0), total_lanes - 1.0)
        span[0, i], span[1, i] = lo, hi
        on_road = not on_road_only or int(lane) != NO_LANE
        listed[0, i] = lo != lane and on_road
        listed[1, i] = hi != lane and lo != hi and on_road
        listed[2, i] = d[X, i] > courtesy_start[int(lane)] and lo >= lanes
    e = 0
    for r in range(3):
        for i in range(n):
            if listed[r, i]:
                e += 1
    extra_idx = np.empty(e, dtype=np.int64)
    extra_lane = np.empty(e)
    k = 0
    for r in range(3):
        for i in range(n):
            if listed[r, i]:
                extra_idx[k] = i
                extra_lane[k] = span[r, i] if r < 2 else d[LANE, i] - 1.0
                k += 1
    m = n + e
    keys = np.empty(m + len(sentinel_keys))
    index = np.empty(m + len(sentinel_keys), dtype=np.int64)
    for i in range(n):
        keys[i] = d[LANE, i] * LANE_KEY + d[X, i]
        index[i] = i
    for j in range(e):
        keys[n + j] = extra_lane[j] * LANE_KEY + d[X, extra_idx[j]]
        index[n + j] = extra_idx[j]
    for j in range(len(sentinel_keys)):
        keys[m + j] = sentinel_keys[j]
        index[m + j] = sentinel_offsets[j] + n
    order = np.argsort(keys, kind="mergesort")  # stable, as numpy's
    sorted_keys, sorted_index = keys[order], index[order]
    # -- leaders: the nearest entry ahead of every entry, and the one after it
    position = np.searchsorted(sorted_keys, keys[:m], side="right")
    after = np.searchsorted(sorted_keys, sorted_keys[position], side="right")
    leader = sorted_index[position]
    # -- IDM behind both (and a ramp car behind its lane's end) at the desired speed of the entry's car (in its
    #    own lane, capped in the downstream zone)
    v0 = np.empty(n)
    for i in range(n):
        v0[i] = min(d[V0, i], speed_by_lane[int(d[LANE, i])]) if d[X, i] > downstream_start else d[V0, i]
    a_all = np.empty(m)
    for j in range(m):
        f = j if j < n else extra_idx[j - n]
        a_all[j] = min(_follow(d, f, leader[j], v0[f]), _follow(d, f, sorted_index[after[j]], v0[f]))
    a_own = a_all[:n]
    accel = a_own.copy()
    for j in range(e):
        f = extra_idx[j]
        accel[f] = min(accel[f], a_all[n + j])
    for i in range(n):
        lane_i = int(d[LANE, i])
        if lane_i >= lanes:
            accel[i] = min(accel[i], _follow(d, i, n + 2 - lanes + lane_i, v0[i]))
    return keys[:m], sorted_keys, sorted_index, extra_idx, extra_lane, leader, a_own, accel


def _bands_apart(d, n, band_m, band_key):
    """``collisions.BandSweep.apart`` for cars ``[:n]`` of the vehicle array ``d``: True if no two boxes'
    bounding boxes overlap, proven by the band sweep (sorted by rear end: the answer does not depend on the
    order the numpy path tries first)."""
    if n < 2:
        return True
    lateral = np.empty(n)
    widest = -np.inf
    for i in range(n):
        lateral[i] = d[HALF_LENGTH, i] * abs(d[SIN, i]) + d[HALF_WIDTH, i]
        widest = max(widest, lateral[i])
    if not widest < 0.5 * band_m:
        return False
    rear = np.empty(2 * n)
    front = np.empty(2 * n)
    for i in range(n):
        first = np.floor((d[Y, i] - lateral[i]) / band_m)
        last = np.floor((d[Y, i] + lateral[i]) / band_m)
        keys = (first * band_key + d[X, i], last * band_key + d[X, i] if first != last else -1e9 - 100.0 * i)
        for k in range(2):
            rear[k * n + i] = keys[k] - d[HALF_DIAGONAL, i]
            front[k * n + i] = keys[k] + d[HALF_DIAGONAL, i]
    order = np.argsort(rear)
    reached = front[order[0]]
    for k in range(1, 2 * n):
        if not rear[order[k]] > reached:
            return False
        reached = max(reached, front[order[k]])
    return True


if njit is not None:
    _idm = njit(cache=True, inline="always")(_idm)
    _follow = njit(cache=True, inline="always")(_follow)
    neighbours_and_following = njit(cache=True)(_neighbours_and_following)
    bands_apart = njit(cache=True)(_bands_apart)
else:  # pragma: no cover
    neighbours_and_following = bands_apart = None

__all__ = ["available", "bands_apart", "neighbours_and_following"]
