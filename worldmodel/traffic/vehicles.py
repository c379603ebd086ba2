"""The simulator's vehicle array: one column per vehicle, one row per field, and the draw of new bots.

``TrafficSimulation`` keeps every vehicle in a ``[N_FIELDS, capacity]`` float64 array; the rows below name
its fields (position, size, driver parameters, lane-change state, last action).
"""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.drivers import turn_limit_rad
from worldmodel.traffic.scenario import Scenario

# Rows of the vehicle array (one column per vehicle).
(ID, X, Y, PSI, V, LENGTH, WIDTH, KIND, LANE, ORIGIN, V0, HEADWAY, S0, AMAX, BCOMF, POLITE, THRESH,
 NOISE, COOLDOWN, CONTROLLED, ACCEL, CURV, SPAWN_FRAME, MAX_HEADING, WANDER) = range(25)  # fmt: skip
N_FIELDS = 25
#: Driver parameters ``place_bots`` may set, by name.
PARAMETER_ROWS = {"v0": V0, "headway": HEADWAY, "s0": S0, "amax": AMAX, "bcomf": BCOMF, "polite": POLITE,
                  "thresh": THRESH, "width": WIDTH}  # fmt: skip


def draw_vehicles(rng: np.random.Generator, scenario: Scenario, k: int) -> np.ndarray:
    """Attributes of ``k`` new bots ``[N_FIELDS, k]``: kind, size and driver parameters drawn from the
    scenario's populations (position, speed and id are filled at insertion)."""
    kinds, dr, c = scenario.vehicles, scenario.drivers, np.zeros((N_FIELDS, k))
    shares = np.array([vk.share for vk in kinds], dtype=np.float64)
    kind = rng.choice(len(kinds), size=k, p=shares / shares.sum())
    c[KIND] = kind
    for i, vk in enumerate(kinds):
        sel = kind == i
        c[LENGTH, sel] = vk.length_m.sample(rng, int(sel.sum()))
        c[WIDTH, sel] = vk.width_m.sample(rng, int(sel.sum()))
    accel_scale = np.array([vk.max_accel_scale for vk in kinds])[kind]
    speed_scale = np.array([vk.desired_speed_scale for vk in kinds])[kind]
    c[V0] = dr.desired_speed_factor.sample(rng, k) * scenario.road.speed_limit_mps * speed_scale
    c[HEADWAY] = dr.time_headway_s.sample(rng, k)
    c[S0] = dr.min_gap_m.sample(rng, k)
    c[AMAX] = dr.max_accel_mps2.sample(rng, k) * accel_scale
    c[BCOMF] = dr.comfort_decel_mps2.sample(rng, k)
    c[POLITE] = dr.politeness.sample(rng, k)
    c[THRESH] = dr.change_threshold_mps2.sample(rng, k)
    c[NOISE] = rng.standard_normal(k) * scenario.noise.accel_std_mps2
    c[WANDER] = rng.standard_normal(k) * scenario.noise.lateral_std_m
    c[MAX_HEADING] = turn_limit_rad(c[LENGTH])
    return c
