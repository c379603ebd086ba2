"""Gymnasium environments. Importing this module registers them:

- ``worldmodel/Traffic-v0`` (``TrafficEnv``): one controlled car among bots that react to it.
- ``worldmodel/Replay-v0`` (``ReplayEnv``): recorded traffic (trajectories.h5) replayed around one invisible
  controlled car that takes the place of a recorded one (SPEC §1).

Both share ``EgoEnv``: the spaces, the observation, the reward and the common ``info`` keys.
Observation: ``Dict(image=Box(uint8, [4, H, W]), state=Box(float32, [4]))``: the ego view's three channels
(lanes, vehicles, off-road) plus the constant ego mask, and the state (x, y, vx, vy) in the road frame
[m, m/s]. Action: ``Box(2)`` in SI units, (longitudinal acceleration [m/s^2], curvature [1/m]), clipped to
the bounds. Reward (for RL users): ``-(proximity + 0.2 lane + 1.0 off-road)``, the pixel costs of
``worldmodel.costs`` (SPEC §2) on the ego view, with the car's true speed. ``info``: ``costs`` (dict),
``event`` (None or the reason the episode ended), ``distance_m`` (along x since the start), ``speed_mps``,
``time_s`` (since the start of control), plus what each environment adds.
Terminated on a collision or when the car's centre leaves the road; truncated when it arrives at the end of
the evaluated zone, runs out of recorded traffic (replay), or after ``max_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from worldmodel.costs import COST_NAMES, CostConfig, pixel_costs_numpy
from worldmodel.data.replay import ReplaySimulation
from worldmodel.traffic.raster import EgoRasterizer, ego_masks, render_topdown
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import Scenario, resolve_scenario
from worldmodel.traffic.simulation import TrafficSimulation
from worldmodel.traffic.view import ViewSpec

#: Action bounds: |a| <= 6.2 m/s^2 (PPUU's replay clip), |curvature| <= 0.2 1/m (5 m turning radius).
ACTION_LOW = np.array([-6.2, -0.2], dtype=np.float32)
ACTION_HIGH = np.array([6.2, 0.2], dtype=np.float32)
#: State (x [m], y [m], vx [m/s], vy [m/s]) bounds: any road up to 100 km long and 1 km wide.
STATE_LOW = np.array([-1e5, -1e3, -100.0, -100.0], dtype=np.float32)
STATE_HIGH = np.array([1e5, 1e3, 100.0, 100.0], dtype=np.float32)
#: Events that end an episode as terminated (the others truncate it).
TERMINAL_EVENTS = ("collision", "collision_ahead", "collision_behind", "offroad")
#: Half-width of the top-down render window along x [m] (``render``: ``traffic.raster.render_topdown``).
RENDER_HALF_WINDOW_M = 60.0


def observation_space(spec: ViewSpec) -> spaces.Dict:
    return spaces.Dict(
        {
            "image": spaces.Box(0, 255, (4, spec.height_px, spec.width_px), dtype=np.uint8),
            "state": spaces.Box(STATE_LOW, STATE_HIGH, dtype=np.float32),
        }
    )


def action_space() -> spaces.Box:
    return spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)


def reward_from_costs(costs: np.ndarray, config: CostConfig) -> float:
    """``-(w_prox proximity + w_lane lane + w_off off-road)`` for one ``[3]`` row of costs."""
    w = np.array([config.proximity_weight, config.lane_weight, config.offroad_weight])
    return -float(np.dot(w, costs))


class EgoEnv(gym.Env):
    """What both environments share: spaces, the ego observation and its costs, the reward, ``info``, the
    top-down render. A subclass calls ``_begin_episode`` at reset, ``_observe`` whenever the world moved,
    and returns ``_step_result(event)`` from ``step``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, view: ViewSpec, costs: CostConfig, render_mode: str | None):
        self.view_spec, self.cost_config = view, costs
        self.render_mode = render_mode
        self.observation_space = observation_space(view)
        self.action_space = action_space()
        self.rasterizer: EgoRasterizer | None = None
        self._dt = 0.1

    def _begin_episode(self, road: Road, dt: float, length_m: float, width_m: float, start_x: float) -> None:
        """A new controlled car of the given size [m], starting at ``start_x`` [m], on ``road``."""
        if self.rasterizer is None or self.rasterizer.road != road:
            self.rasterizer = EgoRasterizer(road, self.view_spec)
        self._dt = dt
        self._length, self._width, self._start_x = length_m, width_m, start_x
        self._ego_mask = ego_masks(self.view_spec, np.array([length_m]), np.array([width_m]))[0]
        self._steps = 0

    def _observe(self, vehicles: dict, ego: int, speed_mps: float) -> dict:
        """Observation of car ``ego`` among ``vehicles`` (arrays x, y, psi, length, width, lane) going at
        ``speed_mps``; also computes its costs. Returns ``{"image": [4, H, W] uint8, "state": [4] float32}``."""
        view = self.rasterizer.render(vehicles, np.array([ego]))[0]
        psi = float(vehicles["psi"][ego])
        state = np.array([vehicles["x"][ego], vehicles["y"][ego], speed_mps * np.cos(psi), speed_mps * np.sin(psi)],
                         dtype=np.float32)  # fmt: skip
        costs = pixel_costs_numpy(view[None], np.array([speed_mps]), np.array([self._length]),
                                  np.array([self._width]), self.view_spec, self.cost_config)[0]  # fmt: skip
        self._obs = {"image": np.concatenate([view, self._ego_mask[None]], axis=0), "state": state}
        self._costs = costs
        return self._obs

    def _info(self, event: str | None, **extra: Any) -> dict:
        state = self._obs["state"]
        return {
            "costs": {name: float(c) for name, c in zip(COST_NAMES, self._costs, strict=True)},
            "event": event,
            "distance_m": float(state[0] - self._start_x),
            "speed_mps": float(np.hypot(state[2], state[3])),
            "time_s": self._steps * self._dt,
            **extra,
        }

    def _step_result(self, event: str | None, **extra: Any) -> tuple[dict, float, bool, bool, dict]:
        """``(obs, reward, terminated, truncated, info)`` from the last observation and ``event``."""
        terminated = event in TERMINAL_EVENTS
        truncated = event is not None and not terminated
        reward = reward_from_costs(self._costs, self.cost_config)
        return self._obs, reward, terminated, truncated, self._info(event, **extra)

    @staticmethod
    def _clip_action(action) -> np.ndarray:
        return np.clip(np.asarray(action, dtype=np.float64).reshape(2), ACTION_LOW, ACTION_HIGH)

    def _render_topdown(self, vehicles: dict, kind_names: list[str], ghost: dict | None = None) -> np.ndarray:
        x = float(self._obs["state"][0])
        return render_topdown(
            self.rasterizer.road, vehicles, x_range=(x - RENDER_HALF_WINDOW_M, x + RENDER_HALF_WINDOW_M),
            highlight=vehicles["controlled"], ghost=ghost, kind_names=kind_names,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------ bots
@dataclass(frozen=True)
class TrafficEnvConfig:
    """Settings of ``TrafficEnv``."""

    scenario: str = "i80"
    """Scenario name in envs/ or a TOML path."""
    warmup_s: float = 60.0
    """Simulated time before the controlled car takes over a bot [s]."""
    max_steps: int = 600
    """Truncate after this many steps."""
    view: ViewSpec = field(default_factory=ViewSpec)
    """Ego view geometry."""
    costs: CostConfig = field(default_factory=CostConfig)
    """Cost weights (reward)."""


class TrafficEnv(EgoEnv):
    """One controlled car among reacting bots. At reset, after a warm-up, the controlled car takes the
    place (position, speed, size) of a bot near the start of the recorded section, in a random lane.
    Events: "collision", "offroad", "arrived", "timeout"."""

    def __init__(
        self,
        scenario: str | Path | Scenario | None = None,
        config: TrafficEnvConfig | None = None,
        render_mode: str | None = None,
    ):
        self.config = config or TrafficEnvConfig()
        super().__init__(self.config.view, self.config.costs, render_mode)
        self.scenario = resolve_scenario(scenario if scenario is not None else self.config.scenario)
        self.sim: TrafficSimulation | None = None
        self.ego_id = -1

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        sim_seed = int(self.np_random.integers(0, 2**31 - 1))
        if self.sim is None:
            self.sim = TrafficSimulation(self.scenario, seed=sim_seed)
        else:
            self.sim.reset(sim_seed)
        sim = self.sim
        for _ in range(round(self.config.warmup_s / sim.dt)):
            sim.step()
        self.ego_id = self._take_over_a_bot()
        i = sim.index_of(self.ego_id)
        self._begin_episode(sim.road, sim.dt, float(sim.length[i]), float(sim.width[i]), float(sim.x[i]))
        obs = self._observe_sim()
        return obs, self._info(None)

    def step(self, action):
        sim = self.sim
        action = self._clip_action(action)
        events = sim.step({self.ego_id: (float(action[0]), float(action[1]))})
        self._steps += 1
        event = None
        if len(events.collisions) and (events.collisions == self.ego_id).any():
            event = "collision"
        i = sim.index_of(self.ego_id) if event is None and self.ego_id not in events.exited else None
        if event is None and i is None:
            event = "arrived"
        elif event is None and not sim.road.on_road(sim.x[i : i + 1], sim.y[i : i + 1])[0]:
            event = "offroad"
        elif event is None and sim.x[i] >= sim.road.config.evaluated_m[1]:
            event = "arrived"
        elif event is None and self._steps >= self.config.max_steps:
            event = "timeout"
        self._observe_sim()
        return self._step_result(event)

    def render(self):
        if self.render_mode != "rgb_array" or self.sim is None:
            return None
        snap = self.sim.snapshot()
        return self._render_topdown(snap, self.sim.kind_names)

    def _take_over_a_bot(self) -> int:
        sim = self.sim
        start = sim.road.config.section_m[0]
        mainline = (sim.lane >= 0) & (sim.lane < sim.road.lanes) & ~sim.controlled
        near = np.nonzero(mainline & (sim.x >= start) & (sim.x <= start + 40.0))[0]
        if len(near) == 0:  # light traffic: the bot closest to the section start
            cand = np.nonzero(mainline)[0]
            near = cand[np.argsort(np.abs(sim.x[cand] - start))[:1]]
        if len(near) == 0:
            raise RuntimeError("TrafficEnv: no bot on the road to take over; increase warmup_s or the demand")
        i = int(near[self.np_random.integers(len(near))])
        state = (sim.x[i], sim.y[i], sim.psi[i], sim.v[i], sim.length[i], sim.width[i])
        sim.remove(np.array([sim.ids[i]]))
        return sim.add_controlled(*(float(s) for s in state))

    def _observe_sim(self) -> dict:
        sim = self.sim
        try:
            i = sim.index_of(self.ego_id)
        except KeyError:  # the car left the road at its end: keep the last observation
            return self._obs
        return self._observe(sim.snapshot(), i, float(sim.v[i]))


# ---------------------------------------------------------------------------------------- replay
@dataclass(frozen=True)
class ReplayEnvConfig:
    """Settings of ``ReplayEnv``."""

    context_frames: int = 20
    """Frames the controlled car follows its own recording before the policy drives (the last one is the
    hand-over frame, whose observation ``reset`` returns)."""
    return_context: bool = True
    """Put the observations of the context frames (a list, the last one the reset observation) in the
    reset ``info["context"]`` (renders ``context_frames - 1`` extra views)."""
    max_steps: int | None = None
    """Truncate ("timeout") after this many controlled steps; None: only when the recording ends (PPUU)."""
    view: ViewSpec = field(default_factory=ViewSpec)
    """Ego view geometry."""
    costs: CostConfig = field(default_factory=CostConfig)
    """Cost weights (reward)."""


class ReplayEnv(EgoEnv):
    """Recorded traffic replayed around one invisible controlled car (``ReplaySimulation``).

    ``reset(options={"vehicle": id})`` takes the place of that recorded vehicle (default: a random one,
    drawn with ``self.np_random`` among ``ReplaySimulation.eligible_vehicles()``: recorded for at least
    ``context_frames + 1`` frames, short of the end of the evaluated zone at the hand-over); the car follows its
    recording through the context and ``reset`` returns the observation at the hand-over frame. Then each
    ``step`` drives it. Events: "collision_ahead", "collision_behind" (terminated; the other car ahead of /
    behind the controlled one), "offroad" (terminated), "arrived", "end_of_data", "timeout" (truncated).
    ``info`` adds ``ghost`` (the recorded position ``{"x", "y"}`` [m] of the car at this frame, None once its
    recording has ended), ``vehicle`` (the recorded id), ``frame``, and at reset ``context`` (optional).
    ``trajectories``: a file, or a ``ReplaySimulation`` whose loaded recording this environment shares.
    """

    def __init__(
        self, trajectories: str | Path | ReplaySimulation, config: ReplayEnvConfig | None = None,
        render_mode: str | None = None,
    ):  # fmt: skip
        self.config = config or ReplayEnvConfig()
        super().__init__(self.config.view, self.config.costs, render_mode)
        self.sim = ReplaySimulation(trajectories, context_frames=self.config.context_frames)
        self._eligible = self.sim.eligible_vehicles()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        vehicle = (options or {}).get("vehicle")
        if vehicle is None:
            if len(self._eligible) == 0:
                raise RuntimeError(
                    f"ReplayEnv: no vehicle recorded for {self.config.context_frames + 1} frames or more "
                    "that is short of the end of the evaluated zone at the hand-over"
                )
            vehicle = int(self._eligible[self.np_random.integers(len(self._eligible))])
        sim = self.sim
        sim.start(int(vehicle))
        self._begin_episode(sim.road, sim.dt, sim.length, sim.width, sim.start_x)
        context = [self._observe_sim()] if self.config.return_context else []
        while sim.in_context:
            sim.step()
            if self.config.return_context:
                context.append(self._observe_sim())
        obs = self._observe_sim() if not self.config.return_context else context[-1]
        extra = {"context": context} if self.config.return_context else {}
        return obs, self._info(None, **self._replay_info(), **extra)

    def step(self, action):
        events = self.sim.step(self._clip_action(action))
        self._steps += 1
        event = events.event
        if event is None and self.config.max_steps is not None and self._steps >= self.config.max_steps:
            event = "timeout"
        self._observe_sim()
        return self._step_result(event, **self._replay_info())

    def render(self):
        if self.render_mode != "rgb_array" or self.sim.ego_id is None:
            return None
        return self._render_topdown(self.sim.vehicles(), self.sim.kind_names, ghost=self.sim.ghost)

    def _observe_sim(self) -> dict:
        return self._observe(self.sim.vehicles(), 0, self.sim.v)  # the controlled car is row 0

    def _replay_info(self) -> dict:
        ghost = self.sim.ghost
        return {
            "ghost": None if ghost is None else {"x": ghost["x"], "y": ghost["y"]},
            "vehicle": self.sim.ego_id,
            "frame": self.sim.frame,
        }


def register() -> None:
    """Register the environments with gymnasium (idempotent)."""
    if "worldmodel/Traffic-v0" not in gym.registry:
        gym.register(id="worldmodel/Traffic-v0", entry_point="worldmodel.driving.envs:TrafficEnv")
    if "worldmodel/Replay-v0" not in gym.registry:
        gym.register(id="worldmodel/Replay-v0", entry_point="worldmodel.driving.envs:ReplayEnv")


register()
