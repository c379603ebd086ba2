"""``worldmodel bench <what>``: throughput figures as one JSON object (DESIGN §6).

Every benchmark measures its baseline in the same run, so ratios are meaningful even on a busy machine
(absolute figures are not: time on a quiet machine).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from worldmodel.traffic.raster import EgoRasterizer, reference_views
from worldmodel.traffic.scenario import resolve_scenario
from worldmodel.traffic.simulation import TrafficSimulation


def machine() -> dict:
    """What the figures were measured on."""
    info = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__}  # fmt: skip
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        pass
    return info


def bench_sim(quick: bool = False, scenario: str = "i80", seed: int = 0) -> dict:
    """Simulator and rasteriser throughput at the scenario's steady state."""
    sim = TrafficSimulation(resolve_scenario(scenario), seed=seed)
    for _ in range(600 if quick else 1200):  # warm-up to steady state
        sim.step()
    steps = 400 if quick else 3000
    vehicle_steps = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        sim.step()
        vehicle_steps += sim.n
    sim_s = time.perf_counter() - t0
    rasterizer = EgoRasterizer(sim.road)
    frames = 5 if quick else 30
    views = 0
    render_s = 0.0
    for _ in range(frames):
        snap = sim.snapshot()
        t0 = time.perf_counter()
        views += len(rasterizer.render(snap))
        render_s += time.perf_counter() - t0
        for _ in range(5):
            sim.step()
    snap = sim.snapshot()
    egos = np.arange(min(40, sim.n))
    t0 = time.perf_counter()
    reference_views(rasterizer, snap, egos)
    ref_s = time.perf_counter() - t0
    views_per_s = views / render_s
    reference_per_s = len(egos) / ref_s
    return {
        "scenario": scenario,
        "quick": quick,
        "vehicle_steps_per_s": round(vehicle_steps / sim_s),
        "steps_per_s": round(steps / sim_s, 1),
        "vehicles": round(vehicle_steps / steps, 1),
        "views_per_s": round(views_per_s),
        "reference_views_per_s": round(reference_per_s),
        "views_speedup_vs_reference": round(views_per_s / reference_per_s, 2),
        "machine": machine(),
    }
