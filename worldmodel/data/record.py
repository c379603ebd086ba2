"""Record simulated traffic to trajectories.h5: every vehicle in the recorded section, every frame, with
the bots' exact actions (``accel``, ``curvature``: the action of row t moves the car from frame t to t+1)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldmodel.data.hdf5 import DataError
from worldmodel.data.trajectories import TrajectoryWriter
from worldmodel.traffic.kinematics import DT_S
from worldmodel.traffic.scenario import resolve_scenario
from worldmodel.traffic.simulation import TrafficSimulation

log = logging.getLogger(__name__)

_COLUMNS = ("frame", "x", "y", "vx", "vy", "lane", "heading", "accel", "curvature")


@dataclass(frozen=True)
class RecordConfig:
    """A recording of simulated traffic."""

    scenario: str = "i80"
    """Scenario name in envs/ or a TOML path."""
    minutes: float = 15.0
    """Recorded time after the warm-up [min]."""
    warmup_s: float = 120.0
    """Simulated time before recording starts [s]."""
    seed: int = 0
    """Seed of the simulation."""
    flush_every_s: float = 60.0
    """Vehicles that have left the section are written out this often [s] (bounds memory)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name, flag, value, ok, what in (
            ("minutes", "--minutes", self.minutes, self.minutes * 60 >= DT_S, f"> 0 (at least one {DT_S} s frame)"),
            ("warmup_s", "--warmup", self.warmup_s, self.warmup_s >= 0, ">= 0 s"),
            ("flush_every_s", None, self.flush_every_s, self.flush_every_s > 0, "> 0 s"),
        ):
            if not (ok and math.isfinite(value)):  # NaN fails every comparison
                raise ValueError(f"{name}{f' ({flag})' if flag else ''} must be {what}, got {value}")


class _Log:
    """Per-frame rows of the vehicles in the section, as growing column lists."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {"vehicle": [], **{c: [] for c in _COLUMNS}}

    def add(self, vehicle: np.ndarray, **columns: np.ndarray) -> None:
        self.parts["vehicle"].append(vehicle)
        for name, values in columns.items():
            self.parts[name].append(values)

    def take(self, done: np.ndarray) -> dict[str, np.ndarray]:
        """Remove and return (sorted by vehicle, frame) the rows of the vehicles in ``done``."""
        table = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in self.parts.items()}
        mine = np.isin(table["vehicle"], done)
        keep = {name: values[~mine] for name, values in table.items()}
        self.parts = {name: [values] for name, values in keep.items()}
        out = {name: values[mine] for name, values in table.items()}
        order = np.lexsort((out["frame"], out["vehicle"]))
        return {name: values[order] for name, values in out.items()}


def record(config: RecordConfig, out: str | Path) -> dict:
    """Simulate ``config.scenario`` and write ``out`` (trajectories.h5). Returns a summary dict."""
    scenario = resolve_scenario(config.scenario)
    sim = TrafficSimulation(scenario, seed=config.seed)
    x0, x1 = scenario.road.section_m
    warm = round(config.warmup_s / sim.dt)
    steps = round(config.minutes * 60.0 / sim.dt)
    flush_steps = max(1, round(config.flush_every_s / sim.dt))
    sizes: dict[int, tuple[float, float, int]] = {}
    rows = _Log()
    written = 0
    bar = tqdm(total=warm + steps, desc=f"record {scenario.name}", unit="step", disable=not config.progress)
    source = f"scenario={scenario.name} seed={config.seed}"
    with TrajectoryWriter(out, sim.road.to_dict(), source, sim.kind_names, dt=sim.dt) as w:

        def flush(done: np.ndarray) -> int:
            block = rows.take(done)
            if len(block["vehicle"]) == 0:
                return 0
            cuts = np.flatnonzero(np.diff(block["vehicle"])) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(block["vehicle"])], strict=True):
                vid = int(block["vehicle"][lo])
                length, width, kind = sizes.pop(vid)
                w.add_vehicle(vid, length, width, kind, {c: block[c][lo:hi] for c in _COLUMNS})
            return len(cuts) + 1

        for _ in range(warm):
            sim.step()
            bar.update()
        sim.stats.reset_counts()
        for k in range(steps):
            inside = (sim.x >= x0) & (sim.x <= x1)
            ids = sim.ids[inside]
            x, y, psi, v = sim.x[inside].copy(), sim.y[inside].copy(), sim.psi[inside].copy(), sim.v[inside].copy()
            lane = sim.road.lane_at(x, y).astype(np.int16)
            for vid, length, width, kind in zip(
                ids, sim.length[inside], sim.width[inside], sim.kind[inside], strict=True
            ):
                sizes.setdefault(int(vid), (float(length), float(width), int(kind)))
            sim.step()
            bar.update()
            col = np.searchsorted(sim.ids, ids)  # ids stay sorted ascending; cars in the section never exit
            rows.add(
                ids.astype(np.int32),
                frame=np.full(len(ids), k, np.int32), x=x, y=y, vx=v * np.cos(psi), vy=v * np.sin(psi), lane=lane,
                heading=psi, accel=sim.accel[col], curvature=sim.curvature[col],
            )  # fmt: skip
            if (k + 1) % flush_steps == 0:  # vehicles seen before but not now have left the section
                written += flush(np.setdiff1d(np.fromiter(sizes, dtype=np.int64, count=len(sizes)), ids))
        written += flush(np.array(list(sizes), dtype=np.int64))
        if not written:
            raise DataError(out, f"no vehicle entered the recorded section {x0:g}..{x1:g} m of scenario "
                            f"{scenario.name} in {config.minutes:g} min: nothing to record")  # fmt: skip
    bar.close()
    summary = {"out": str(out), "scenario": scenario.name, "seed": config.seed, "minutes": config.minutes,
               "vehicles": written, **{f"sim_{k}": v for k, v in sim.stats.summary().items()}}  # fmt: skip
    log.info("recorded %d vehicles to %s", written, out)
    return summary
