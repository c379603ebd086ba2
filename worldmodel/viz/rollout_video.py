"""Rollout videos (``worldmodel render rollout``): one car driven by a driver in Replay-v0, seen from above.

Each frame: the top-down view around the car (``ReplayEnv.render``: recorded cars, the driven car in blue,
its recording, the "ghost", as a yellow outline), a header line (driver, vehicle, time, speed, distance,
and at the end the event), and under it a strip plot of the costs so far (proximity, lane, off-road, in
[0, 1]) and, when the driver reports it, of ``diagnostics()["uncertainty"]`` (scaled by its largest value
so far, which the legend prints). Drawn with OpenCV; frames stream into the video as the episode runs.

A driver that plans or imagines (``driver_protocol.Intent``: the planners, a policy with a forward model) adds
to the frame of each step, at which it acts before the frame is drawn: its planned path on the top-down view
(a cyan line from the car through its planned poses, a dot at the pose k steps ahead), and, between the view
and the plot, the imagined-future panel (``viz.imagined_panel``: what it imagined k steps ago for now, beside
what happened). A driver without an intent (no-action, expert, bot) gives the video it always gave.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from worldmodel.costs import COST_NAMES
from worldmodel.data.hdf5 import DataError
from worldmodel.driving.closed_loop import dataset_files, locate_vehicle
from worldmodel.driving.driver_protocol import Intent, driver_intent
from worldmodel.driving.envs import RENDER_HALF_WINDOW_M, ReplayEnvConfig
from worldmodel.traffic import raster
from worldmodel.traffic.view import ViewSpec
from worldmodel.viz.imagined_panel import ImaginedPanel
from worldmodel.viz.render import draw_text, write_video

#: Strip-plot colours (RGB) of the costs and the uncertainty.
SERIES_RGB = {"proximity": (240, 80, 60), "lane": (230, 230, 230), "offroad": (80, 160, 255),
              "uncertainty": (220, 90, 220)}  # fmt: skip
HEADER_PX = 22
PLOT_PX = 110
MIN_PLOT_WIDTH_PX = 360
#: The plot's time axis covers at least this many steps (then grows with the episode).
MIN_PLOT_STEPS = 100
#: Colour (RGB) of the planned path on the top-down view.
PATH_RGB = (0, 230, 230)


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
        draw_text(img, label, legend_x, 13, rgb, 0.38)
        legend_x += cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.38, 1)[0][0] + 14
        if len(v) >= 2:
            xs = left + np.arange(len(v)) * (right - left) / span
            ys = bottom - np.clip(v / scale, 0.0, 1.0) * (bottom - top)
            pts = np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)  # 4 fractional bits
            cv2.polylines(img, [pts], False, rgb, 1, cv2.LINE_AA, shift=4)
    return img


def topdown_pixels(x: np.ndarray, y: np.ndarray, centre_x: float) -> np.ndarray:
    """Where road points ``x, y`` ``[N]`` [m] are in ``ReplayEnv.render()``'s image of a car at ``centre_x``
    [m] (its observed x, ``obs["state"][0]``): ``[N, 2]`` float (column, row; pixel centres at integers)."""
    return raster.topdown_pixels(x, y, float(centre_x) - RENDER_HALF_WINDOW_M)


def draw_path(topdown: np.ndarray, poses: np.ndarray, start: tuple[float, float], centre_x: float,
              mark: int | None = None) -> np.ndarray:  # fmt: skip
    """Draw on ``topdown`` (``ReplayEnv.render()``, in place) the planned path: a line from ``start`` (x, y [m],
    the car now) through ``poses`` ``[T, >= 2]`` (x, y [m] ...), and a dot at ``poses[mark - 1]`` (the pose
    ``mark`` steps ahead). ``centre_x``: as ``topdown_pixels``. Returns ``topdown``."""
    xy = np.concatenate([np.asarray([start], np.float64), np.asarray(poses, np.float64)[:, :2]])
    pts = np.round(topdown_pixels(xy[:, 0], xy[:, 1], centre_x) * 16).astype(np.int32)  # 4 fractional bits
    cv2.polylines(topdown, [pts], False, PATH_RGB, 2, cv2.LINE_AA, shift=4)
    if mark is not None and 1 <= mark < len(pts):
        cv2.circle(topdown, tuple(int(v) for v in pts[mark]), 2 * 16, PATH_RGB, -1, cv2.LINE_AA, shift=4)
    return topdown


def compose_frame(topdown: np.ndarray, header: str, series: dict[str, list[float]],
                  panel: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """One video frame: header, top-down view ``[h, w, 3]``, the imagined-future panel ``[h', w', 3]`` (if
    any), strip plot; RGB uint8."""
    below = topdown.shape[0] + (0 if panel is None else panel.shape[0])
    width = max(topdown.shape[1], MIN_PLOT_WIDTH_PX, 0 if panel is None else panel.shape[1])
    frame = np.full((HEADER_PX + below + PLOT_PX, width, 3), 24, np.uint8)
    draw_text(frame, header, 6, 15, scale=0.42)
    frame[HEADER_PX : HEADER_PX + topdown.shape[0], : topdown.shape[1]] = topdown
    if panel is not None:
        frame[HEADER_PX + topdown.shape[0] : HEADER_PX + below, : panel.shape[1]] = panel
    frame[HEADER_PX + below :] = strip_plot(series, width)
    return frame


@dataclass(frozen=True)
class RolloutFrame:
    """One frame of a rollout video: ``image`` RGB uint8 ``[H, W, 3]`` at episode ``step`` (0: the hand-over),
    the driver's ``intent`` after its act at that step (None at the last frame and for drivers without one),
    the panel's ``rasters`` (``ImaginedPanel.rasters``; {} without a panel) and its ``imagined_step`` (k, or
    None), the environment's ``info`` at the step and the ``event`` that ended the episode (at the last)."""

    image: np.ndarray
    step: int
    intent: Intent | None
    rasters: dict
    imagined_step: int | None
    info: dict
    event: str | None = None


def rollout_frames(driver, env, vehicle_id: int, label: str, seed: int | None = None,
                   imagined_step: int | None = None) -> Iterator[RolloutFrame]:  # fmt: skip
    """Drive the episode of recorded vehicle ``vehicle_id`` of ``env`` (a ``ReplayEnv`` with ``render_mode=
    "rgb_array"``, reset with ``seed``) with ``driver`` (a ``Driver``), one frame per step and one at the end.
    ``label``: the header's start. ``imagined_step``: k of the panel (None: the imagined step nearest 1 s; 0:
    no panel); the panel is shown when the driver's first intent holds frames (for other drivers k is ignored).
    Raises ValueError (one line) for a k the driver does not imagine."""
    obs, info = env.reset(seed=seed, options={"vehicle": vehicle_id})
    driver.reset(env, obs, info)
    series: dict[str, list[float]] = {name: [] for name in COST_NAMES}
    panel: ImaginedPanel | None = None
    step, event = 0, None
    while True:
        action = intent = None
        if event is None:  # the driver acts first, so that the frame shows what it intends from here
            action = driver.act(obs, info)
            uncertainty = driver.diagnostics().get("uncertainty")
            if uncertainty is not None:
                series.setdefault("uncertainty", []).append(float(uncertainty))
            intent = driver_intent(driver)
            if step == 0:
                panel = ImaginedPanel.for_intent(intent, imagined_step, env.view_spec, float(env.sim.dt))
            if panel is not None:
                panel.remember(step, intent)
        k = None if panel is None else panel.step
        topdown = env.render()
        if intent is not None:
            draw_path(topdown, intent.poses, (env.sim.x, env.sim.y), obs["state"][0], k)
        rasters = {} if panel is None else panel.rasters(step, env.sim, obs["image"][:3])
        header = (f"{label}  t {info['time_s']:5.1f} s  {info['speed_mps']:4.1f} m/s  {info['distance_m']:6.1f} m"
                  + (f"  {event}" if event else ""))  # fmt: skip
        image = compose_frame(topdown, header, series, None if panel is None else panel.render(rasters))
        yield RolloutFrame(image, step, intent, rasters, k, info, event)
        if event is not None:
            return
        obs, _, terminated, truncated, info = env.step(action)
        step += 1
        for name in COST_NAMES:
            series[name].append(info["costs"][name])
        if terminated or truncated:
            event = info["event"]


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
    imagined_step: int | None = None,
) -> dict:
    """Drive episode ``vehicle`` (its id in episodes.h5, as in ``eval policy``'s CSV) of the dataset in
    ``data_dir`` with ``driver_spec`` and write the video ``out`` (``.mp4`` or ``.gif``): one frame at the
    hand-over and one per controlled step. The episode is seeded as in ``evaluate_driving``; the environment
    renders the driver's view (``driver.view``, as in ``evaluate_driving``). ``imagined_step``: see
    ``rollout_frames``. Returns ``{"out", "frames", "size", "vehicle", "driver", "event", "success",
    "distance_m", "steps", "imagined_step"}``. Raises ``DataError`` / ``ValueError`` (one line) for a missing
    dataset, an unknown vehicle or driver, an imagined step the driver does not imagine."""
    import torch

    from worldmodel.driving.closed_loop import episode_seed
    from worldmodel.driving.drivers import make_driver, open_replay_env

    if Path(out).suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"{out}: video must end in .mp4 or .gif")
    if imagined_step is not None and imagined_step < 0:
        raise ValueError(f"--imagined-step must be >= 0 (0: no panel), got {imagined_step}")
    _, files = dataset_files(data_dir)
    episode = locate_vehicle(files, vehicle)
    options = dict(driver_options or {})
    if fm is not None and Path(driver_spec).is_file():  # a policy: its imagined rollout, uncertainty or not
        options.setdefault("imagine", True)
    driver = make_driver(driver_spec, fm=fm, device=device, seed=seed, **options)
    config = ReplayEnvConfig(context_frames=context_frames, return_context=bool(getattr(driver, "needs_context", True)),
                             max_steps=max_steps, view=getattr(driver, "view", None) or ViewSpec())  # fmt: skip
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
        for frame in rollout_frames(driver, env, episode.recorded_id, f"{driver_spec}  vehicle {vehicle}", ep_seed,
                                    imagined_step):  # fmt: skip
            summary.update(size=list(frame.image.shape[:2]), steps=frame.step, frames=frame.step + 1,
                           imagined_step=frame.imagined_step, event=frame.event, distance_m=frame.info["distance_m"])  # fmt: skip
            yield frame.image
        summary["success"] = summary["event"] == "arrived"

    path = write_video(frames(), out, fps=fps)
    env.close()
    return {"out": str(path), "vehicle": int(vehicle), "driver": driver_spec, **summary}
