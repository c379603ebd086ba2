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
"""

from __future__ import annotations

import csv
import logging
import math
import multiprocessing as mp
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldmodel.costs import COST_NAMES
from worldmodel.data.episodes import SPLITS, EpisodeReader
from worldmodel.data.extract import ExtractConfig
from worldmodel.data.hdf5 import AtomicPath, DataError, write_json
from worldmodel.data.trajectories import TrajectoryReader
from worldmodel.envs import ReplayEnvConfig
from worldmodel.files import make_dir
from worldmodel.traffic.replay import ReplaySimulation

log = logging.getLogger(__name__)

#: Wilson interval z for 95 %.
Z_95 = 1.959964
#: Why a car of the split gets no episode.
EXCLUSIONS = ("too_short", "past_zone_at_handover", "recording_ends_before_zone_end")
#: A unit of work (``episode_groups``) holds this many batches of episodes.
GROUP_BATCHES = 2
#: The events that end an episode, in the order of the summary's histogram.
EVENTS = ("arrived", "collision_ahead", "collision_behind", "offroad", "stuck", "timeout", "end_of_data")
#: The keys of an episode record that ``summarise`` does not treat as driver diagnostics.
RECORD_KEYS = ("vehicle", "trajectories", "recorded_id", "event", "success", "rear_ended_not_at_fault",
               "success_not_at_fault", "stuck", "distance_m", "steps", "recorded_steps", "time_s",
               "collision_ahead", "collision_behind", "offroad")  # fmt: skip


@dataclass(frozen=True)
class EvalPolicyConfig:
    """What ``evaluate_driving`` evaluates, and how."""

    driver: str = "no-action"
    """Driver spec for ``make_driver``: "no-action", "expert", "bot", a policy checkpoint, "plan:grad", ..."""
    data: str = "datasets/tiny"
    """Dataset directory (episodes.h5 + trajectories-*.h5), or its episodes.h5."""
    split: str = "test"
    """Cars of this split (train, val, test) are evaluated."""
    episodes: int | None = None
    """Evaluate only this many cars: a seeded choice (``seed``) among the selected ones, then sorted by
    vehicle id; None: all."""
    workers: int = 1
    """Worker processes (1: in this process)."""
    batch: int = 16
    """Episodes one process drives in lockstep (a policy acts for all of them in one forward pass; drivers
    that cannot, the planners and the simple ones, drive one at a time). Results depend on it (batched
    arithmetic), never on ``workers``."""
    seed: int = 0
    """Seeds the episode choice, the driver (``make_driver``) and every episode (with its vehicle id)."""
    out: str | None = "runs/eval.json"
    """Output JSON (a CSV of the episodes is written beside it); None: write nothing."""
    fm: str | None = None
    """Forward-model checkpoint for model-based drivers."""
    device: str = "cpu"
    """Torch device of model-based drivers."""
    context_frames: int = 20
    """Frames the car follows its recording before the driver takes over."""
    max_steps: int | None = None
    """Truncate episodes after this many controlled steps ("timeout"); None: only at the end of the data."""
    stuck_factor: float | None = 2.0
    """Truncate an episode ("stuck") after floor(stuck_factor x the steps its recorded car took from the
    hand-over to the end of the evaluated zone) controlled steps; None: no such cap."""
    driver_options: dict = field(default_factory=dict)
    """Extra keyword options of ``make_driver``."""
    progress: bool = True
    """Show a progress bar."""


@dataclass(frozen=True)
class Episode:
    """One car to drive."""

    vehicle: int
    """Vehicle id in episodes.h5."""
    file: int
    """Index of its trajectories file."""
    recorded_id: int
    """Its id in that file."""


# ------------------------------------------------------------------------------------------ episodes
def dataset_files(data: str | os.PathLike) -> tuple[Path, list[Path]]:
    """``(episodes.h5, [trajectories files in extraction order])`` of a dataset directory (or of its
    episodes.h5). Raises ``DataError`` (one line) when something is missing."""
    data = Path(data)
    episodes = data if data.suffix == ".h5" else data / "episodes.h5"
    folder = episodes.parent
    if not folder.is_dir():
        raise DataError(folder, "no such dataset directory")
    if not episodes.is_file():
        raise DataError(episodes, "no such file (a dataset directory holds episodes.h5 and trajectories-*.h5)")
    with EpisodeReader(episodes) as reader:
        source = reader.source
    listed = source[len("extract of ") :].split(", ") if source.startswith("extract of ") else []
    if listed and all((folder / name).is_file() for name in listed):
        return episodes, [folder / name for name in listed]

    def natural(path: Path) -> list:
        return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]

    found = sorted(folder.glob("trajectories*.h5"), key=natural)
    if not found:
        raise DataError(folder, "no trajectories*.h5 files (the recordings the episodes were extracted from)")
    return episodes, found


def select_episodes(
    data: str | os.PathLike, split: str = "test", context_frames: int = 20, episodes: int | None = None, seed: int = 0
) -> tuple[list[Path], list[Episode], dict]:
    """The episodes of a split: ``(trajectories files, episodes sorted by vehicle, selection summary)``.

    The summary: ``split_cars``, ``excluded`` (count per reason in ``EXCLUSIONS``), ``eligible``,
    ``evaluated``. With ``episodes`` = N, N of the eligible cars drawn with ``seed`` (then sorted).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    episodes_path, files = dataset_files(data)
    with EpisodeReader(episodes_path) as reader:
        table = reader.episodes
    vehicles = np.unique(table["vehicle"][table["split"] == SPLITS.index(split)].astype(np.int64))
    stride = ExtractConfig().id_stride
    file_of = vehicles // stride if len(files) > 1 else np.zeros_like(vehicles)
    recorded = vehicles % stride if len(files) > 1 else vehicles
    if np.any((file_of < 0) | (file_of >= len(files))):
        raise DataError(episodes_path, f"episode vehicle ids point to {int(file_of.max()) + 1} recordings, the "
                        f"directory has {len(files)}")  # fmt: skip
    excluded = dict.fromkeys(EXCLUSIONS, 0)
    chosen: list[Episode] = []
    for k, path in enumerate(files):
        mine = np.nonzero(file_of == k)[0]
        if not len(mine):
            continue
        with TrajectoryReader(path) as traj:
            sim = ReplaySimulation(traj, context_frames=context_frames)
            x = traj.read_rows(0, traj.num_rows, ("x",))["x"]
        index = {int(v): i for i, v in enumerate(sim.vehicle_table["id"])}
        eligible = set(sim.eligible_vehicles().tolist())
        zone_end = sim.road.config.evaluated_m[1]
        for j in mine:
            rid = int(recorded[j])
            i = index.get(rid)
            if i is None:
                raise DataError(path, f"vehicle {rid} (episode vehicle {vehicles[j]}) is not in this recording")
            if rid not in eligible:
                too_short = sim.vehicle_table["count"][i] <= context_frames
                excluded["too_short" if too_short else "past_zone_at_handover"] += 1
            elif x[sim.vehicle_table["start"][i] + sim.vehicle_table["count"][i] - 1] < zone_end:
                excluded["recording_ends_before_zone_end"] += 1
            else:
                chosen.append(Episode(int(vehicles[j]), k, rid))
    eligible_count = len(chosen)
    if episodes is not None and episodes < len(chosen):
        if episodes < 0:
            raise ValueError(f"episodes must be >= 0, got {episodes}")
        pick = np.random.default_rng(seed).choice(len(chosen), size=episodes, replace=False)
        chosen = [chosen[i] for i in sorted(pick)]
    summary = {"split_cars": len(vehicles), "excluded": excluded, "eligible": eligible_count,
               "evaluated": len(chosen)}  # fmt: skip
    return files, chosen, summary


def locate_vehicle(files: list[Path], vehicle: int) -> Episode:
    """The recording of an episode vehicle id (``data.extract``'s convention: with several files, file
    ``k`` holds ids ``k * id_stride + recorded id``). Raises ``DataError`` when no file can hold it."""
    stride = ExtractConfig().id_stride
    k, rid = divmod(int(vehicle), stride) if len(files) > 1 else (0, int(vehicle))
    if not 0 <= k < len(files):
        raise DataError(files[0].parent, f"no vehicle {vehicle}: ids of its {len(files)} recordings are below "
                        f"{len(files) * stride}")  # fmt: skip
    return Episode(int(vehicle), k, rid)


# ------------------------------------------------------------------------------------------ running
def episode_seed(seed: int, vehicle: int) -> int:
    """The seed of one episode: from (seed, vehicle id), independent of which worker runs it."""
    return int(np.random.SeedSequence([int(seed), int(vehicle)]).generate_state(1)[0])


def stuck_steps(recorded_steps: int | None, stuck_factor: float | None) -> int | None:
    """The "stuck" cap of an episode: floor(``stuck_factor`` x ``recorded_steps``) controlled steps (at least
    1); None without a factor or when the recording never reaches the end of the evaluated zone."""
    if stuck_factor is None or recorded_steps is None:
        return None
    return max(1, math.floor(stuck_factor * recorded_steps))


def at_or_above_recorded_speed(sim: ReplaySimulation) -> bool:
    """The controlled car drives at least as fast as its recording at the current frame (False once the
    recording has ended: nothing to compare with)."""
    ghost = sim.ghost
    return ghost is not None and sim.v >= ghost["v"]


class _Live:
    """An episode in progress in one slot of an ``EpisodeRunner``."""

    def __init__(self, episode: Episode, env, obs: dict, info: dict, stuck_factor: float | None) -> None:
        self.episode, self.env, self.obs, self.info = episode, env, obs, info
        self.costs = np.zeros(len(COST_NAMES))
        self.diagnostics: dict[str, float] = {}
        self.steps = 0
        self.recorded_steps = env.sim.recorded_steps_to_zone_end()
        self.stuck_steps = stuck_steps(self.recorded_steps, stuck_factor)
        self.not_at_fault = False

    def step(self, action) -> bool:
        """Drive one step with ``action``; True when the episode is over (its event in ``info``)."""
        self.obs, _, terminated, truncated, self.info = self.env.step(action)
        self.steps += 1
        self.costs += [self.info["costs"][name] for name in COST_NAMES]
        over = terminated or truncated
        if not over and self.stuck_steps is not None and self.steps >= self.stuck_steps:
            self.info, over = {**self.info, "event": "stuck"}, True
        self.not_at_fault = self.info["event"] == "collision_behind" and at_or_above_recorded_speed(self.env.sim)
        return over

    def record(self, trajectories: str) -> dict:
        info, steps, event = self.info, self.steps, self.info["event"]
        record = {
            "vehicle": self.episode.vehicle,
            "trajectories": trajectories,
            "recorded_id": self.episode.recorded_id,
            "event": event,
            "success": event == "arrived",
            "rear_ended_not_at_fault": self.not_at_fault,
            "success_not_at_fault": event == "arrived" or self.not_at_fault,
            "stuck": event == "stuck",
            "distance_m": round(float(info["distance_m"]), 4),
            "steps": steps,
            "recorded_steps": self.recorded_steps,
            "time_s": round(float(info["time_s"]), 4),
            "collision_ahead": event == "collision_ahead",
            "collision_behind": event == "collision_behind",
            "offroad": event == "offroad",
        }
        record.update(
            {f"cost_{name}": float(value / steps) for name, value in zip(COST_NAMES, self.costs, strict=True)}
        )
        for name, total in self.diagnostics.items():
            record[name if name not in record else f"diag_{name}"] = total / steps
        return record


class EpisodeRunner:
    """Runs episodes in one process: builds the driver once (on first use), loads each trajectories file once
    and gives every slot its own ``ReplayEnv`` on it. ``run_group`` drives a group of episodes in lockstep,
    ``config.batch`` at a time (a ``LockstepDriver`` acts for all of them at once; other drivers get one
    slot): a slot that finishes takes the group's next episode."""

    def __init__(self, config: EvalPolicyConfig, files: list[Path], driver=None) -> None:
        self.config, self.files = config, [Path(f) for f in files]
        self.driver = driver
        self._recordings: dict[int, ReplaySimulation] = {}
        self._envs: dict[tuple[int, int], object] = {}

    def _env(self, slot: int, k: int):
        env = self._envs.get((slot, k))
        if env is None:
            from worldmodel.evaluation.drivers import open_replay_env

            needs_context = bool(getattr(self.driver, "needs_context", True))
            env_config = ReplayEnvConfig(context_frames=self.config.context_frames, return_context=needs_context,
                                         max_steps=self.config.max_steps)  # fmt: skip
            recording = self._recordings.get(k)
            env = self._envs[slot, k] = open_replay_env(self.files[k], env_config, recording=recording)
            self._recordings.setdefault(k, env.sim)
        return env

    def _driver(self):
        from worldmodel.evaluation.drivers import as_lockstep, make_driver

        c = self.config
        if self.driver is None:
            self.driver = make_driver(c.driver, fm=c.fm, device=c.device, seed=c.seed, **c.driver_options)
        self.driver = as_lockstep(self.driver)
        return self.driver

    def _start(self, slot: int, episode: Episode) -> _Live:
        import torch

        env = self._env(slot, episode.file)
        seed = episode_seed(self.config.seed, episode.vehicle)
        torch.manual_seed(seed)
        obs, info = env.reset(seed=seed, options={"vehicle": episode.recorded_id})
        self.driver.reset_slot(slot, env, obs, info)
        return _Live(episode, env, obs, info, self.config.stuck_factor)

    def run_group(self, episodes: list[Episode]) -> list[dict]:
        """Records of ``episodes`` (see ``evaluate_driving``), in their order."""
        driver = self._driver()
        slots = max(1, min(self.config.batch, driver.max_slots or self.config.batch, len(episodes)))
        queue, live, records = list(reversed(episodes)), {}, {}
        while queue or live:
            for slot in range(slots):
                if slot not in live and queue:
                    live[slot] = self._start(slot, queue.pop())
            order = sorted(live)
            actions = driver.act_slots(order, [live[s].obs for s in order], [live[s].info for s in order])
            for slot, action in zip(order, actions, strict=True):
                episode = live[slot]
                for name, value in driver.slot_diagnostics(slot).items():
                    episode.diagnostics[name] = episode.diagnostics.get(name, 0.0) + float(value)
                if episode.step(action):
                    records[episode.episode.vehicle] = episode.record(self.files[episode.episode.file].name)
                    del live[slot]
        return [records[e.vehicle] for e in episodes]

    def run(self, episode: Episode) -> dict:
        """One episode: its record."""
        return self.run_group([episode])[0]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._recordings.clear()


_RUNNER: EpisodeRunner | None = None  # the worker process's runner (set by _init_worker)


def _init_worker(config: EvalPolicyConfig, files: list[Path]) -> None:
    global _RUNNER
    import torch

    torch.set_num_threads(1)
    _RUNNER = EpisodeRunner(config, files)


def _run_in_worker(group: list[Episode]) -> list[dict]:
    return _RUNNER.run_group(group)


def _pool_context(driver: str):
    """The worker start method: "forkserver" with this module (and so torch, OpenCV, h5py) and, for a
    model-based ``driver``, the model drivers imported once in the server (a worker then starts ~2 s sooner
    than with "spawn", which imports them again in every worker); "spawn" where there is no forkserver.
    Never "fork": the parent may hold OpenCV or torch thread pools."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        from worldmodel.evaluation.drivers import SIMPLE_DRIVERS

        models = [] if driver in SIMPLE_DRIVERS else ["worldmodel.evaluation.model_drivers"]
        ctx.set_forkserver_preload([__name__, "worldmodel.evaluation.drivers", *models])
        return ctx
    return mp.get_context("spawn")


def episode_groups(chosen: list[Episode], batch: int) -> list[list[Episode]]:
    """The units of work: consecutive runs of ``GROUP_BATCHES * batch`` episodes. A group is driven in
    lockstep by one process whichever worker gets it, so results do not depend on the number of workers."""
    size = max(1, GROUP_BATCHES * batch)
    return [chosen[i : i + size] for i in range(0, len(chosen), size)]


def _run_all(config: EvalPolicyConfig, files: list[Path], chosen: list[Episode], driver) -> list[dict]:
    """Records of all episodes, in the order of ``chosen`` (``driver``: used when running in this process;
    each worker builds its own)."""
    bar = tqdm(total=len(chosen), desc=f"eval {config.driver}", unit="episode", disable=not config.progress)
    groups = episode_groups(chosen, config.batch)
    try:
        if config.workers <= 1 or len(groups) <= 1:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as in the workers: results must not depend on the worker count
            runner = EpisodeRunner(config, files, driver)
            try:
                records = []
                for group in groups:
                    records += runner.run_group(group)
                    bar.update(len(group))
                return records
            finally:
                runner.close()
                torch.set_num_threads(threads)
        workers = min(config.workers, len(groups))
        with _pool_context(config.driver).Pool(workers, initializer=_init_worker, initargs=(config, files)) as pool:
            by_vehicle = {}
            for group_records in pool.imap_unordered(_run_in_worker, groups):
                by_vehicle |= {record["vehicle"]: record for record in group_records}
                bar.update(len(group_records))
        return [by_vehicle[e.vehicle] for e in chosen]
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------ summary
def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n`` (``(0, 1)`` when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(records: list[dict]) -> dict:
    """Rates and means over episode records (costs and diagnostics: mean over episodes of their
    per-episode means; None where there is no episode)."""
    n = len(records)

    def rate(key: str) -> float | None:
        return sum(bool(r[key]) for r in records) / n if n else None

    def mean(key: str) -> float | None:
        values = [r[key] for r in records if key in r]
        return float(np.mean(values)) if values else None

    def ci95(key: str) -> list[float]:
        return list(wilson_interval(sum(bool(r[key]) for r in records), n))

    standard = set(RECORD_KEYS) | {f"cost_{c}" for c in COST_NAMES}
    extra = sorted({k for r in records for k in r} - standard)
    events = Counter(r["event"] for r in records)
    return {
        "episodes": n,
        "success_rate": rate("success"),
        "success_rate_ci95": ci95("success"),
        "success_not_at_fault_rate": rate("success_not_at_fault"),
        "success_not_at_fault_rate_ci95": ci95("success_not_at_fault"),
        "rear_ended_not_at_fault_rate": rate("rear_ended_not_at_fault"),
        "mean_distance_m": mean("distance_m"),
        "collision_rate": (rate("collision_ahead") + rate("collision_behind")) if n else None,
        "collision_ahead_rate": rate("collision_ahead"),
        "collision_behind_rate": rate("collision_behind"),
        "offroad_rate": rate("offroad"),
        "stuck_rate": rate("stuck"),
        "mean_costs": {name: mean(f"cost_{name}") for name in COST_NAMES},
        "events": {name: events.pop(name, 0) for name in EVENTS} | dict(sorted(events.items())),
        "mean_steps": mean("steps"),
        "diagnostics": {name: mean(name) for name in extra},
    }


def write_csv(records: list[dict], path: str | os.PathLike) -> Path:
    """One row per episode record, atomically."""
    atomic = AtomicPath(path)
    columns = list(dict.fromkeys(k for r in records for k in r))
    try:
        with open(atomic.tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
        atomic.commit()
    except BaseException:
        atomic.abort()
        raise
    return atomic.path


# ------------------------------------------------------------------------------------------ entry points
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
    ``collision_ahead``, ``collision_behind``, ``offroad`` (from the event that ended the episode),
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
    from worldmodel.evaluation.drivers import make_driver

    # built here first, also when workers build their own: a bad spec or option fails before any work
    driver = make_driver(config.driver, fm=config.fm, device=config.device, seed=config.seed, **config.driver_options)
    out = Path(config.out) if config.out else None
    if out is not None:
        make_dir(out.parent, out)
    files, chosen, selection = select_episodes(config.data, config.split, config.context_frames, config.episodes,
                                               config.seed)  # fmt: skip
    log.info("%s split of %s: %s", config.split, config.data, selection)
    if not chosen:  # a summary of no episode would be all nulls: an error, with the reasons
        why = ", ".join(f"{reason} {n}" for reason, n in selection["excluded"].items() if n) or "none"
        raise DataError(config.data, f"no car of the {config.split} split can be evaluated "
                        f"({selection['split_cars']} cars; excluded: {why})")  # fmt: skip
    records = _run_all(config, files, chosen, driver)
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
