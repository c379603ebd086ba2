"""The planners as drivers of ``Replay-v0``: ``plan:grad`` / ``plan:cem`` with a world ``oracle|cv|model``.

``PlannerDriver`` is a ``LockstepDriver``: at each step it takes every live episode's exact state from its
simulation (position, heading, speed: what the car's own sensors give), rolls the previous plan (shifted by
one step) out through the kinematics as the reference, asks the world provider for the futures along it in
one call for all episodes, and optimises all plans in one batch; it executes each plan's first action (and,
with ``replan_every`` = n > 1, its next n - 1 actions at the following steps before planning again).
The speed target is observed (``objective.target_speed``: traffic ahead in the ego's lane, else the
road's limit), and so are the lanes the planner may head for (``lateral_targets``: the ego's lane and its
neighbours that exist over the horizon). Diagnostics per step: the planned cost and its named terms; its
``intent`` (``driver_protocol.Intent``): the plan's poses through the kinematics and the world's frames it was
scored on (centred on the reference, the warm start's poses, not on the plan's).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

from worldmodel.driving import kinematics
from worldmodel.driving.driver_protocol import Intent
from worldmodel.driving.drivers import FirstSlot
from worldmodel.driving.objective import PRESETS, ObjectiveConfig, target_speed
from worldmodel.driving.planners import PlanInputs, Planner, PlannerConfig, shift
from worldmodel.driving.worlds import WORLDS, RenderedWorld, TrafficWorld, WorldProvider
from worldmodel.traffic.view import ViewSpec


@dataclass
class _Slot:
    sim: object
    plan: torch.Tensor
    previous_action: torch.Tensor
    window: object = None
    diagnostics: dict = field(default_factory=dict)
    planned: tuple | None = None  # (ego [4], plan [T, 2], frames [K, F, 3, H, W], reference [F, 3], frame steps)
    steps_to_plan: int = 0  # control steps until the next plan (0: plan at this one)


class PlannerDriver(FirstSlot):
    """A planner over a world provider, driving any number of episodes in lockstep."""

    max_slots = None

    def __init__(self, planner: PlannerConfig, objective: ObjectiveConfig, world: WorldProvider,
                 spec: ViewSpec | None = None, seed: int = 0, objective_name: str = "drive"):  # fmt: skip
        self.planner_config, self.objective, self.world, self.seed = planner, objective, world, seed
        self.spec = self.view = spec or ViewSpec()  # ``view``: the episodes' environments render with it
        self.needs_context = world.name == "model"
        self.name = f"plan:{planner.method}[{world.name},{objective_name}]"
        self._planners: dict[bool, Planner] = {}  # by "slow" (``PlannerConfig.slow_horizon``)
        self._slots: dict[int, _Slot] = {}

    def _get_planner(self, dt: float, slow: bool = False) -> Planner:
        if slow not in self._planners:
            config = self.planner_config.slow() if slow else self.planner_config
            self._planners[slow] = Planner(config, self.objective, dt, self.spec, seed=self.seed)
        return self._planners[slow]

    def _is_slow(self, sim) -> bool:
        c = self.planner_config
        return c.slow_horizon is not None and float(sim.v) < c.slow_speed_mps

    # ------------------------------------------------------------------ lockstep
    def reset_slot(self, slot: int, env, obs: dict, info: dict) -> None:
        # the random draws (CEM's candidates, the model's z) restart from a seed of torch's global generator,
        # which the evaluation harness seeds per episode: results do not depend on how episodes are spread
        seed = int(torch.randint(0, 2**62, (1,)))
        for slow in (False, True) if self.planner_config.slow_horizon is not None else (False,):
            self._get_planner(float(env.sim.dt), slow).generator.manual_seed(seed)
        if hasattr(self.world, "generator"):
            self.world.generator.manual_seed(seed)
        horizon = self.planner_config.horizon
        window = self.world.new_window(env, info) if hasattr(self.world, "new_window") else None
        self._slots[slot] = _Slot(env.sim, torch.zeros(1, horizon, 2), torch.zeros(1, 2), window)

    def act_slots(self, slots: list[int], observations: list[dict], infos: list[dict]) -> np.ndarray:
        states = [self._slots[s] for s in slots]
        for state, obs in zip(states, observations, strict=True):
            if state.window is not None:
                state.window.observe(obs)
        actions = np.empty((len(states), 2))
        due = [i for i, state in enumerate(states) if state.steps_to_plan == 0]
        for i, state in enumerate(states):
            if state.steps_to_plan > 0:  # the plan's next action, open loop
                actions[i] = state.plan[0, 0].numpy()
                state.previous_action, state.plan = state.plan[:, 0], shift(state.plan)
                state.steps_to_plan -= 1
        if due:
            actions[due] = self._plan([states[i] for i in due])
        return actions

    def _plan(self, chosen: list[_Slot]) -> np.ndarray:
        """Plan for the slots ``chosen``, in one batch per horizon (``PlannerConfig.slow_horizon``); their first
        actions ``[len(chosen), 2]``."""
        actions = np.empty((len(chosen), 2))
        slow = np.array([self._is_slow(state.sim) for state in chosen], dtype=bool)
        for is_slow in (True, False):
            index = np.flatnonzero(slow == is_slow)
            if len(index):
                actions[index] = self._plan_batch([chosen[i] for i in index], is_slow)
        return actions

    def _plan_batch(self, chosen: list[_Slot], slow: bool) -> np.ndarray:
        """Plan for the slots ``chosen`` in one batch with the (slow or usual) planner; their first actions."""
        sims = [state.sim for state in chosen]
        planner = self._get_planner(float(sims[0].dt), slow)
        ego = torch.tensor([[s.x, s.y, s.psi, s.v] for s in sims], dtype=torch.float32)  # [B, 4]
        warm = torch.cat([fit_horizon(state.plan, planner.config.horizon) for state in chosen])  # [B, T, 2]
        with torch.no_grad():
            reference = planner.reference(ego, warm)
        frames = self.world.futures(sims, reference.numpy(), planner.frame_steps, warm, [s.window for s in chosen])
        targets = torch.tensor([target_speed(s.vehicles(), s.road) for s in sims], dtype=torch.float32)
        sizes = torch.tensor([[s.length, s.width] for s in sims], dtype=torch.float32)
        previous = torch.cat([state.previous_action for state in chosen])
        c = planner.config
        lanes = torch.tensor([lateral_targets(s, c.horizon * s.dt, c.min_lane_change_speed_mps) for s in sims],
                             dtype=torch.float32)  # fmt: skip
        inputs = PlanInputs(ego, frames, previous, targets, sizes, lanes)
        plan, cost, terms = planner.plan(inputs, warm)
        for i, state in enumerate(chosen):
            state.plan = shift(plan[i : i + 1])
            state.previous_action = plan[i : i + 1, 0]
            state.diagnostics = {"planned_cost": float(cost[i]), "target_speed": float(targets[i])}
            state.diagnostics |= {f"term_{name}": float(value[i]) for name, value in terms.items() if name != "total"}
            state.planned = (ego[i], plan[i], frames.images[i], frames.reference[i], tuple(planner.frame_steps))
            state.steps_to_plan = planner.config.replan_every - 1
        return plan[:, 0].numpy().astype(np.float64)

    def executed(self, slot: int, action: np.ndarray) -> None:
        """Another driver's ``action`` [2] (SI) was executed in ``slot`` in place of this one's (a student's, under
        ``labelling.LabellingDriver``): the next plan's jerk is measured from it."""
        self._slots[slot].previous_action = torch.as_tensor(action, dtype=torch.float32).reshape(1, 2)

    def slot_diagnostics(self, slot: int) -> dict[str, float]:
        return dict(self._slots[slot].diagnostics)

    def slot_intent(self, slot: int) -> Intent | None:
        """The last plan of ``slot`` as an ``Intent`` (T = horizon poses; K futures at ``frame_steps``)."""
        state = self._slots[slot]
        if state.planned is None:
            return None
        ego, plan, images, reference, frame_steps = state.planned
        poses = kinematics.rollout(ego.double(), plan.double(), float(state.sim.dt))[:, :3]  # [T, 3]
        return Intent(poses.numpy(), images.numpy(), frame_steps,
                      reference.double().numpy(), self.spec, self.world.name)  # fmt: skip


def fit_horizon(plan: torch.Tensor, horizon: int) -> torch.Tensor:
    """A warm start ``[1, T, 2]`` as ``[1, horizon, 2]``: cut, or held at its last action."""
    t = plan.shape[1]
    if t >= horizon:
        return plan[:, :horizon]
    return torch.cat([plan, plan[:, -1:].expand(-1, horizon - t, -1)], dim=1)


def lateral_targets(sim, horizon_s: float, min_change_speed_mps: float = 0.0) -> list[float]:
    """World y [m] of the centres of the ego's lane and of its left and right neighbours (the ego's own
    lane's centre in place of a neighbour that does not exist from here to where the ego is in
    ``horizon_s`` at its speed, and of both below ``min_change_speed_mps`` outside a ramp lane). The ego's
    lane off the road: the nearest lane."""
    road = sim.road
    x, y = float(sim.x), float(sim.y)
    lane = int(road.nearest_lane(np.array([x]), np.array([y]))[0])
    ahead = x + max(float(sim.v), 1.0) * horizon_s
    may_change = float(sim.v) >= min_change_speed_mps or bool(road.is_ramp_lane(lane))
    targets = []
    for neighbour in (lane - 1, lane, lane + 1):
        centre = float(road.lane_center_y(neighbour))
        exists = road.lane_at(np.array([x, ahead]), np.array([centre, centre]))
        targets.append(centre if neighbour == lane or (may_change and bool((exists == neighbour).all())) else None)
    own = targets[1]
    return [own if t is None else t for t in targets]


def make_planner_driver(method: str, *, world: str = "cv", objective: str = "drive", fm: str | None = None,
                        device: str = "cpu", seed: int = 0, **options) -> PlannerDriver:  # fmt: skip
    """``plan:<method>`` over ``world`` with the ``objective`` preset; ``options``: fields of
    ``PlannerConfig`` and of ``ObjectiveConfig`` (strings from the command line are converted), and for the
    model world those of ``model_world.ModelWorldConfig``. Raises ValueError (one line) on a bad option."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}: expected one of {list(WORLDS)}")
    if objective not in PRESETS:
        raise ValueError(f"unknown objective {objective!r}: expected one of {list(PRESETS)}")
    planner_options, objective_options, world_options = {}, {}, {}
    planner_fields = {f.name: f for f in fields(PlannerConfig)}
    objective_fields = {f.name: f for f in fields(ObjectiveConfig) if f.name != "costs"}
    world_fields = {}
    if world == "model":
        from worldmodel.driving.model_world import ModelWorldConfig

        world_fields = {f.name: f for f in fields(ModelWorldConfig)}
    for name, value in options.items():
        for known, target in ((planner_fields, planner_options), (objective_fields, objective_options),
                              (world_fields, world_options)):  # fmt: skip
            if name in known:
                target[name] = _convert(known[name], value)
                break
        else:
            raise ValueError(f"unknown option {name!r} for plan:{method}: expected one of "
                             f"{sorted(planner_fields) + sorted(objective_fields) + sorted(world_fields)}")  # fmt: skip
    planner = PlannerConfig(method=method, **planner_options)
    objective_config = ObjectiveConfig.preset(objective, **objective_options)
    if world == "model":
        from worldmodel.driving.model_world import ModelWorld, ModelWorldConfig

        if fm is None:
            raise ValueError("the model world needs a forward model: pass --fm CHECKPOINT")
        provider = ModelWorld(fm, ModelWorldConfig(**world_options), objective_config, device=device, seed=seed)
        # the model's frames have the view (and cost geometry) of its training data
        return PlannerDriver(planner, provider.objective, provider, provider.view, seed, objective)
    if world == "traffic":
        if fm is None:
            raise ValueError("the traffic world needs a traffic model: pass --fm TRAFFIC.pt (worldmodel train traffic)")
        provider = TrafficWorld(fm)
        longest = max(planner.horizon, planner.slow().horizon)
        if longest > provider.model.config.horizon:
            raise ValueError(f"{fm}: the traffic model predicts {provider.model.config.horizon} steps, the planner "
                             f"plans {longest}; train one with --horizon {longest} or plan shorter")  # fmt: skip
        return PlannerDriver(planner, objective_config, provider, seed=seed, objective_name=objective)
    return PlannerDriver(planner, objective_config, RenderedWorld(world), seed=seed, objective_name=objective)


def _convert(spec, value):
    """A command-line string as the type of the dataclass field ``spec``."""
    if not isinstance(value, str):
        return value
    kind = str(spec.type)
    if value.lower() == "none":
        return None
    if "bool" in kind:
        return value.lower() in ("1", "true", "yes")
    if "int" in kind:
        return int(value)
    if "float" in kind:
        return float(value)
    return value


__all__ = ["PlannerDriver", "fit_horizon", "lateral_targets", "make_planner_driver"]
