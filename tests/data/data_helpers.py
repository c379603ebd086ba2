"""Tiny synthetic inputs for the data tests: roads, trajectories, sparse ego views, episodes files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldmodel.data.episodes import EpisodeWriter, split_for_vehicle
from worldmodel.data.trajectories import TrajectoryWriter

VIEW = {"height_px": 117, "width_px": 24, "px_per_m": 24 / 3.7 / 4}
SMALL_VIEW = {"height_px": 12, "width_px": 8, "px_per_m": 1.0}


def make_road(lanes: int = 3, length_m: float = 200.0, ramps: int = 0) -> dict:
    return {
        "lanes": lanes,
        "lane_width_m": 3.7,
        "length_m": length_m,
        "section_m": [0.0, length_m],
        "evaluated_m": [10.0, length_m - 10.0],
        "speed_limit_mps": 30.0,
        "ramps": [
            {"name": f"r{k}", "kind": "on", "lane": lanes + k, "start_m": 20.0, "end_m": 80.0} for k in range(ramps)
        ],
    }


def synthetic_track(vehicle: int, rng: np.random.Generator, first: int, count: int) -> dict:
    """A straight track at constant speed in one lane, with a lane change for odd ids."""
    speed = 5.0 + vehicle % 7
    frame = np.arange(first, first + count)
    x = 1.0 + speed * 0.1 * np.arange(count)
    lane = np.full(count, vehicle % 3, np.int16)
    if vehicle % 2:
        lane[count // 2 :] = (vehicle + 1) % 3
    y = 1.85 + 3.7 * lane.astype(np.float64)
    return {
        "frame": frame,
        "x": x,
        "y": y,
        "vx": np.full(count, speed),
        "vy": np.zeros(count),
        "lane": lane,
        "heading": np.zeros(count),
        "accel": rng.normal(0, 1, count),
        "curvature": rng.normal(0, 0.01, count),
    }


def write_trajectories(path: Path, vehicles=(1, 2, 3, 5, 8), count: int = 30, road: dict | None = None) -> dict:
    """Write a small trajectories.h5; returns {vehicle: track} as written."""
    rng = np.random.default_rng(0)
    tracks = {}
    with TrajectoryWriter(path, road or make_road(), source="test", kinds=["car", "truck"], chunk_rows=16) as w:
        for v in vehicles:
            tracks[v] = synthetic_track(v, rng, first=3 * v, count=count + v)
            w.add_vehicle(v, 4.5 + 0.1 * v, 1.8, v % 2, tracks[v])
    return tracks


def _cover(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Fraction of each of n unit pixels covered by the intervals [lo, hi): [..., n]."""
    i = np.arange(n)
    return np.clip(np.minimum(hi[..., None], i + 1) - np.maximum(lo[..., None], i), 0, 1)


def sparse_views(t: int, rng: np.random.Generator, view: dict = VIEW) -> np.ndarray:
    """[T, 3, H, W] uint8 anti-aliased views: dashed lane lines, 3-8 moving cars, an off-road strip."""
    h, w, ppm = view["height_px"], view["width_px"], view["px_per_m"]
    img = np.zeros((t, 3, h, w))
    lane_px, ego_row, ego_col = 3.7 * ppm, (h - 1) / 2, (w - 1) / 2
    travelled = np.cumsum(np.full(t, rng.uniform(3, 12) * 0.1))
    wobble = 0.3 * np.sin(np.arange(t) / 15 + rng.uniform(0, 6))  # lateral drift of the ego [lanes]
    for k in (-1.5, -0.5, 0.5, 1.5):
        centre = ego_col + 0.5 + (k + wobble) * lane_px  # [T]
        cols = _cover(centre - 0.4, centre + 0.4, w)  # [T, W]
        starts = np.arange(-2, 12)[None, :] * 12 * ppm - ((travelled * ppm) % (12 * ppm))[:, None]
        rows = _cover(starts, starts + 3 * ppm, h).max(axis=1)  # [T, H]
        img[:, 0] = np.maximum(img[:, 0], rows[:, :, None] * cols[:, None, :])
    edge = ego_col + 0.5 + (-2 + wobble) * lane_px
    img[:, 2] = _cover(np.full(t, -10.0), edge, w)[:, None, :]
    n = rng.integers(3, 9)
    forward0, lane, rel_v = rng.uniform(-35, 35, n), rng.integers(-1, 2, n), rng.normal(0, 1.0, n)
    length, width = rng.uniform(4, 5.5, n), rng.uniform(1.7, 2.1, n)
    for step in range(t):
        f = forward0 + rel_v * 0.1 * step
        rows = _cover(ego_row + 0.5 - (f + length / 2) * ppm, ego_row + 0.5 - (f - length / 2) * ppm, h)
        centre = ego_col + 0.5 + (lane + wobble[step]) * lane_px
        cols = _cover(centre - width / 2 * ppm, centre + width / 2 * ppm, w)
        img[step, 1] = (rows[:, :, None] * cols[:, None, :]).max(axis=0)
    return np.round(img * 255).astype(np.uint8)


def write_episodes(path: Path, vehicles=range(1, 13), count: int = 12, view: dict = SMALL_VIEW, **kw) -> dict:
    """Write a small episodes.h5 whose values encode (vehicle, row); returns the episodes as written."""
    rng = np.random.default_rng(1)
    h, w = view["height_px"], view["width_px"]
    written = {}
    with EpisodeWriter(path, make_road(), "test", view, {"safe_time_s": 1.5}, flush_frames=64, **kw) as writer:
        for v in vehicles:
            t = count + v % 5
            ep = {
                "images": rng.integers(0, 256, (t, 3, h, w), dtype=np.uint8),
                "states": np.column_stack([10 * v + np.arange(t), v + 0.1 * np.arange(t), np.full(t, v), -np.ones(t)]),
                "actions": rng.normal(0, 1, (t, 2)),
                "costs": rng.uniform(0, 1, (t, 3)),
                "ego_mask": rng.integers(0, 256, (h, w), dtype=np.uint8),
            }
            split = split_for_vehicle(v)
            writer.add_episode(v, 4.0 + 0.01 * v, 1.8, split, **ep)
            written[v] = dict(ep, split=split)
    return written


def truncated_copy(src: Path, dst: Path) -> Path:
    """The first half of ``src``'s bytes."""
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def assert_one_line_error(exc_info, path: Path, *words: str) -> None:
    """The DataError names the file, is one line, and mentions every word (case-insensitive)."""
    message = str(exc_info.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word.lower() in message.lower(), message
