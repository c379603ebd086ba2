"""Gymnasium environments. Importing this module registers them:

- ``worldmodel/Traffic-v0`` (``TrafficEnv``): one controlled car among bots that react to it.
- ``worldmodel/Replay-v0``: recorded traffic replayed around one invisible controlled car (data issue).

Observation: ``Dict(image=Box(uint8, [4, H, W]), state=Box(float32, [4]))``: the ego view's three channels
(lanes, vehicles, off-road) plus the constant ego mask, and the state (x, y, vx, vy) in the road frame
[m, m/s]. Action: ``Box(2)`` in SI units, (longitudinal acceleration [m/s^2], curvature [1/m]).
Reward (for RL users): ``-(proximity + 0.2 lane + 1.0 off-road)``, the pixel costs of ``worldmodel.costs``
(SPEC §2) on the ego view, with the car's true speed. Terminated on a collision (exact oriented boxes)
or when the car's centre leaves the road; truncated on arriving at the end of the evaluated zone or after
``max_steps``. ``info``: ``costs`` (dict), ``event`` ("collision", "offroad", "arrived", "timeout" or
None), ``distance_m`` (along the road since the start), ``speed_mps``, ``time_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from worldmodel.costs import COST_NAMES, CostConfig, pixel_costs_numpy
from worldmodel.traffic.raster import EgoRasterizer, ego_masks, render_topdown
from worldmodel.traffic.scenario import Scenario, resolve_scenario
from worldmodel.traffic.simulation import TrafficSimulation
from worldmodel.traffic.view import ViewSpec

#: Action bounds: |a| <= 6.2 m/s^2 (PPUU's replay clip), |curvature| <= 0.2 1/m (5 m turning radius).
ACTION_LOW = np.array([-6.2, -0.2], dtype=np.float32)
ACTION_HIGH = np.array([6.2, 0.2], dtype=np.float32)
#: State (x [m], y [m], vx [m/s], vy [m/s]) bounds: any road up to 100 km long and 1 km wide.
STATE_LOW = np.array([-1e5, -1e3, -100.0, -100.0], dtype=np.float32)
STATE_HIGH = np.array([1e5, 1e3, 100.0, 100.0], dtype=np.float32)


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


class TrafficEnv(gym.Env):
    """One controlled car among reacting bots. At reset, after a warm-up, the controlled car takes the
    place (position, speed, size) of a bot near the start of the recorded section, in a random lane."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        scenario: str | Path | Scenario | None = None,
        config: TrafficEnvConfig | None = None,
        render_mode: str | None = None,
    ):
        self.config = config or TrafficEnvConfig()
        self.scenario = resolve_scenario(scenario if scenario is not None else self.config.scenario)
        self.render_mode = render_mode
        self.spec_view = self.config.view
        self.observation_space = observation_space(self.spec_view)
        self.action_space = action_space()
        self.sim: TrafficSimulation | None = None
        self.rasterizer: EgoRasterizer | None = None
        self.ego_id = -1

    # ---------------------------------------------------------------------------------------- api
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        sim_seed = int(self.np_random.integers(0, 2**31 - 1))
        if self.sim is None:
            self.sim = TrafficSimulation(self.scenario, seed=sim_seed)
            self.rasterizer = EgoRasterizer(self.sim.road, self.spec_view)
        else:
            self.sim.reset(sim_seed)
        sim = self.sim
        for _ in range(round(self.config.warmup_s / sim.dt)):
            sim.step()
        self.ego_id = self._take_over_a_bot()
        i = sim.index_of(self.ego_id)
        self._length, self._width = float(sim.length[i]), float(sim.width[i])
        self._ego_mask = ego_masks(self.spec_view, np.array([self._length]), np.array([self._width]))[0]
        self._start_x = float(sim.x[i])
        self._steps = 0
        obs, costs = self._observe()
        return obs, self._info(costs, None)

    def step(self, action):
        sim = self.sim
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), ACTION_LOW, ACTION_HIGH)
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
        obs, costs = self._observe()
        terminated = event in ("collision", "offroad")
        truncated = event in ("arrived", "timeout")
        return (
            obs,
            reward_from_costs(costs, self.config.costs),
            terminated,
            truncated,
            self._info(costs, event),
        )

    def render(self):
        if self.render_mode != "rgb_array" or self.sim is None:
            return None
        sim = self.sim
        snap = sim.snapshot()
        x = self._last_state[0]
        return render_topdown(
            sim.road, snap, px_per_m=4.0, x_range=(x - 60.0, x + 60.0), highlight=snap["controlled"],
            kind_names=sim.kind_names,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------ helpers
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

    def _observe(self) -> tuple[dict, np.ndarray]:
        sim = self.sim
        try:
            i = sim.index_of(self.ego_id)
        except KeyError:  # the car left the road at its end: keep the last observation
            return self._last_obs, self._last_costs
        snap = sim.snapshot()
        view = self.rasterizer.render(snap, np.array([i]))[0]
        image = np.concatenate([view, self._ego_mask[None]], axis=0)
        v, psi = sim.v[i], sim.psi[i]
        state = np.array([sim.x[i], sim.y[i], v * np.cos(psi), v * np.sin(psi)], dtype=np.float32)
        costs = pixel_costs_numpy(view[None], np.array([v]), np.array([self._length]), np.array([self._width]),
                                  self.spec_view, self.config.costs)[0]  # fmt: skip
        self._last_obs = {"image": image, "state": state}
        self._last_costs, self._last_state = costs, state
        return self._last_obs, costs

    def _info(self, costs: np.ndarray, event: str | None) -> dict:
        return {
            "costs": {name: float(c) for name, c in zip(COST_NAMES, costs, strict=True)},
            "event": event,
            "distance_m": float(self._last_state[0] - self._start_x),
            "speed_mps": float(np.hypot(self._last_state[2], self._last_state[3])),
            "time_s": self._steps * self.sim.dt,
        }


def register() -> None:
    """Register the environments with gymnasium (idempotent)."""
    if "worldmodel/Traffic-v0" not in gym.registry:
        gym.register(id="worldmodel/Traffic-v0", entry_point="worldmodel.envs:TrafficEnv")


register()
