"""A micro episodes.h5 for forward-model training and evaluation tests: a few short episodes of ego views
in which dashed lane lines scroll at the ego's speed and other cars move at their own; the ego's
acceleration (the action) changes its speed, so the future depends on the actions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldmodel.data.episodes import EpisodeWriter

VIEW = {"height_px": 117, "width_px": 24, "px_per_m": 24 / 3.7 / 4}
ROAD = {
    "lanes": 3,
    "lane_width_m": 3.7,
    "length_m": 500.0,
    "section_m": [0.0, 500.0],
    "evaluated_m": [10.0, 490.0],
    "speed_limit_mps": 30.0,
    "ramps": [],
}
DT_S = 0.1


def _cover(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Fraction of each of n unit pixels covered by [lo, hi): [..., n]."""
    i = np.arange(n)
    return np.clip(np.minimum(hi[..., None], i + 1) - np.maximum(lo[..., None], i), 0, 1)


def micro_episode(frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One episode: images [T, 3, 117, 24] uint8, states [T, 4], actions [T, 2], costs, ego_mask."""
    h, w, ppm = VIEW["height_px"], VIEW["width_px"], VIEW["px_per_m"]
    ego_row, lane_px = (h - 1) / 2, 3.7 * ppm
    accel = np.repeat(rng.uniform(-2.0, 2.0, frames // 10 + 1), 10)[:frames]  # [m/s^2], changes every 1 s
    speed = np.empty(frames)
    speed[0] = rng.uniform(6.0, 12.0)
    for t in range(frames - 1):
        speed[t + 1] = np.clip(speed[t] + accel[t] * DT_S, 2.0, 16.0)
    x = np.concatenate([[0.0], np.cumsum(speed[:-1] * DT_S)])
    images = np.zeros((frames, 3, h, w))
    for col in (w / 2 - lane_px / 2, w / 2 + lane_px / 2):  # dashed lines: 3 m dashes every 9 m
        cols = _cover(np.array(col - 0.5), np.array(col + 0.5), w)
        starts = np.arange(-2, 16)[None, :] * 9 * ppm + ((x * ppm) % (9 * ppm))[:, None]
        rows = _cover(starts, starts + 3 * ppm, h).max(axis=1)  # [T, H]
        images[:, 0] = np.maximum(images[:, 0], rows[:, :, None] * cols[None, None, :])
    images[:, 2, :, :2] = 1.0  # off-road strip on the left
    n_cars = rng.integers(2, 5)
    lanes = rng.integers(-1, 2, n_cars)
    ahead = rng.uniform(-30, 30, n_cars)  # [m] at t = 0
    car_speed = rng.uniform(5.0, 13.0, n_cars)
    for t in range(frames):
        f = ahead + car_speed * DT_S * t - x[t]  # forward distance from the ego [m]
        rows = _cover(ego_row + 0.5 - (f + 2.25) * ppm, ego_row + 0.5 - (f - 2.25) * ppm, h)  # [N, H]
        centre = w / 2 + lanes * lane_px
        cols = _cover(centre - 0.9 * ppm, centre + 0.9 * ppm, w)  # [N, W]
        images[t, 1] = (rows[:, :, None] * cols[:, None, :]).max(axis=0)
    ego = np.zeros((h, w), np.uint8)
    ego[int(ego_row) - 3 : int(ego_row) + 4, w // 2 - 1 : w // 2 + 2] = 255
    return {
        "images": np.round(images * 255).astype(np.uint8),
        "states": np.column_stack([x, np.full(frames, 5.55), speed, np.zeros(frames)]),
        "actions": np.column_stack([accel, np.zeros(frames)]),
        "costs": np.zeros((frames, 3)),
        "ego_mask": ego,
    }


def write_micro_episodes(path: Path, splits=(0, 0, 0, 0, 0, 0, 1, 2, 2), frames: int = 60, seed: int = 0) -> Path:
    """One episode per entry of ``splits`` (0 train, 1 val, 2 test), ``frames`` frames each."""
    rng = np.random.default_rng(seed)
    with EpisodeWriter(path, ROAD, "tests micro", VIEW, {"safe_time_s": 1.5}) as writer:
        for vehicle, split in enumerate(splits, start=1):
            writer.add_episode(vehicle, 4.5, 1.8, split, **micro_episode(frames, rng))
    return path


def train_config(data: Path, out: Path, mode: str = "vae", model_overrides: dict | None = None, **overrides):
    """A seconds-long ``TrainFMConfig`` on the micro data: the tiny model, 3 predicted frames, batch 8."""
    from worldmodel.nn.forward_model import ForwardModelConfig
    from worldmodel.training.fm import TrainFMConfig

    kwargs = dict(
        data=str(data),
        out=str(out),
        model=ForwardModelConfig.tiny(mode, **(model_overrides or {})),
        predict_frames=3,
        steps=10,
        batch_size=8,
        lr=3e-3,
        val_every=5,
        val_windows=16,
        ckpt_every=5,
        log_every=5,
        workers=0,
        device="cpu",
        progress=False,
    )
    return TrainFMConfig(**(kwargs | overrides))


def trained_micro_run(data: Path, out: Path) -> Path:
    """A deterministic tiny model trained for 60 steps on the micro data (once per session): its run dir."""
    from worldmodel.training.fm import train_fm

    if not (out / "checkpoints" / "last.pt").exists():
        train_fm(train_config(data, out, mode="deterministic", steps=60, val_every=30, ckpt_every=60, log_every=10))
    return out
