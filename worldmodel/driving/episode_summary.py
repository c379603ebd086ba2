"""The summary of a closed-loop evaluation (step 5 of ``worldmodel.driving.closed_loop``): rates with their
Wilson intervals and means over the episode records, and the records as CSV.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from worldmodel.costs import COST_NAMES
from worldmodel.data.hdf5 import AtomicPath

#: Wilson interval z for 95 %.
Z_95 = 1.959964
#: The events that end an episode, in the order of the summary's histogram.
EVENTS = ("arrived", "collision_ahead", "collision_behind", "offroad", "stuck", "timeout", "end_of_data")
#: The keys of an episode record that ``summarise`` does not treat as driver diagnostics.
RECORD_KEYS = ("vehicle", "trajectories", "recorded_id", "event", "success", "rear_ended_not_at_fault",
               "success_not_at_fault", "stuck", "distance_m", "steps", "recorded_steps", "time_s",
               "collision_ahead", "collision_behind", "offroad", "speed_mps", "recorded_speed_mps", "lag_m",
               "lateral_offset_m")  # fmt: skip


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n`` (``(0, 1)`` when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(records: list[dict]) -> dict:
    """Rates and means over episode records (costs and diagnostics: mean over episodes of their
    per-episode means; None where there is no episode)."""
    n = len(records)

    def rate(key: str) -> float | None:
        return sum(bool(r[key]) for r in records) / n if n else None

    def mean(key: str) -> float | None:
        values = [r[key] for r in records if key in r]
        return float(np.mean(values)) if values else None

    def ci95(key: str) -> list[float]:
        return list(wilson_interval(sum(bool(r[key]) for r in records), n))

    standard = set(RECORD_KEYS) | {f"cost_{c}" for c in COST_NAMES}
    extra = sorted({k for r in records for k in r} - standard)
    events = Counter(r["event"] for r in records)
    return {
        "episodes": n,
        "success_rate": rate("success"),
        "success_rate_ci95": ci95("success"),
        "success_not_at_fault_rate": rate("success_not_at_fault"),
        "success_not_at_fault_rate_ci95": ci95("success_not_at_fault"),
        "rear_ended_not_at_fault_rate": rate("rear_ended_not_at_fault"),
        "mean_distance_m": mean("distance_m"),
        "collision_rate": (rate("collision_ahead") + rate("collision_behind")) if n else None,
        "collision_ahead_rate": rate("collision_ahead"),
        "collision_behind_rate": rate("collision_behind"),
        "offroad_rate": rate("offroad"),
        "stuck_rate": rate("stuck"),
        "mean_costs": {name: mean(f"cost_{name}") for name in COST_NAMES},
        "events": {name: events.pop(name, 0) for name in EVENTS} | dict(sorted(events.items())),
        "mean_steps": mean("steps"),
        "diagnostics": {name: mean(name) for name in extra},
    }


def write_csv(records: list[dict], path: str | os.PathLike) -> Path:
    """One row per episode record, atomically."""
    atomic = AtomicPath(path)
    columns = list(dict.fromkeys(k for r in records for k in r))
    try:
        with open(atomic.tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
        atomic.commit()
    except BaseException:
        atomic.abort()
        raise
    return atomic.path
