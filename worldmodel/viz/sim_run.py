"""``worldmodel sim``: run a scenario, write a top-down video and the realism summary."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldmodel.data.hdf5 import write_json
from worldmodel.traffic.kinematics import DT_S
from worldmodel.traffic.raster import render_topdown
from worldmodel.traffic.scenario import resolve_scenario
from worldmodel.traffic.simulation import TrafficSimulation
from worldmodel.viz.render import write_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimRunConfig:
    """A simulation run."""

    scenario: str = "i80"
    """Scenario name in envs/ or a TOML path."""
    seconds: float = 300.0
    """Simulated time after the warm-up [s]."""
    warmup_s: float = 120.0
    """Simulated time discarded before statistics and video start [s]."""
    seed: int = 0
    """Seed of the simulation's generator."""
    video: str | None = None
    """Path of a top-down video of the recorded section (.mp4 or .gif), or None."""
    video_every: int = 1
    """Keep every k-th frame in the video."""
    video_px_per_m: float = 3.0
    """Resolution of the video [px/m]."""
    summary: str | None = None
    """Path of the JSON summary (default: next to the video, else none)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name, flag, value, ok, what in (
            ("seconds", "--seconds", self.seconds, self.seconds >= DT_S, f">= {DT_S} s (one step)"),
            ("warmup_s", "--warmup", self.warmup_s, self.warmup_s >= 0, ">= 0 s"),
            ("video_every", "--video-every", self.video_every, self.video_every >= 1, ">= 1"),
            ("video_px_per_m", None, self.video_px_per_m, self.video_px_per_m > 0, "> 0 px/m"),
        ):
            if not (ok and math.isfinite(value)):  # NaN fails every comparison
                raise ValueError(f"{name}{f' ({flag})' if flag else ''} must be {what}, got {value}")


def run_simulation(config: SimRunConfig) -> dict:
    """Simulate, write the video and the summary; return the summary (realism statistics of the section)."""
    scenario = resolve_scenario(config.scenario)
    sim = TrafficSimulation(scenario, seed=config.seed)
    warm = round(config.warmup_s / sim.dt)
    steps = round(config.seconds / sim.dt)
    bar = tqdm(total=warm + steps, desc=f"sim {scenario.name}", unit="step", disable=not config.progress)
    for _ in range(warm):
        sim.step()
        bar.update()
    sim.stats.reset_counts()
    section = scenario.road.section_m
    x_range = (section[0] - 20.0, section[1] + 20.0)

    def frames() -> Iterator[np.ndarray]:
        for k in range(steps):
            sim.step()
            bar.update()
            if config.video and k % config.video_every == 0:
                yield render_topdown(
                    sim.road, sim.snapshot(), config.video_px_per_m, x_range, kind_names=sim.kind_names
                )

    if config.video:
        write_video(frames(), config.video, fps=10.0 / config.video_every)
    else:
        for _ in frames():
            pass
    bar.close()
    summary = {
        "scenario": scenario.name,
        "seed": config.seed,
        "warmup_s": config.warmup_s,
        **sim.stats.summary(),
    }
    summary_path = config.summary or (str(Path(config.video).with_suffix(".json")) if config.video else None)
    if summary_path:
        write_json(summary, summary_path)
        summary["summary_path"] = summary_path
    return summary
