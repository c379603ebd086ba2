"""Traffic statistics of the recorded section: the realism summary of a simulation run."""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.road import Road


class SectionStats:
    """Accumulates, step by step, what a detector over the recorded section would measure.

    Speeds: every vehicle-frame with its centre in the section (controlled cars excluded). Flow: crossings
    of the section's middle line per mainline lane. Lane changes: those that start inside the section.
    Merges: completed ramp -> mainline changes anywhere. ``reset_counts()`` discards the warm-up.
    """

    def __init__(self, road: Road, dt: float):
        self.road, self.dt = road, dt
        self.section = road.config.section_m
        self.middle = 0.5 * (self.section[0] + self.section[1])
        self.reset_counts()

    def reset_counts(self) -> None:
        self.steps = 0
        self.speed_sum = 0.0
        self.speed_sq_sum = 0.0
        self.vehicle_frames = 0
        self.crossings = np.zeros(self.road.lanes, dtype=np.int64)
        self.lane_changes = 0
        self.merges = 0
        self.aborted_lane_changes = 0
        self.collisions = 0
        self.spawned = 0
        self.arrivals = 0
        self.vehicles_sum = 0
        self.backlog_sum = 0
        self.backlog_max = 0
        self.backlog_last = 0

    def update(
        self, x_old: np.ndarray, x: np.ndarray, v: np.ndarray, lane: np.ndarray, controlled: np.ndarray | None
    ) -> None:
        """One step of cars ``[N]``: positions [m] before and after, speeds [m/s], lanes; ``controlled``: bool
        ``[N]`` (None: no controlled car)."""
        inside = (x >= self.section[0]) & (x <= self.section[1])
        if controlled is not None:
            inside &= ~controlled
        vs = v[inside]
        self.speed_sum += float(vs.sum())
        self.speed_sq_sum += float(np.dot(vs, vs))
        self.vehicle_frames += len(vs)
        crossed = (x_old < self.middle) & (x >= self.middle)
        if not crossed.any():
            return
        crossed &= (lane >= 0) & (lane < self.road.lanes)
        if controlled is not None:
            crossed &= ~controlled
        if crossed.any():
            self.crossings += np.bincount(lane[crossed].astype(np.int64), minlength=self.road.lanes)

    def record_lane_changes(self, x: np.ndarray) -> None:
        """Lane changes starting at positions ``x`` [m]; those inside the section are counted."""
        inside = (x >= self.section[0]) & (x <= self.section[1])
        self.lane_changes += int(inside.sum())

    def record_aborted(self, count: int) -> None:
        self.aborted_lane_changes += count

    def record_merges(self, origin: np.ndarray, target: np.ndarray, mainline_lanes: int) -> None:
        self.merges += int(((origin >= mainline_lanes) & (target < mainline_lanes)).sum())

    def record_collisions(self, count: int) -> None:
        self.collisions += count

    def record_arrivals(self, count: int) -> None:
        """Vehicles of the stated demand that arrived at the entries (they enter when there is a gap)."""
        self.arrivals += count

    def record_step(self, vehicles: int, backlog: int, spawned: int) -> None:
        self.steps += 1
        self.vehicles_sum += vehicles
        self.backlog_sum += backlog
        self.backlog_max = max(self.backlog_max, backlog)
        self.backlog_last = backlog
        self.spawned += spawned

    def summary(self) -> dict:
        """The realism summary (JSON-ready)."""
        hours = max(self.steps * self.dt, 1e-9) / 3600.0
        mean = self.speed_sum / max(self.vehicle_frames, 1)
        var = max(self.speed_sq_sum / max(self.vehicle_frames, 1) - mean**2, 0.0)
        passing = int(self.crossings.sum())
        return {
            "simulated_s": round(self.steps * self.dt, 3),
            "vehicles_mean": round(self.vehicles_sum / max(self.steps, 1), 2),
            "vehicles_spawned": self.spawned,
            "vehicles_passing": passing,
            "mean_speed_mps": round(mean, 3),
            "speed_std_mps": round(float(np.sqrt(var)), 3),
            "flow_veh_per_h_per_lane": round(passing / hours / self.road.lanes, 1),
            "flow_per_lane": [round(float(c) / hours, 1) for c in self.crossings],
            "lane_changes": self.lane_changes,
            "lane_changes_per_vehicle": round(self.lane_changes / max(passing, 1), 3),
            "aborted_lane_changes": self.aborted_lane_changes,
            "merges": self.merges,
            "collisions": self.collisions,
            "collisions_per_1000_vehicles": round(1000.0 * self.collisions / max(self.spawned, 1), 3),
            "backlog_mean": round(self.backlog_sum / max(self.steps, 1), 2),
            "backlog_max": self.backlog_max,
            "backlog_final": self.backlog_last,
            "demand_arrived": self.arrivals,
            "demand_entered_fraction": round(self.spawned / self.arrivals, 3) if self.arrivals else None,
        }
