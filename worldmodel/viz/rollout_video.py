"""Rollout videos (``worldmodel render rollout``): one car driven by a driver in Replay-v0, seen from above.

Each frame: the top-down view around the car (``ReplayEnv.render``: recorded cars, the driven car in blue,
its recording, the "ghost", as a yellow outline), a header line (driver, vehicle, time, speed, distance,
and at the end the event), and under it a strip plot of the costs so far (proximity, lane, off-road, in
[0, 1]) and, when the driver reports it, of ``diagnostics()["uncertainty"]`` (scaled by its largest value
so far, which the legend prints). Drawn with OpenCV; frames stream into the video as the episode runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from worldmodel.costs import COST_NAMES
from worldmodel.data.hdf5 import DataError
from worldmodel.driving.closed_loop import dataset_files, locate_vehicle
from worldmodel.driving.envs import ReplayEnvConfig
from worldmodel.viz.render import write_video

#: Strip-plot colours (RGB) of the costs and the uncertainty.
SERIES_RGB = {"proximity": (240, 80, 60), "lane": (230, 230, 230), "offroad": (80, 160, 255),
              "uncertainty": (220, 90, 220)}  # fmt: skip
HEADER_PX = 22
PLOT_PX = 110
MIN_PLOT_WIDTH_PX = 360
#: The plot's time axis covers at least this many steps (then grows with the episode).
MIN_PLOT_STEPS = 100


def _text(canvas: np.ndarray, text: str, x: int, y: int, rgb=(235, 235, 235), scale: float = 0.42) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, rgb, 1, cv2.LINE_AA)


def strip_plot(series: dict[str, list[float]], width: int, height: int = PLOT_PX) -> np.ndarray:
    """RGB uint8 ``[height, width, 3]``: one line per series (values in [0, 1], "uncertainty" scaled by its
    max), x = step (the axis spans ``max(MIN_PLOT_STEPS, steps so far)``), legend with the latest values."""
    img = np.full((height, width, 3), 24, np.uint8)
    left, right, top, bottom = 6, width - 6, 18, height - 6
    cv2.rectangle(img, (left, top), (right, bottom), (70, 70, 70), 1)
    steps = max(len(v) for v in series.values()) if series else 0
    span = max(MIN_PLOT_STEPS, steps)
    legend_x = left
    for name, values in series.items():
        v = np.asarray(values, np.float64)
        scale = 1.0
        label = f"{name} {v[-1]:.2f}" if len(v) else name
        if name == "uncertainty" and len(v):
            scale = max(float(v.max()), 1e-9)
            label = f"{name} {v[-1]:.3g} (max {scale:.3g})"
        rgb = SERIES_RGB.get(name, (200, 200, 200))
        _text(img, label, legend_x, 13, rgb, 0.38)
        legend_x += cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.38, 1)[0][0] + 14
        if len(v) >= 2:
            xs = left + np.arange(len(v)) * (right - left) / span
            ys = bottom - np.clip(v / scale, 0.0, 1.0) * (bottom - top)
            pts = np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)  # 4 fractional bits
            cv2.polylines(img, [pts], False, rgb, 1, cv2.LINE_AA, shift=4)
    return img


def compose_frame(topdown: np.ndarray, header: str, series: dict[str, list[float]]) -> np.ndarray:
    """One video frame: header, top-down view ``[h, w, 3]``, strip plot; RGB uint8."""
    width = max(topdown.shape[1], MIN_PLOT_WIDTH_PX)
    frame = np.full((HEADER_PX + topdown.shape[0] + PLOT_PX, width, 3), 24, np.uint8)
    _text(frame, header, 6, 15)
    frame[HEADER_PX : HEADER_PX + topdown.shape[0], : topdown.shape[1]] = topdown
    frame[HEADER_PX + topdown.shape[0] :] = strip_plot(series, width)
    return frame


def render_rollout(
    driver_spec: str,
    data_dir: str | os.PathLike,
    vehicle: int,
    out: str | os.PathLike,
    fm: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    context_frames: int = 20,
    max_steps: int | None = None,
    fps: float = 10.0,
    driver_options: dict | None = None,
) -> dict:
    """Drive episode ``vehicle`` (its id in episodes.h5, as in ``eval policy``'s CSV) of the dataset in
    ``data_dir`` with ``driver_spec`` and write the video ``out`` (``.mp4`` or ``.gif``): one frame at the
    hand-over and one per controlled step. The episode is seeded as in ``evaluate_driving``. Returns
    ``{"out", "frames", "size", "vehicle", "driver", "event", "success", "distance_m", "steps"}``.
    Raises ``DataError`` / ``ValueError`` (one line) for a missing dataset, an unknown vehicle or driver."""
    import torch

    from worldmodel.driving.closed_loop import episode_seed
    from worldmodel.driving.drivers import make_driver, open_replay_env

    if Path(out).suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"{out}: video must end in .mp4 or .gif")
    _, files = dataset_files(data_dir)
    episode = locate_vehicle(files, vehicle)
    driver = make_driver(driver_spec, fm=fm, device=device, seed=seed, **(driver_options or {}))
    config = ReplayEnvConfig(context_frames=context_frames, return_context=bool(getattr(driver, "needs_context", True)),
                             max_steps=max_steps)  # fmt: skip
    env = open_replay_env(files[episode.file], config, render_mode="rgb_array")
    if episode.recorded_id not in set(env.sim.eligible_vehicles().tolist()):
        known = episode.recorded_id in set(env.sim.vehicle_table["id"].tolist())
        raise DataError(files[episode.file], f"vehicle {vehicle} (recorded id {episode.recorded_id}) " + (
            f"cannot be driven: recorded for at most {context_frames} frames or past the evaluated zone at the "
            "hand-over" if known else "is not in this recording"))  # fmt: skip
    summary: dict = {}

    def frames():
        ep_seed = episode_seed(seed, vehicle)
        torch.manual_seed(ep_seed)
        obs, info = env.reset(seed=ep_seed, options={"vehicle": episode.recorded_id})
        driver.reset(env, obs, info)
        series: dict[str, list[float]] = {name: [] for name in COST_NAMES}
        steps, event = 0, None
        while True:
            header = (f"{driver_spec}  vehicle {vehicle}  t {info['time_s']:5.1f} s  {info['speed_mps']:4.1f} m/s  "
                      f"{info['distance_m']:6.1f} m" + (f"  {event}" if event else ""))  # fmt: skip
            frame = compose_frame(env.render(), header, series)
            summary["size"] = list(frame.shape[:2])
            yield frame
            if event is not None:
                break
            action = driver.act(obs, info)
            uncertainty = driver.diagnostics().get("uncertainty")
            if uncertainty is not None:
                series.setdefault("uncertainty", []).append(float(uncertainty))
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            for name in COST_NAMES:
                series[name].append(info["costs"][name])
            if terminated or truncated:
                event = info["event"]
        summary.update(event=event, success=event == "arrived", distance_m=info["distance_m"], steps=steps,
                       frames=steps + 1)  # fmt: skip

    path = write_video(frames(), out, fps=fps)
    env.close()
    return {"out": str(path), "vehicle": int(vehicle), "driver": driver_spec, **summary}
