"""Driving episodes in one process (steps 2-5 of ``worldmodel.driving.closed_loop``): ``EpisodeRunner``
drives groups of episodes in lockstep, each in its own ``ReplayEnv``, and makes one record per episode.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from worldmodel.costs import COST_NAMES
from worldmodel.data.replay import ReplaySimulation
from worldmodel.driving.closed_loop_config import EvalPolicyConfig
from worldmodel.driving.driver_protocol import as_lockstep
from worldmodel.driving.envs import ReplayEnvConfig
from worldmodel.driving.episode_selection import Episode
from worldmodel.traffic.view import ViewSpec


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


def against_recording(sim: ReplaySimulation) -> dict[str, float]:
    """The controlled car against its recording at the current frame: ``speed_mps``, ``recorded_speed_mps``,
    ``lag_m`` (how far the recording is ahead along x [m]) and ``lateral_offset_m`` (ego y - recorded y [m]), the
    last three None once the recording has ended; what a failure analysis asks first (was the ego slower than
    the recorded car when it was rear-ended? in another lane?)."""
    ghost = sim.ghost
    out = {"speed_mps": round(float(sim.v), 4), "recorded_speed_mps": None, "lag_m": None, "lateral_offset_m": None}
    if ghost is not None:
        out |= {"recorded_speed_mps": round(ghost["v"], 4), "lag_m": round(ghost["x"] - float(sim.x), 4),
                "lateral_offset_m": round(float(sim.y) - ghost["y"], 4)}  # fmt: skip
    return out


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
        self.last = against_recording(env.sim)

    def step(self, action) -> bool:
        """Drive one step with ``action``; True when the episode is over (its event in ``info``)."""
        self.obs, _, terminated, truncated, self.info = self.env.step(action)
        self.steps += 1
        self.costs += [self.info["costs"][name] for name in COST_NAMES]
        over = terminated or truncated
        if not over and self.stuck_steps is not None and self.steps >= self.stuck_steps:
            self.info, over = {**self.info, "event": "stuck"}, True
        self.not_at_fault = self.info["event"] == "collision_behind" and at_or_above_recorded_speed(self.env.sim)
        if over:
            self.last = against_recording(self.env.sim)
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
            **self.last,
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
            from worldmodel.driving.drivers import open_replay_env

            needs_context = bool(getattr(self.driver, "needs_context", True))
            view = getattr(self.driver, "view", None) or ViewSpec()  # a driver's model may see another view
            env_config = ReplayEnvConfig(context_frames=self.config.context_frames, return_context=needs_context,
                                         max_steps=self.config.max_steps, view=view)  # fmt: skip
            recording = self._recordings.get(k)
            env = self._envs[slot, k] = open_replay_env(self.files[k], env_config, recording=recording)
            self._recordings.setdefault(k, env.sim)
        return env

    def _driver(self):
        from worldmodel.driving.drivers import make_driver

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
                    record = episode.record(self.files[episode.episode.file].name)
                    if hasattr(driver, "slot_collected"):  # what a labelling driver kept of the episode
                        record["collected"] = driver.slot_collected(slot)
                    records[episode.episode.vehicle] = record
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
