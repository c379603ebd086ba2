"""LaneOccupancy against a plain search over every car, and the band sweep against the exact collision test."""

import numpy as np
import pytest

from worldmodel.traffic.collisions import BandSweep, overlapping_pairs
from worldmodel.traffic.occupancy import AHEAD_NONE, BEHIND_NONE, LANE_KEY, NO_LANE, LaneOccupancy
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RampConfig, RoadConfig

ROAD = Road(RoadConfig(lanes=3, lane_width_m=3.7, length_m=400.0, section_m=(50.0, 350.0), evaluated_m=(60.0, 340.0),
                       ramps=(RampConfig(start_m=100.0, end_m=250.0, demand_veh_per_h=0.0),)))  # fmt: skip


def random_cars(rng, n):
    lane = rng.integers(0, ROAD.total_lanes, n).astype(np.float64)
    lane[rng.random(n) < 0.05] = NO_LANE
    x = np.round(rng.uniform(0, 400, n), 1)  # some cars share a position
    y = (np.maximum(lane, 0) + 0.5) * 3.7 + rng.normal(0, 0.8, n)
    psi = rng.normal(0, 0.1, n)
    return lane, x, y, psi, rng.uniform(4, 15, n), rng.uniform(1.6, 2.5, n)


@pytest.mark.parametrize("seed", range(5))
def test_queries_equal_a_plain_search(seed):
    rng = np.random.default_rng(seed)
    n = 60
    lane, x, y, psi, length, width = random_cars(rng, n)
    courtesy = np.concatenate([ROAD.ramp_end_m(np.arange(ROAD.total_lanes)) - 40.0, np.full(11, np.inf)])
    occ = LaneOccupancy(ROAD, courtesy, lane, x, y, np.sin(psi), np.cos(psi), length, width, lane.astype(np.intp),
                        lane != NO_LANE)  # fmt: skip
    entry_car = np.concatenate([np.arange(n), occ.extra_idx])
    entry_key = occ.keys
    q_lane = rng.integers(-1, ROAD.total_lanes + 1, 200).astype(np.float64)
    q_lane[:10] = NO_LANE
    q_key = q_lane * LANE_KEY + np.round(rng.uniform(-10, 410, 200), 1)
    ahead, _ = occ.ahead(q_key)
    behind = occ.behind(q_key)
    for k, lane_k, a, b in zip(q_key, q_lane, ahead, behind, strict=True):
        same = np.round(entry_key / LANE_KEY) == lane_k  # entries in the query's lane
        up = same & (entry_key > k)
        down = same & (entry_key < k)
        assert a == (entry_car[up][np.argmin(entry_key[up])] if up.any() else n + AHEAD_NONE)
        if down.any():  # the last entry behind (an equal key counts as ahead)
            last = np.flatnonzero(down)[np.argsort(entry_key[down], kind="stable")[-1]]
            assert b == entry_car[last]
        else:
            assert b == n + BEHIND_NONE


@pytest.mark.parametrize("seed", range(20))
def test_band_sweep_never_misses_a_contact(seed):
    rng = np.random.default_rng(seed)
    n = 80
    lane, x, y, psi, length, width = random_cars(rng, n)
    x = rng.uniform(0, 400 if seed % 2 else 100, n)  # dense (contacts) or sparse
    sweep = BandSweep(3.7)
    half_width = 0.5 * width + 1e-6
    half_diagonal = 0.5 * np.hypot(length, width) + 1e-6
    for _ in range(2):  # the second call starts from the remembered order
        apart = sweep.apart(x, y, np.sin(psi), 0.5 * length, half_width, half_diagonal)
        pairs = overlapping_pairs(np.arange(n), x, y, psi, length, width)
        assert not (apart and len(pairs))


def test_band_sweep_proves_lane_traffic_apart():
    x = np.tile(np.arange(0.0, 400.0, 8.0), 3)
    y = np.repeat([1.85, 5.55, 9.25], len(x) // 3)
    length, width = np.full(len(x), 4.5), np.full(len(x), 1.8)
    assert BandSweep(3.7).apart(x, y, np.zeros(len(x)), 0.5 * length, 0.5 * width + 1e-6,
                                0.5 * np.hypot(length, width) + 1e-6)  # fmt: skip
