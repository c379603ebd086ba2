"""Fixtures shared across the test tree: small trajectories.h5 recordings for replay tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fm_helpers import trained_micro_run, write_micro_episodes

from worldmodel.data.record import RecordConfig, record
from worldmodel.data.trajectories import TrajectoryWriter
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RoadConfig

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # `pytest -n 2` on 2 cores: one thread per worker, not two workers x all cores


def record_simulation(path: Path, scenario: str = "tiny", warmup_s: float = 20.0, seconds: float = 25.0,
                      seed: int = 0) -> Path:  # fmt: skip
    """Record the vehicles in the road's section, every frame, with the bots' exact actions."""
    record(RecordConfig(scenario=scenario, minutes=seconds / 60.0, warmup_s=warmup_s, seed=seed, progress=False), path)
    return path


def write_following_pair(path: Path, gap_m: float = 8.0, speed_mps: float = 10.0, frames: int = 150) -> Path:
    """A hand-written 1-lane recording: car 1 ahead, car 2 following it ``gap_m`` (centre to centre)
    behind, both at a constant ``speed_mps``, from x = 40 m (car 1). No heading column."""
    road = Road(RoadConfig(lanes=1, lane_width_m=3.7, length_m=300.0, section_m=(0.0, 300.0),
                           evaluated_m=(10.0, 290.0), speed_limit_mps=20.0, ramps=()))  # fmt: skip
    t = np.arange(frames)
    with TrajectoryWriter(path, road.to_dict(), "test following pair", ["car"]) as w:
        for vid, x0 in ((1, 40.0), (2, 40.0 - gap_m)):
            w.add_vehicle(vid, 4.5, 1.8, 0, {
                "frame": t, "x": x0 + speed_mps * 0.1 * t, "y": np.full(frames, 1.85), "vx": np.full(frames, speed_mps),
                "vy": np.zeros(frames), "lane": np.zeros(frames, np.int16),
            })  # fmt: skip
    return path


@pytest.fixture(scope="session")
def tiny_recording(tmp_path_factory) -> Path:
    """25 s of the ``tiny`` scenario's section, with exact actions (``accel``, ``curvature``)."""
    return record_simulation(tmp_path_factory.mktemp("replay") / "tiny.h5")


@pytest.fixture(scope="session")
def following_pair(tmp_path_factory) -> Path:
    """Car 2 follows car 1 closely (3.5 m bumper to bumper) at 10 m/s in a 1-lane recording."""
    return write_following_pair(tmp_path_factory.mktemp("replay") / "pair.h5")


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> Path:
    """A micro episodes.h5 for forward-model tests (see ``fm_helpers``)."""
    path = tmp_path_factory.getbasetemp() / "micro_episodes.h5"
    return path if path.exists() else write_micro_episodes(path)


@pytest.fixture(scope="session")
def micro_run(micro_data, tmp_path_factory) -> Path:
    """A forward model trained for a few steps on ``micro_data``: its run directory."""
    return trained_micro_run(micro_data, tmp_path_factory.getbasetemp() / "micro_run")
