"""Validate a trajectories.h5 or episodes.h5 file and summarise it (``worldmodel data inspect``).

The file's ``format`` attribute selects the reader, whose checks run on open (a bad file raises
``DataError``). Figures are streamed over blocks of rows, so any file size fits in memory. The summary is a
JSON-serialisable dict; ``units`` names the unit of every figure that has one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from worldmodel.data import episodes, hdf5, trajectories
from worldmodel.data.hdf5 import DataError


def inspect_file(path: str | os.PathLike) -> dict:
    """Validate ``path`` (either format) and return its summary; ``DataError`` if it is invalid."""
    fmt = hdf5.read_format(path)
    if fmt == trajectories.FORMAT:
        return inspect_trajectories(path)
    if fmt == episodes.FORMAT:
        return inspect_episodes(path)
    raise DataError(path, f"unknown format {fmt!r} (expected {trajectories.FORMAT} or {episodes.FORMAT})")


def _header(reader, fmt: str, version: int) -> dict:
    return {
        "path": str(Path(reader.path)),
        "format": fmt,
        "version": version,
        "source": reader.source,
        "created": reader.created,
        "dt_s": reader.dt,
        "road": reader.road,
    }


class _SpeedMoments:
    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, vx: np.ndarray, vy: np.ndarray) -> None:
        speed = np.hypot(vx.astype(np.float64), vy.astype(np.float64))
        self.n += len(speed)
        self.total += float(speed.sum())
        self.squares += float((speed**2).sum())

    def result(self) -> tuple[float, float]:
        if not self.n:
            return 0.0, 0.0
        mean = self.total / self.n
        return mean, float(np.sqrt(max(self.squares / self.n - mean**2, 0.0)))


def inspect_trajectories(path: str | os.PathLike) -> dict:
    """Summary of trajectories.h5: counts, duration, speed, flow at mid-section, lane changes."""
    with trajectories.TrajectoryReader(path) as reader:
        out = _header(reader, trajectories.FORMAT, hdf5.FORMAT_VERSION)
        road = reader.road
        x_mid = 0.5 * (road["section_m"][0] + road["section_m"][1])
        n_lanes = road["lanes"] + len(road["ramps"])
        speed = _SpeedMoments()
        crossings = np.zeros(n_lanes + 1, np.int64)  # last slot: not in a lane
        changes = np.zeros(0, np.int64)
        for block in reader.iter_blocks(columns=("vehicle", "x", "vx", "vy", "lane")):
            speed.add(block["vx"], block["vy"])
            same = block["vehicle"][1:] == block["vehicle"][:-1]
            cross = same & (block["x"][:-1] < x_mid) & (block["x"][1:] >= x_mid)
            lane_after = block["lane"][1:][cross].astype(np.int64)
            crossings += np.bincount(
                np.where(lane_after >= 0, np.minimum(lane_after, n_lanes), n_lanes), minlength=n_lanes + 1
            )
            lane = block["lane"]
            change = same & (lane[1:] != lane[:-1]) & (lane[1:] >= 0) & (lane[:-1] >= 0)
            _, owner = np.unique(block["vehicle"], return_inverse=True)
            changes = np.concatenate([changes, np.bincount(owner[1:][change], minlength=owner.max() + 1)])
        first, stop = reader.frame_range
        duration_s = (stop - first) * reader.dt
        hours = duration_s / 3600
        mean, std = speed.result()
        kinds = np.bincount(reader.vehicles["kind"], minlength=len(reader.kinds))
        out.update(
            vehicles=reader.num_vehicles,
            car_frames=reader.num_rows,
            frames=stop - first,
            frame_range=[first, stop],
            duration_s=round(duration_s, 3),
            kinds={name: int(k) for name, k in zip(reader.kinds, kinds, strict=True)},
            columns=list(reader.columns),
            speed_mean_mps=round(mean, 4),
            speed_std_mps=round(std, 4),
            flow_x_m=x_mid,
            flow_veh_per_h_per_lane=round(float(crossings[: road["lanes"]].sum()) / hours / road["lanes"], 2)
            if hours
            else 0.0,
            flow_by_lane_veh_per_h={str(k): round(float(c) / hours, 2) for k, c in enumerate(crossings[:n_lanes])}
            if hours
            else {},
            lane_changes_total=int(changes.sum()),
            lane_changes_per_vehicle=round(float(changes.mean()), 4) if len(changes) else 0.0,
            lane_changes_max=int(changes.max(initial=0)),
            units={
                "x": "m",
                "y": "m",
                "vx": "m/s",
                "vy": "m/s",
                "heading": "rad",
                "accel": "m/s^2",
                "curvature": "1/m",
                "length": "m",
                "width": "m",
                "duration": "s",
                "speed": "m/s",
                "flow": "veh/h/lane",
            },
        )
        # replaying recorded cars by actions (as PPUU does): how far the inferred actions drift, on a sample
        from worldmodel.data.replay import replay_drift

        out["replay_drift"] = replay_drift(reader, max_vehicles=200)
        return out


def inspect_episodes(path: str | os.PathLike) -> dict:
    """Summary of episodes.h5: episodes and frames per split, duration, speed, view, stats."""
    with episodes.EpisodeReader(path) as reader:
        out = _header(reader, episodes.FORMAT, reader.version)
        table = reader.episodes
        speed = _SpeedMoments()
        for a in range(0, reader.num_frames, 1 << 20):
            states = reader.read(a, min(a + (1 << 20), reader.num_frames), names=("states",))["states"]
            speed.add(states[:, 2], states[:, 3])
        mean, std = speed.result()
        splits = {
            name: {
                "episodes": int((table["split"] == k).sum()),
                "frames": int(table["count"][table["split"] == k].sum()),
                "vehicles": int(len(np.unique(table["vehicle"][table["split"] == k]))),
            }
            for k, name in enumerate(episodes.SPLITS)
        }
        out.update(
            episodes=reader.num_episodes,
            vehicles=int(len(np.unique(table["vehicle"]))),
            frames=reader.num_frames,
            duration_s=round(reader.num_frames * reader.dt, 3),
            splits=splits,
            view=reader.view,
            costs=reader.costs,
            speed_mean_mps=round(mean, 4),
            speed_std_mps=round(std, 4),
            episode_frames_mean=round(float(table["count"].mean()), 2) if reader.num_episodes else 0.0,
            stats={name: [round(float(v), 6) for v in values] for name, values in reader.stats.items()},
            units={
                "states": ["m", "m", "m/s", "m/s"],
                "actions": ["m/s^2", "1/m"],
                "costs": ["1", "1", "1"],
                "images": "uint8 [0, 255]",
                "duration": "s",
                "speed": "m/s",
            },
        )
        return out
