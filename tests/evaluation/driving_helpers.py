"""A micro driving dataset for closed-loop evaluation tests: two short recordings of the ``tiny`` scenario
(``trajectories-0.h5``, ``trajectories-1.h5``, with the bots' exact actions) extracted into ``episodes.h5``,
laid out like ``datasets/<name>/`` (so episode ids of the second recording are offset by ``id_stride``);
and a hand-written recording of a braking leader."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.record import RecordConfig, record
from worldmodel.data.trajectories import TrajectoryWriter
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RoadConfig


def make_driving_dataset(folder: Path, seconds: float = 30.0, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """Record ``seconds`` of the tiny scenario per seed (after a 20 s warm-up) and extract the episodes.
    With seeds (0, 1) and 30 s: ~74 cars, of which ~41 train and ~7 test cars are evaluated."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"trajectories-{seed}.h5"
        record(RecordConfig(scenario="tiny", minutes=seconds / 60.0, warmup_s=20.0, seed=seed, progress=False), path)
        paths.append(path)
    extract(paths, folder / "episodes.h5", ExtractConfig(workers=1, progress=False))
    return folder


def write_braking_leader(path: Path, speed_mps: float = 10.0, brake_at_s: float = 3.0, decel_mps2: float = 2.0,
                         frames: int = 200) -> Path:  # fmt: skip
    """A hand-written 1-lane recording: car 1 starts at x = 60 m, car 2 25 m behind it; both drive at
    ``speed_mps``, brake at ``decel_mps2`` from ``brake_at_s`` to a stop and stand (car 2 stops 25 m behind).
    Driving car 2 at constant speed runs into car 1; a car-follower stops behind it."""
    road = Road(RoadConfig(lanes=1, lane_width_m=3.7, length_m=300.0, section_m=(0.0, 300.0),
                           evaluated_m=(10.0, 290.0), speed_limit_mps=20.0, ramps=()))  # fmt: skip
    t = np.arange(frames) * 0.1
    speed = np.clip(speed_mps - decel_mps2 * np.maximum(t - brake_at_s, 0.0), 0.0, None)
    travelled = np.concatenate([[0.0], np.cumsum(speed[:-1] * 0.1)])
    with TrajectoryWriter(path, road.to_dict(), "test braking leader", ["car"]) as w:
        for vid, x0 in ((1, 60.0), (2, 35.0)):
            w.add_vehicle(vid, 4.5, 1.8, 0, {
                "frame": np.arange(frames), "x": x0 + travelled, "y": np.full(frames, 1.85), "vx": speed,
                "vy": np.zeros(frames), "lane": np.zeros(frames, np.int16),
            })  # fmt: skip
    return path
