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


def _time_steps(sims: dict[str, TrafficSimulation], steps: int, blocks: int = 4) -> dict[str, tuple[int, float]]:
    """(vehicle-steps, seconds) of ``steps`` steps of each simulation, timed in alternating blocks (so a
    change in the machine's load falls on all of them alike)."""
    totals = {name: [0, 0.0] for name in sims}
    for block in range(blocks):
        for name, sim in sims.items():
            t0 = time.perf_counter()
            for _ in range(steps // blocks + (block < steps % blocks)):
                sim.step()
                totals[name][0] += sim.n
            totals[name][1] += time.perf_counter() - t0
    return {name: (int(v), s) for name, (v, s) in totals.items()}


def bench_sim(quick: bool = False, scenario: str = "i80", seed: int = 0) -> dict:
    """Simulator and rasteriser throughput at the scenario's steady state. The simulator is timed with the
    compiled kernel (where numba is installed) beside the numpy path, from the same seed (the same traffic)."""
    from worldmodel.traffic import compiled

    paths = {"numpy": False} | ({"compiled": True} if compiled.available() else {})
    sims = {name: TrafficSimulation(resolve_scenario(scenario), seed=seed, compiled_kernel=flag)
            for name, flag in paths.items()}  # fmt: skip
    for sim in sims.values():
        for _ in range(600 if quick else 1200):  # warm-up to steady state (and the kernel's compilation)
            sim.step()
    steps = 1000 if quick else 3000
    timed = _time_steps(sims, steps)
    kernel = "compiled" if "compiled" in sims else "numpy"
    sim, (vehicle_steps, sim_s), (numpy_steps, numpy_s) = sims[kernel], timed[kernel], timed["numpy"]
    rasterizer = EgoRasterizer(sim.road)
    rasterizer.render(sim.snapshot())  # warm-up: the rasteriser's reusable buffers are allocated once
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
        "kernel": kernel,
        "vehicle_steps_per_s_numpy": round(numpy_steps / numpy_s),
        "kernel_speedup_vs_numpy": round(vehicle_steps / sim_s / (numpy_steps / numpy_s), 2),
        "steps_per_s": round(steps / sim_s, 1),
        "vehicles": round(vehicle_steps / steps, 1),
        "views_per_s": round(views_per_s),
        "reference_views_per_s": round(reference_per_s),
        "views_speedup_vs_reference": round(views_per_s / reference_per_s, 2),
        "machine": machine(),
    }


def _read_windows(path: str, n: int, seed: int, image_dtype: str, queue) -> None:
    """Child process: read ``n`` random windows with images as ``image_dtype``; report (seconds, peak RSS
    bytes, windows in the split)."""
    import resource

    import torch

    from worldmodel.data.windows import WindowConfig, WindowDataset

    torch.set_num_threads(1)
    config = WindowConfig(context_frames=20, predict_frames=20, split="train", image_dtype=image_dtype)
    ds = WindowDataset(path, config)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ds), n)
    ds[int(idx[0])]  # open the file
    t0 = time.perf_counter()
    for i in idx:
        ds[int(i)]
    seconds = time.perf_counter() - t0
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, len(ds)))


def bench_data(quick: bool = False, scenario: str = "i80", seed: int = 0) -> dict:
    """Dataset pipeline: record -> extract (1 and 2 workers) -> random-access training windows (``windows_per_s``:
    images as uint8, as the trainers read them; ``windows_per_s_float32``: as float32 in [0, 1])."""
    import multiprocessing as mp
    import tempfile
    from pathlib import Path

    from worldmodel.data.extract import ExtractConfig, extract
    from worldmodel.data.record import RecordConfig, record

    with tempfile.TemporaryDirectory() as tmp:
        traj = Path(tmp) / "trajectories.h5"
        minutes = 1.0 if quick else 3.0
        t0 = time.perf_counter()
        rec = record(RecordConfig(scenario=scenario, minutes=minutes, warmup_s=120.0, seed=seed, progress=False), traj)
        record_s = time.perf_counter() - t0
        results = {}
        for workers in (1, 2):
            out = Path(tmp) / f"episodes-{workers}.h5"
            results[workers] = extract([traj], out, ExtractConfig(workers=workers, progress=False))
        episodes = str(Path(tmp) / "episodes-2.h5")
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        queue = ctx.Queue()
        n = 300 if quick else 2000
        reads = {}
        for image_dtype in ("uint8", "float32"):  # as the trainers read them; the float32 items of other users
            child = ctx.Process(target=_read_windows, args=(episodes, n, seed, image_dtype, queue))
            child.start()
            reads[image_dtype] = queue.get()
            child.join()
        # the plain way to make a view: one full canvas per car-frame (measured on a sample)
        from worldmodel.data.trajectories import TrajectoryReader
        from worldmodel.traffic.road import Road

        with TrajectoryReader(traj) as reader:
            table = reader.frames_table(("x", "y", "heading"))
            road = Road.from_dict(reader.road)
        frame = table.at(table.first_frame + table.num_frames // 2)
        cars = {"x": frame["x"].astype(np.float64), "y": frame["y"].astype(np.float64),
                "psi": frame["heading"].astype(np.float64), "length": frame["length"].astype(np.float64),
                "width": frame["width"].astype(np.float64)}  # fmt: skip
        cars["lane"] = road.lane_at(cars["x"], cars["y"])
        sample = np.arange(min(30, len(cars["x"])))
        t0 = time.perf_counter()
        reference_views(EgoRasterizer(road), cars, sample)
        reference_rate = len(sample) / (time.perf_counter() - t0)
    best = results[2]
    return {
        "scenario": scenario,
        "quick": quick,
        "recorded_minutes": minutes,
        "record_s": round(record_s, 2),
        "vehicles": rec["vehicles"],
        "car_frames": best["car_frames"],
        "extract_car_frames_per_s": best["car_frames_per_s"],
        "extract_car_frames_per_s_1_worker": results[1]["car_frames_per_s"],
        "reference_render_car_frames_per_s": round(reference_rate, 1),
        "extract_speedup_vs_reference": round(best["car_frames_per_s"] / reference_rate, 1),
        "bytes_per_car_frame": best["bytes_per_car_frame"],
        "windows_per_s": round(n / reads["uint8"][0], 1),
        "windows_per_s_float32": round(n / reads["float32"][0], 1),
        "windows_in_train_split": reads["uint8"][2],
        "peak_rss_bytes": int(max(read[1] for read in reads.values())),
        "machine": machine(),
    }
