"""The simulator's vehicle array: one column per vehicle, one row per field, and the draw of new bots.

``TrafficSimulation`` keeps every vehicle in a ``[N_FIELDS, capacity]`` float64 array; the rows below name
its fields (position, size, driver parameters, lane-change state, last action, and values derived from them
that the step would otherwise recompute: the heading's cosine and sine, the sines of the heading bounds).
"""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.drivers import keep_limit_rad, turn_limit_rad
from worldmodel.traffic.scenario import Scenario

# Rows of the vehicle array (one column per vehicle). Blocks the step reads together are adjacent: a leader's
# (X, V, LENGTH) and a follower's IDM fields (up to BCOMF); the action (ACCEL, CURV); the noises (NOISE, WANDER).
(X, V, LENGTH, HEADWAY, S0, AMAX, BCOMF, Y, PSI, WIDTH, ID, KIND, LANE, ORIGIN, V0, POLITE, THRESH,
 COOLDOWN, CONTROLLED, ACCEL, CURV, NOISE, WANDER, SPAWN_FRAME, MAX_HEADING,
 COS, SIN, SIN_TURN, SIN_KEEP, WANDER_BOUND, ACCEL_LIMIT, HALF_LENGTH, HALF_WIDTH, HALF_DIAGONAL) = range(34)  # fmt: skip
N_FIELDS = 34
#: ``HALF_WIDTH`` and ``HALF_DIAGONAL`` exceed the box's by this much [m]: bounds safe from rounding.
BOUND_MARGIN_M = 1e-6
LEADER_ROWS = slice(X, LENGTH + 1)  # X, V, LENGTH
FOLLOWER_ROWS = slice(X, BCOMF + 1)  # X, V, LENGTH, HEADWAY, S0, AMAX, BCOMF
#: Driver parameters ``place_bots`` may set, by name.
PARAMETER_ROWS = {"v0": V0, "headway": HEADWAY, "s0": S0, "amax": AMAX, "bcomf": BCOMF, "polite": POLITE,
                  "thresh": THRESH, "width": WIDTH}  # fmt: skip


def draw_vehicles(rng: np.random.Generator, scenario: Scenario, k: int) -> np.ndarray:
    """Attributes of ``k`` new bots ``[N_FIELDS, k]``: kind, size and driver parameters drawn from the
    scenario's populations (position, speed and id are filled at insertion)."""
    kinds, dr, c = scenario.vehicles, scenario.drivers, np.zeros((N_FIELDS, k))
    shares = np.array([vk.share for vk in kinds], dtype=np.float64)
    kind = choose(rng, shares / shares.sum(), k)
    c[KIND] = kind
    sel = [kind == i for i in range(len(kinds))]
    counts = [int(s.sum()) for s in sel]
    sizes = [(dist, count) for vk, count in zip(kinds, counts, strict=True) for dist in (vk.length_m, vk.width_m)]
    drivers = [dr.desired_speed_factor, dr.time_headway_s, dr.min_gap_m, dr.max_accel_mps2, dr.comfort_decel_mps2,
               dr.politeness, dr.change_threshold_mps2]  # fmt: skip
    draws = iter(sample_all(rng, sizes + [(dist, k) for dist in drivers], extra_normals=2 * k))
    for i in range(len(kinds)):
        c[LENGTH, sel[i]] = next(draws)
        c[WIDTH, sel[i]] = next(draws)
    accel_scale = np.array([vk.max_accel_scale for vk in kinds])[kind]
    speed_scale = np.array([vk.desired_speed_scale for vk in kinds])[kind]
    c[V0] = next(draws) * scenario.road.speed_limit_mps * speed_scale
    c[HEADWAY], c[S0] = next(draws), next(draws)
    c[AMAX] = next(draws) * accel_scale
    c[BCOMF], c[POLITE], c[THRESH] = next(draws), next(draws), next(draws)
    normals = next(draws)
    c[NOISE] = normals[:k] * scenario.noise.accel_std_mps2
    c[WANDER] = normals[k:] * scenario.noise.lateral_std_m
    c[MAX_HEADING] = turn_limit_rad(c[LENGTH])
    return c


def choose(rng: np.random.Generator, p: np.ndarray, k: int) -> np.ndarray:
    """``rng.choice(len(p), size=k, p=p)`` (int64 ``[k]``), the same draws without its checks of ``p``
    (a large share of the cost of admitting a car otherwise)."""
    cdf = p.cumsum()
    cdf /= cdf[-1]
    return cdf.searchsorted(rng.random(k), side="right")


def sample_all(rng: np.random.Generator, requests: list, extra_normals: int = 0) -> list[np.ndarray]:
    """``[dist.sample(rng, count) for dist, count in requests]`` and then ``rng.standard_normal(extra_normals)``:
    the same numbers from one call to the generator and one clip (``normal(mean, std)`` is ``mean + std * z``
    of the standard normal draws, in turn; for finite draws the clip is ``minimum(maximum(.))``)."""
    random = [(dist, count) for dist, count in requests if dist.std != 0]
    counts = [count for _, count in random]
    z = rng.standard_normal(sum(counts) + extra_normals)
    if random:
        mean, std, low, high = np.repeat(np.array([(d.mean, d.std, d.min, d.max) for d, _ in random]).T, counts, axis=1)
        drawn = np.minimum(np.maximum(mean + std * z[: len(mean)], low), high)
    out, start = [], 0
    for dist, count in requests:
        if dist.std == 0:
            out.append(dist.sample(rng, count))  # a constant: no draw
            continue
        out.append(drawn[start : start + count])
        start += count
    out.append(z[start:])
    return out


def derive(cols: np.ndarray, lane_width_m: float, wander_clearance_m: float) -> None:
    """Fill the derived rows of vehicles ``[N_FIELDS, k]`` in place: ``COS``, ``SIN`` of the heading;
    ``SIN_TURN``, ``SIN_KEEP``: sines of the heading bound while changing lanes (``MAX_HEADING``) and while
    keeping the lane (``drivers.heading_limit_rad``); ``WANDER_BOUND`` [m]: how far the lateral wander may
    take the car from its lane's centre, its side staying ``wander_clearance_m`` inside the lane;
    ``ACCEL_LIMIT``: the highest acceleration a bot applies (noise included) [m/s^2]; ``HALF_LENGTH``,
    ``HALF_WIDTH`` (+ ``BOUND_MARGIN_M``), ``HALF_DIAGONAL`` (+ ``BOUND_MARGIN_M``) of the box [m]."""
    cols[COS] = np.cos(cols[PSI])
    cols[SIN] = np.sin(cols[PSI])
    cols[SIN_TURN] = np.sin(cols[MAX_HEADING])
    cols[SIN_KEEP] = np.sin(np.minimum(cols[MAX_HEADING], keep_limit_rad(cols[LENGTH])))
    cols[WANDER_BOUND] = np.maximum(0.5 * (lane_width_m - cols[WIDTH]) - wander_clearance_m, 0.0)
    cols[ACCEL_LIMIT] = cols[AMAX] + 0.5
    cols[HALF_LENGTH] = 0.5 * cols[LENGTH]
    cols[HALF_WIDTH] = 0.5 * cols[WIDTH] + BOUND_MARGIN_M
    cols[HALF_DIAGONAL] = 0.5 * np.hypot(cols[LENGTH], cols[WIDTH]) + BOUND_MARGIN_M
