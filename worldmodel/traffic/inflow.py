"""Traffic entering the simulated road: the initial fill, and inflow from queues at the entries.

Entries: one per mainline lane (at x = 0), one per on-ramp (at its start). Vehicles arrive at each by a
Poisson process (the scenario's demand) and wait in the entry's queue until the entry has a safe gap; each
entry knows the next vehicle it will admit (drawn in advance, so the draws do not depend on the gaps).
"""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.drivers import clip
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import Scenario
from worldmodel.traffic.vehicles import HEADWAY, LANE, LENGTH, N_FIELDS, ORIGIN, S0, V0, V, X, Y, draw_vehicles


def initial_traffic(rng: np.random.Generator, scenario: Scenario, road: Road) -> np.ndarray:
    """Vehicles ``[F, k]`` that fill the mainline at the initial density: cars about ``1 / density`` apart,
    moved back where a long vehicle would not fit (bumper to bumper at least the car's standstill gap), each
    at the IDM speed that suits its gap to the car ahead. None (``k = 0``) at density 0."""
    density = scenario.demand.initial_density_veh_per_km_per_lane / 1000.0
    if density <= 0:
        return np.zeros((N_FIELDS, 0))
    spacing = 1.0 / density
    lanes, starts = [], []
    for lane in range(road.lanes):
        pos = np.arange(spacing * rng.uniform(0.2, 1.0), road.length_m - 10.0, spacing)
        lanes.append(np.full(len(pos), lane))
        starts.append(pos)
    lane, x = np.concatenate(lanes), np.concatenate(starts)
    c = draw_vehicles(rng, scenario, len(x))
    gap = np.full(len(x), spacing) - c[LENGTH]  # bumper to bumper; the first car of a lane: nobody ahead
    for k in np.unique(lane):
        cars = np.flatnonzero(lane == k)  # in increasing x
        half = 0.5 * c[LENGTH, cars]
        for a, b in zip(cars[:-1], cars[1:], strict=True):  # push each car ahead clear of the one behind
            x[b] = max(x[b], x[a] + 0.5 * (c[LENGTH, a] + c[LENGTH, b]) + c[S0, a] + 1.0)
        gap[cars[:-1]] = np.diff(x[cars]) - (half[:-1] + half[1:])
    keep = x < road.length_m - 10.0
    c = c[:, keep]
    c[X], c[LANE], c[ORIGIN] = x[keep], lane[keep], lane[keep]
    c[Y] = road.lane_center_y(lane[keep])
    c[V] = clip((gap[keep] - c[S0]) / c[HEADWAY], 0.0, c[V0])
    return c


class Inflow:
    """The entries of a road, their queues (``queue`` [entries]) and their next vehicles."""

    def __init__(self, scenario: Scenario, road: Road, dt: float) -> None:
        self.scenario, self.road = scenario, road
        n_ramps = len(scenario.road.ramps)
        self.entry_lane = np.concatenate([np.arange(road.lanes), road.lanes + np.arange(n_ramps)])
        self.entry_x = np.concatenate([np.zeros(road.lanes), [r.start_m for r in scenario.road.ramps]])
        rate_per_h = np.concatenate(
            [np.full(road.lanes, scenario.demand.mainline_veh_per_h_per_lane),
             [r.demand_veh_per_h for r in scenario.road.ramps]]
        )  # fmt: skip
        self.rate = rate_per_h / 3600.0 * dt  # expected arrivals per step
        self.queue = np.zeros(len(self.entry_lane), dtype=np.int64)
        self.pending = np.zeros((0, len(self.entry_lane)))

    def reset(self, rng: np.random.Generator) -> None:
        """Empty queues; draw the next vehicle of each entry."""
        self.queue = np.zeros(len(self.entry_lane), dtype=np.int64)
        self.pending = draw_vehicles(rng, self.scenario, len(self.entry_lane))  # [F, entries]

    def admit(self, rng: np.random.Generator, d: np.ndarray, n: int, steps: int) -> tuple[np.ndarray, int]:
        """Arrivals over ``steps`` steps join the queues; the queued vehicles whose entry has a safe gap among
        the cars ``d[:, :n]`` are admitted. Returns (the admitted vehicles ``[F, k]``, the number of arrivals)."""
        arrivals = rng.poisson(self.rate * steps)
        self.queue += arrivals
        waiting = np.nonzero(self.queue > 0)[0]
        if len(waiting) == 0:
            return self.pending[:, :0].copy(), int(arrivals.sum())
        cand = self.pending[:, waiting]
        lane = self.entry_lane[waiting].astype(np.float64)
        entry_x = self.entry_x[waiting]
        x_new = entry_x + 0.5 * cand[LENGTH]
        # the nearest car ahead of the entry point in the entry lane (or still partly in it): [entries, n]
        in_lane = (d[LANE, :n][None, :] == lane[:, None]) | (d[ORIGIN, :n][None, :] == lane[:, None])
        rear = d[X, :n] - 0.5 * d[LENGTH, :n]
        ahead = in_lane & (d[X, :n][None, :] >= entry_x[:, None])
        rear_ahead = np.where(ahead, rear[None, :], np.inf)
        lead = np.argmin(rear_ahead, axis=1) if n else np.zeros(len(waiting), dtype=np.int64)
        gap = (rear_ahead[np.arange(len(waiting)), lead] if n else np.full(len(waiting), np.inf)) - x_new
        gap = gap - 0.5 * cand[LENGTH]
        behind = in_lane & (d[X, :n][None, :] < entry_x[:, None])
        front_behind = np.where(behind, (d[X, :n] + 0.5 * d[LENGTH, :n])[None, :], -np.inf)
        rear_gap = x_new - 0.5 * cand[LENGTH] - (front_behind.max(axis=1) if n else -np.inf)
        v_lead = np.where(np.isfinite(gap), d[V, lead] if n else np.inf, np.inf)
        v_ins = np.minimum(np.minimum(cand[V0], v_lead + 1.0), np.maximum(gap - cand[S0], 0.0) / cand[HEADWAY])
        ok = (gap >= cand[S0] + 1.0) & (rear_gap >= 1.0)
        entries = waiting[ok]
        new = cand[:, ok]
        new[X], new[V], new[LANE], new[ORIGIN] = x_new[ok], v_ins[ok], lane[ok], lane[ok]
        new[Y] = self.road.lane_center_y(lane[ok])
        if len(entries):
            self.queue[entries] -= 1
            self.pending[:, entries] = draw_vehicles(rng, self.scenario, len(entries))
        return new, int(arrivals.sum())
