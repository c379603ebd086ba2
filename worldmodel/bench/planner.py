"""The gradient planner's closed-loop cost: ``bench_planner(quick) -> dict`` (``worldmodel bench planner``; also
part of ``worldmodel bench policy``).

``plan_ms_per_car_step_{oracle,cv,traffic}``: milliseconds of wall time per car-step of ``plan:grad`` (drive
objective, default settings) in ``Replay-v0``, driven as ``eval policy`` drives a split: 2 workers, episodes in
lockstep batches of ``BATCH`` = 16 (``eval policy``'s default), ``EPISODES`` = 64 train cars of an i80 recording
made in the run, i.e. two groups of 32, one per worker, each group's 16 slots refilled as its episodes end. The
time includes starting the workers, loading the recording and rendering. The traffic model is untrained (the
compute of a trained one). The baseline, in the same run and on the same cars: the oracle world with the pose
costs on every pixel of a frame at every step (``frame_every=1, lane_rows_m=None``): ``plan_speedup_vs_dense``.
``plan_success_rate_*``: the share of those cars that arrived (a sanity check, not a quality figure: 64 cars);
``plan_car_steps_*``: the car-steps driven.

The recording lasts 3 minutes after 60 s of warm-up (2 with ``quick``): its episodes are as long as a
dataset's (a car crosses the evaluated zone in about 30 s), so the per-episode costs (resets, the first
frames) weigh as they do on a split.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from worldmodel.nn.saving import save_checkpoint
from worldmodel.nn.traffic_model import TrafficModel, TrafficModelConfig

BATCH, EPISODES, WORKERS = 16, 64, 2
#: Minutes of the recording, by ``quick``.
MINUTES = {True: 2.0, False: 3.0}

#: Driver options of each timed row (``make_planner_driver``); ``oracle_dense`` is the baseline.
ROWS = {
    "oracle": {"world": "oracle"},
    "cv": {"world": "cv"},
    "traffic": {"world": "traffic"},
    "oracle_dense": {"world": "oracle", "frame_every": 1, "lane_rows_m": None},
}


def bench_planner(quick: bool = False, folder: Path | None = None) -> dict:
    """Time ``plan:grad`` per car-step in each world of ``ROWS`` (see the module docstring) on a recording made
    in ``folder`` (a temporary directory when None)."""
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return bench_planner(quick, Path(tmp))
    from worldmodel.data.extract import ExtractConfig, extract
    from worldmodel.data.record import RecordConfig, record
    from worldmodel.driving.closed_loop import bench_eval_episodes

    t0 = time.perf_counter()
    minutes = MINUTES[quick]
    record(RecordConfig(scenario="i80", minutes=minutes, warmup_s=60.0, seed=0, progress=False),
           folder / "trajectories-0.h5")  # fmt: skip
    extract([folder / "trajectories-0.h5"], folder / "episodes.h5", ExtractConfig(workers=1, progress=False))
    traffic = save_checkpoint(TrafficModel(TrafficModelConfig()).checkpoint_dict(0), folder / "traffic.pt")
    out: dict = {"plan_batch": BATCH, "plan_workers": WORKERS, "plan_recording_minutes": minutes}
    for name, options in ROWS.items():
        fm = str(traffic) if options["world"] == "traffic" else None
        r = bench_eval_episodes(folder, driver="plan:grad", episodes=EPISODES, workers=WORKERS, split="train",
                                batch=BATCH, fm=fm, driver_options=options)  # fmt: skip
        out[f"plan_ms_per_car_step_{name}"] = round(1000.0 / r["eval_steps_per_s"], 2)
        out[f"plan_success_rate_{name}"] = r["eval_success_rate"]
        out[f"plan_car_steps_{name}"] = round(r["eval_steps_per_s"] * r["eval_episodes"] / r["eval_episodes_per_s"])
        out["plan_episodes"] = r["eval_episodes"]
    out["plan_speedup_vs_dense"] = round(
        out["plan_ms_per_car_step_oracle_dense"] / out["plan_ms_per_car_step_oracle"], 2
    )
    out["plan_bench_wall_s"] = round(time.perf_counter() - t0, 1)
    return out


__all__ = ["BATCH", "EPISODES", "MINUTES", "ROWS", "WORKERS", "bench_planner"]
