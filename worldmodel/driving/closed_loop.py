"""Closed-loop evaluation of a driver in Replay-v0 (SPEC §5): one episode per car of a split.

``evaluate_driving(EvalPolicyConfig(...))``:

1. Episodes. A dataset directory holds ``episodes.h5`` and the trajectories files it was extracted from
   (``trajectories-<k>.h5``; their order is the one in the episodes file's ``source`` attribute, written by
   ``data.extract``; with several files, the episode vehicle id is ``k * id_stride + recorded id``). Each car
   of the split becomes an episode on its recording if ``ReplaySimulation.eligible_vehicles()`` accepts it
   (recorded past the context, short of the end of the evaluated zone at the hand-over) and its recording
   reaches the end of the evaluated zone (last recorded x >= ``evaluated_m[1]``: success = arriving only
   makes sense then). The JSON says how many cars were excluded, and why.
2. Episodes run in groups (``episode_groups``) in worker processes (``multiprocessing``, "forkserver" or
   "spawn"); each builds the driver once, loads each trajectories file once, and runs torch on one thread.
   Within a group, ``batch`` episodes run in lockstep, each in its own environment, and a policy acts for
   all of them in one batched forward pass per step (~``batch``x fewer network calls). Episode ``vehicle``
   is seeded with ``SeedSequence([seed, vehicle])`` (the environment's ``reset(seed=...)`` and torch's
   global generator): results do not depend on the number of workers (a test checks it), as long as a
   driver draws its per-episode randomness from those two (a driver serves many episodes, in any split).
3. Stuck cap. With ``stuck_factor`` = k, an episode that has not ended after floor(k x ``recorded_steps``)
   controlled steps is truncated with event "stuck" (it would take more than k times as long as the recorded
   car, which took ``recorded_steps`` from the hand-over to the end of the evaluated zone); ``max_steps``
   ("timeout") still applies.
4. Not at fault. Being rear-ended ("collision_behind") while driving at or above the speed of the car's own
   recording at that frame (``ReplaySimulation.ghost["v"]``) is not the driver's fault:
   ``rear_ended_not_at_fault``; ``success_not_at_fault`` = arrived or rear-ended not at fault. PPUU's
   success (= arrived) stays the headline ``success_rate``.
5. Per episode: event, success (= "arrived"), success not at fault, stuck, distance, steps, the recorded car's
   steps, collisions ahead / behind, off-road, mean costs over the controlled steps, means of the driver's
   ``diagnostics()``. Summary: success rate and not-at-fault success rate, each with its 95 % Wilson interval,
   mean distance, collision, off-road and stuck rates, mean costs, events histogram (every event of
   ``EVENTS``, in that order), speed. Written atomically to ``out`` (JSON) and ``<out stem>.csv`` (one row
   per episode). ``worldmodel.evaluation.table`` compares several such files in a markdown table.

This module holds the entry points (``evaluate_driving``, ``bench_eval_episodes``) and re-exports the parts:
``closed_loop_config`` (``EvalPolicyConfig``), ``episode_selection`` (1), ``episode_workers`` (2),
``episode_runner`` (2-5: the lockstep runner and the per-episode records), ``episode_summary`` (5).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from worldmodel.data.hdf5 import DataError, write_json
from worldmodel.driving.closed_loop_config import EvalPolicyConfig
from worldmodel.driving.episode_runner import EpisodeRunner, at_or_above_recorded_speed, episode_seed, stuck_steps
from worldmodel.driving.episode_selection import (
    EXCLUSIONS,
    Episode,
    dataset_files,
    locate_vehicle,
    select_episodes,
)
from worldmodel.driving.episode_summary import EVENTS, RECORD_KEYS, Z_95, summarise, wilson_interval, write_csv
from worldmodel.driving.episode_workers import GROUP_BATCHES, episode_groups, run_episodes
from worldmodel.files import make_dir

log = logging.getLogger(__name__)


def evaluate_driving(config: EvalPolicyConfig) -> dict:
    """Evaluate ``config.driver`` on the cars of ``config.split`` (see the module docstring).

    Returns (and writes to ``config.out``) ``{"protocol", "selection", <summary>, "per_episode",
    "episodes_per_s", "wall_s", "csv"}``; the summary keys are those of ``summarise``: ``success_rate``,
    ``success_rate_ci95`` [lo, hi], ``success_not_at_fault_rate``, ``success_not_at_fault_rate_ci95`` [lo, hi],
    ``rear_ended_not_at_fault_rate``, ``mean_distance_m``, ``collision_rate`` (= ahead + behind),
    ``collision_ahead_rate``, ``collision_behind_rate``, ``offroad_rate``, ``stuck_rate``, ``mean_costs``,
    ``events`` (count per event, ``EVENTS`` first), ``diagnostics``. A per-episode record: ``vehicle``,
    ``trajectories``, ``recorded_id``, ``event``, ``success`` (arrived), ``rear_ended_not_at_fault``,
    ``success_not_at_fault`` (arrived or rear-ended not at fault), ``stuck``, ``distance_m``, ``steps``,
    ``recorded_steps`` (the recorded car's, from the hand-over to the end of the evaluated zone), ``time_s``,
    ``collision_ahead``, ``collision_behind``, ``offroad`` (from the event that ended the episode), at the last
    frame ``speed_mps``, ``recorded_speed_mps``, ``lag_m``, ``lateral_offset_m`` (the ego against its recording:
    ``episode_runner.against_recording``),
    ``cost_proximity``, ``cost_lane``, ``cost_offroad`` (means over the controlled steps) and the means of the
    driver's diagnostics. Raises ``DataError`` / ``ValueError`` (one line) on bad input, and ``DataError``
    when no car of the split can be evaluated (the reasons counted as in ``select_episodes``).
    """
    t0 = time.perf_counter()
    if config.workers < 1:
        raise ValueError(f"workers must be >= 1, got {config.workers}")
    if config.stuck_factor is not None and not config.stuck_factor > 0:
        raise ValueError(f"stuck_factor must be > 0 (or None), got {config.stuck_factor}")
    if config.episodes is not None and config.episodes < 1:
        raise ValueError(f"episodes (--episodes) must be >= 1, got {config.episodes} (omit it: all cars)")
    from worldmodel.driving.drivers import make_driver

    # built here first, also when workers build their own: a bad spec or option fails before any work
    driver = make_driver(config.driver, fm=config.fm, device=config.device, seed=config.seed, **config.driver_options)
    out = Path(config.out) if config.out else None
    if out is not None:
        make_dir(out.parent, out)
    files, chosen, selection = select_episodes(config.data, config.split, config.context_frames, config.episodes,
                                               config.seed, config.vehicles)  # fmt: skip
    log.info("%s split of %s: %s", config.split, config.data, selection)
    if not chosen:  # a summary of no episode would be all nulls: an error, with the reasons
        why = ", ".join(f"{reason} {n}" for reason, n in selection["excluded"].items() if n) or "none"
        raise DataError(config.data, f"no car of the {config.split} split can be evaluated "
                        f"({selection['split_cars']} cars; excluded: {why})")  # fmt: skip
    records = run_episodes(config, files, chosen, driver)
    records.sort(key=lambda r: r["vehicle"])
    wall = time.perf_counter() - t0
    protocol = {name: value for name, value in asdict(config).items() if name != "progress"}
    protocol["trajectories"] = [f.name for f in files]
    result = {"protocol": protocol, "selection": selection, **summarise(records),
              "episodes_per_s": len(records) / wall, "wall_s": wall,
              "csv": str(out.with_suffix(".csv")) if out is not None else None,
              "per_episode": records}  # fmt: skip
    if out is not None:
        write_csv(records, out.with_suffix(".csv"))
        write_json(result, out)
    return result


def bench_eval_episodes(
    data_dir: str | os.PathLike,
    driver: str = "no-action",
    episodes: int = 20,
    workers: int = 1,
    split: str = "test",
    seed: int = 0,
    fm: str | None = None,
    device: str = "cpu",
    batch: int = 16,
    driver_options: dict | None = None,
) -> dict:
    """Throughput of ``evaluate_driving`` (nothing written): ``{"eval_episodes_per_s", "eval_steps_per_s",
    "eval_episodes", "eval_workers", "eval_driver", "eval_success_rate"}``; the time includes starting the
    workers and loading the recordings, as a real evaluation pays them."""
    config = EvalPolicyConfig(driver=driver, data=str(data_dir), split=split, episodes=episodes, workers=workers,
                              seed=seed, out=None, fm=fm, device=device, batch=batch, progress=False,
                              driver_options=driver_options or {})  # fmt: skip
    result = evaluate_driving(config)
    steps = sum(r["steps"] for r in result["per_episode"])
    return {"eval_episodes_per_s": round(result["episodes_per_s"], 3),
            "eval_steps_per_s": round(steps / result["wall_s"], 1), "eval_episodes": result["episodes"],
            "eval_workers": workers, "eval_driver": driver, "eval_success_rate": result["success_rate"]}  # fmt: skip


__all__ = [
    "EVENTS",
    "EXCLUSIONS",
    "GROUP_BATCHES",
    "RECORD_KEYS",
    "Z_95",
    "Episode",
    "EpisodeRunner",
    "EvalPolicyConfig",
    "at_or_above_recorded_speed",
    "bench_eval_episodes",
    "dataset_files",
    "episode_groups",
    "episode_seed",
    "evaluate_driving",
    "locate_vehicle",
    "select_episodes",
    "stuck_steps",
    "summarise",
    "wilson_interval",
    "write_csv",
]
