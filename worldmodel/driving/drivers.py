"""Drivers of the controlled car in ``ReplayEnv``: the simple drivers and ``make_driver`` (the ``Driver``
protocol is re-exported from ``driver_protocol``).

Simple drivers (no model, no torch):

- ``"no-action"`` (``NoActionDriver``): zero action, keeps its speed and heading (PPUU's baseline).
- ``"expert"`` (``ExpertDriver``): replays the car's recorded actions (exact ones for simulated bots, else
  inferred from positions as ``replay_drift`` does), tracking the recorded speed and heading so that a
  clipped action does not make it drift. Reaches the end of the evaluated zone on ~every car whose
  recording does: a check of the evaluation harness.
- ``"bot"`` (``BotDriver``): IDM car-following among the recorded vehicles, lane keeping, a MOBIL
  lane-change rule and ramp merging: the "skilled driver" reference. The recorded cars do not react to it,
  so it can be rear-ended.

Any other spec (a checkpoint path, ``plan:grad``, ``plan:cem``) goes to
``worldmodel.driving.model_drivers.make_model_driver``, imported only then.

A driver may set ``needs_context = False``: the harness then asks the environment for no context
observations (``ReplayEnvConfig.return_context``), which saves ``context_frames - 1`` renders per episode.
Drivers without the attribute get the context.

A driver may also drive several episodes in lockstep (``LockstepDriver``: one batched network forward per
step for all of them); the harness wraps any other driver with ``OneSlot``. The protocols and their adapters
are in ``worldmodel.driving.driver_protocol`` (re-exported here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from worldmodel.data.replay import ReplaySimulation, recorded_headings
from worldmodel.data.trajectories import TrajectoryReader
from worldmodel.driving.driver_protocol import Driver, FirstSlot, LockstepDriver, OneSlot, as_lockstep
from worldmodel.driving.envs import ACTION_HIGH, ACTION_LOW, ReplayEnv, ReplayEnvConfig
from worldmodel.traffic import drivers as bots
from worldmodel.traffic import kinematics

#: Driver specs served by this module (anything else is a model driver).
SIMPLE_DRIVERS = ("no-action", "expert", "bot")


def open_replay_env(
    trajectories: str | os.PathLike,
    config: ReplayEnvConfig | None = None,
    render_mode: str | None = None,
    recording: ReplaySimulation | None = None,
) -> ReplayEnv:
    """A ``ReplayEnv`` on a trajectories file that remembers the file (``env.trajectories_path``), which the
    expert driver reads its recorded actions from. ``recording``: a simulation of that file already loaded,
    whose recording the environment shares instead of reading the file again."""
    env = ReplayEnv(trajectories if recording is None else recording, config, render_mode=render_mode)
    env.trajectories_path = Path(trajectories)
    return env


def _trajectories_path(env: ReplayEnv) -> Path:
    for owner, name in ((env, "trajectories_path"), (env, "path"), (env.sim, "path")):
        path = getattr(owner, name, None)
        if path is not None:
            return Path(path)
    raise ValueError("expert driver: the environment does not say its trajectories file; open it with "
                     "worldmodel.driving.drivers.open_replay_env")  # fmt: skip


# ------------------------------------------------------------------------------------------ no action
class NoActionDriver:
    """Zero action: the car keeps its speed and heading from the hand-over (PPUU's "no action")."""

    name = "no-action"
    needs_context = False

    def reset(self, env: ReplayEnv, obs: dict, info: dict) -> None:
        pass

    def act(self, obs: dict, info: dict) -> np.ndarray:
        return np.zeros(2, dtype=np.float64)

    def diagnostics(self) -> dict[str, float]:
        return {}


# ------------------------------------------------------------------------------------------ expert
@dataclass
class _Recording:
    """What the expert needs of one trajectories file."""

    index: dict[int, int]
    """Vehicle id -> row of ``/vehicles``."""
    start: np.ndarray
    """[V] first track row of each vehicle."""
    count: np.ndarray
    """[V] rows of each vehicle."""
    columns: dict[str, np.ndarray]
    """Track columns [R]: ``vx``, ``vy`` (and ``heading`` if present) for files with exact actions, else
    ``x``, ``y`` (positions to invert)."""
    exact: bool
    """The file has the exact recorded actions (``accel``, ``curvature``)."""
    dt: float


def _load_recording(path: Path) -> _Recording:
    with TrajectoryReader(path) as reader:
        exact = "accel" in reader.columns and "curvature" in reader.columns
        names = (("vx", "vy") + (("heading",) if "heading" in reader.columns else ())) if exact else ("x", "y")
        columns = {k: v.astype(np.float64) for k, v in reader.read_rows(0, reader.num_rows, names).items()}
        table = reader.vehicles
        return _Recording(index={int(v): k for k, v in enumerate(table["id"])}, start=table["start"].astype(np.int64),
                          count=table["count"].astype(np.int64), columns=columns, exact=exact,
                          dt=float(reader.dt))  # fmt: skip


class ExpertDriver:
    """Drives the controlled car along its recording by the recorded actions, from the hand-over frame.

    The recorded speeds and headings are tracked: the action at frame t is
    ``a = (v_rec[t+1] - v) / dt``, ``b = tan(psi_rec[t+1] - psi) / (v dt)`` with the car's current speed
    ``v`` and heading ``psi``. While the car is on its recorded state this *is* the recorded action (the
    kinematics map one onto the other), so for files with exact actions (simulated bots: ``accel``,
    ``curvature`` columns; speed ``hypot(vx, vy)`` and ``heading`` as ``ReplaySimulation`` reads them)
    the recording is reproduced exactly. The feedback matters where an action was clipped by the
    environment (the simulator's bots may brake harder than the 6.2 m/s^2 bound: the open-loop replay then
    keeps a speed error and drifts for good; tracking catches up within a few steps). Files without exact
    actions (NGSIM): speeds and headings inferred from the recorded positions (``kinematics.invert_actions``, as
    ``replay_drift`` does), which also absorbs the difference between the recorded speed at the hand-over
    and the inferred one. Accelerations are clipped to ``MAX_REPLAY_ACCEL_MPS2``. After the car's recording
    ends: zero action. Each trajectories file is read once per driver (then cached).
    """

    name = "expert"
    needs_context = False

    def __init__(self) -> None:
        self._recordings: dict[Path, _Recording] = {}
        self._v, self._psi = np.zeros(0), np.zeros(0)

    def reset(self, env: ReplayEnv, obs: dict, info: dict) -> None:
        path = _trajectories_path(env)
        rec = self._recordings.get(path)
        if rec is None:
            rec = self._recordings[path] = _load_recording(path)
        sim = self._sim = env.sim
        k = rec.index[int(sim.ego_id)]
        rows = slice(int(rec.start[k]), int(rec.start[k] + rec.count[k]))
        self._start_frame, self._dt = sim.start_frame, rec.dt
        c = rec.columns
        if rec.exact:
            self._v = np.hypot(c["vx"][rows], c["vy"][rows])
            self._psi = c["heading"][rows] if "heading" in c else recorded_headings(
                c["vx"][rows], c["vy"][rows], np.array([rows.stop - rows.start]))  # fmt: skip
        else:
            self._psi, self._v, *_ = kinematics.invert_actions(c["x"][rows], c["y"][rows], rec.dt)

    def act(self, obs: dict, info: dict) -> np.ndarray:
        t = self._sim.frame - self._start_frame  # row of the current frame in the car's recording
        if t + 1 >= len(self._v):
            return np.zeros(2)
        v, psi, dt = self._sim.v, self._sim.psi, self._dt
        limit = kinematics.MAX_REPLAY_ACCEL_MPS2
        accel = float(np.clip((self._v[t + 1] - v) / dt, -limit, limit))
        turn = (self._psi[t + 1] - psi + np.pi) % (2 * np.pi) - np.pi  # wrapped to [-pi, pi)
        curvature = float(np.tan(turn) / (v * dt)) if v * dt > 1e-6 else 0.0
        return np.array([accel, curvature])

    def diagnostics(self) -> dict[str, float]:
        return {}


# ------------------------------------------------------------------------------------------ bot
@dataclass(frozen=True)
class BotConfig(bots.DriverSettings):
    """Settings of ``BotDriver``: the simulator's bot settings (``traffic.drivers.DriverSettings``; defaults:
    the mean driver of the i80 scenario) and what only a bot among recorded traffic needs."""

    desired_speed_mps: float | None = None
    """IDM desired speed v0 [m/s]; None: the road's speed limit."""
    lane_changes: bool = False
    """Discretionary MOBIL lane changes (merging off an on-ramp is always on). Off by default: among
    recorded cars that do not yield they cost more than they gain (on 60 cars of i80-sim: 48 arrivals with
    them, 52 without)."""
    anticipation_s: float = 1.0
    """A recorded car ahead counts as in the lane when its heading takes it there within this time [s]."""
    change_done_m: float = 0.3
    """A lane change ends this close to the target lane's centre [m]: sooner than the simulator's bots, as
    the recorded cars of the origin lane, which do not yield, are left behind sooner (with 0.15 m one of 50
    i80-tiny merges more is rear-ended)."""


class BotDriver:
    """The controlled car driven like a simulator bot, among the recorded vehicles (which ignore it).

    The bot is the simulator's (``traffic.drivers``): only the neighbours are found differently.
    Neighbours: in a lane, the recorded vehicles that occupy it (their body overlaps the lane strip by more
    than 0.3 m; ahead also those cutting in: there within ``anticipation_s`` along their heading), nearest
    by centre along x; for the car's own driving also those that overlap its body laterally.
    Longitudinal: ``traffic.drivers.follow_accel`` behind the leader and the car after it; while changing
    lanes, the stricter of the origin and target lanes; on an on-ramp also IDM toward the ramp's end (a
    standing obstacle). Accelerations are bounded to [-6.2, max_accel] m/s^2.
    Lateral: ``traffic.drivers.lane_keeping_curvature`` toward the centre of the target lane (at the
    hand-over: the lane the car is heading into within ``lateral_time_s``).
    Lane changes: every ``change_period_s`` (not within ``change_cooldown_s`` of the end of the last),
    ``traffic.drivers.change_incentive`` over the adjacent mainline lanes, the followers' accelerations
    estimated with this car's IDM parameters; from an on-ramp the merge into the rightmost mainline lane is
    mandatory (only safety counts). Discretionary changes are off unless ``lane_changes=True``. The recorded
    followers do not react to the car: it can be rear-ended (hence ``follower_horizon_s``).
    """

    name = "bot"
    needs_context = False

    def __init__(self, config: BotConfig | None = None) -> None:
        self.config = config or BotConfig()

    def reset(self, env: ReplayEnv, obs: dict, info: dict) -> None:
        sim = self._sim = env.sim
        road = sim.road
        c = self.config
        self._v0 = c.desired_speed_mps if c.desired_speed_mps is not None else road.config.speed_limit_mps
        ahead_y = sim.y + np.sin(sim.psi) * sim.v * c.lateral_time_s
        self._lane = self._nearest_lane(sim.x, ahead_y)
        self._origin: int | None = None
        self._step = 0
        self._ready_at = 0  # first step of the next lane-change decision (cooldown)
        self._period = max(round(c.change_period_s / sim.dt), 1)
        self._cooldown = round(c.change_cooldown_s / sim.dt)

    def _nearest_lane(self, x: float, y: float) -> int:
        road = self._sim.road
        lane = int(road.lane_at(np.array([x]), np.array([y]))[0])
        if lane < 0:  # off the lanes: the nearest mainline lane
            lane = int(np.clip(np.floor(y / road.lane_width_m), 0, road.lanes - 1))
        return lane

    def _neighbours(self, others: dict, lane: int, body: bool = False) -> tuple[int | None, int | None, int | None]:
        """Indices (into ``others``) of the leader, the car after it and the follower in ``lane`` (None:
        nobody); with ``body``, vehicles that overlap the car's own body laterally count as in the lane too."""
        sim, road = self._sim, self._sim.road
        centre = float(road.lane_center_y(lane))
        reach = 0.5 * (road.lane_width_m + others["width"]) - 0.3
        occupies = np.abs(others["y"] - centre) < reach
        if body:
            occupies |= np.abs(others["y"] - sim.y) < 0.5 * (others["width"] + sim.width)
        dx = others["x"] - sim.x
        # a car ahead also counts when it is cutting in: where its heading takes it within anticipation_s
        y_soon = others["y"] + others["v"] * np.sin(others["psi"]) * self.config.anticipation_s
        cutting_in = np.abs(y_soon - centre) < reach
        ahead, behind = np.nonzero((occupies | cutting_in) & (dx > 0))[0], np.nonzero(occupies & (dx <= 0))[0]
        ahead = ahead[np.argsort(dx[ahead], kind="stable")]
        leader = int(ahead[0]) if len(ahead) else None
        second = int(ahead[1]) if len(ahead) > 1 else None
        follower = int(behind[np.argmax(dx[behind])]) if len(behind) else None
        return leader, second, follower

    def _gap(self, others: dict, i: int | None, behind: bool = False) -> float:
        """Bumper gap [m] between the car and vehicle ``i`` (inf for None)."""
        if i is None:
            return float("inf")
        dx = (self._sim.x - others["x"][i]) if behind else (others["x"][i] - self._sim.x)
        return float(dx - 0.5 * (others["length"][i] + self._sim.length))

    def _idm(self, v: float, gap: float, dv: float) -> float:
        """IDM acceleration [m/s^2] with this car's settings (also its estimate for recorded followers)."""
        return float(bots.follow_accel(self.config, np.float64(v), self._v0, np.float64(gap), np.float64(dv)))

    def _follow(self, others: dict, leader: int | None, second: int | None = None) -> float:
        """The car's IDM acceleration [m/s^2] behind ``leader`` (and the ``second`` car ahead)."""
        sim, c = self._sim, self.config
        gaps = [self._gap(others, i) for i in (leader, second)]
        dvs = [sim.v - others["v"][i] if i is not None else 0.0 for i in (leader, second)]
        return float(bots.follow_accel(c, np.float64(sim.v), self._v0, *(np.float64(a) for a in (gaps[0], dvs[0],
                                                                                                gaps[1], dvs[1]))))  # fmt: skip

    def _lane_accel(self, others: dict, lane: int, body: bool = False) -> float:
        """Acceleration [m/s^2] in ``lane``: behind its leader and the car after it, and before the end of
        a ramp lane."""
        sim, road = self._sim, self._sim.road
        leader, second, _ = self._neighbours(others, lane, body)
        accel = self._follow(others, leader, second)
        if road.is_ramp_lane(lane):  # brake for the end of the ramp
            gap = float(road.ramp_end_m(np.array([lane]))[0]) - sim.x - 0.5 * sim.length
            accel = min(accel, float(bots.end_of_lane_accel(self.config, np.float64(sim.v), self._v0, gap)))
        return accel

    def _follower_accels(self, others: dict, follower: int | None, leader: int | None) -> tuple[float, float]:
        """IDM accelerations [m/s^2] of ``follower`` behind ``leader`` and behind the car (0, 0 for None)."""
        if follower is None:
            return 0.0, 0.0
        sim, v_f = self._sim, others["v"][follower]
        gap_to_car = self._gap(others, follower, behind=True)
        if leader is None:
            behind_leader = self._idm(v_f, np.inf, 0.0)
        else:
            gap = self._gap(others, leader) + gap_to_car + sim.length
            behind_leader = self._idm(v_f, gap, v_f - others["v"][leader])
        return behind_leader, self._idm(v_f, gap_to_car, v_f - sim.v)

    def _change_options(self, others: dict) -> list[tuple[int, float]]:
        """(target lane, ``change_incentive``) of each allowed change, as the simulator's bots weigh them."""
        sim, road, c = self._sim, self._sim.road, self.config
        on_ramp = bool(road.is_ramp_lane(self._lane))
        leader, second, follower = self._neighbours(others, self._lane)
        a_own = self._follow(others, leader, second)
        behind_leader, behind_car = self._follower_accels(others, follower, leader)
        old_follower = (np.float64(behind_car), np.float64(behind_leader))  # before / after the car leaves
        options = []
        for direction in (-1, 1):
            target = self._lane + direction
            if not (0 <= target < road.lanes and (not on_ramp or direction < 0)):  # never into a ramp lane
                continue
            new_leader, _, new_follower = self._neighbours(others, target)
            gap_behind = self._gap(others, new_follower, behind=True)
            closing = others["v"][new_follower] - sim.v if new_follower is not None else 0.0
            gain = bots.change_incentive(
                c, float(direction), np.bool_(on_ramp), np.float64(sim.v), np.float64(a_own),
                np.float64(self._follow(others, new_leader)), np.float64(self._gap(others, new_leader)),
                np.float64(gap_behind), np.float64(closing),
                tuple(np.float64(a) for a in self._follower_accels(others, new_follower, new_leader)), old_follower,
            )  # fmt: skip
            options.append((target, float(gain)))
        return options

    def _decide_lane(self, others: dict) -> None:
        sim, road, c = self._sim, self._sim.road, self.config
        if self._origin is not None:  # changing: done once near the target lane's centre
            if abs(sim.y - float(road.lane_center_y(self._lane))) < c.change_done_m:
                self._origin, self._ready_at = None, self._step + self._cooldown
            return
        if self._step < self._ready_at or self._step % self._period:
            return
        if not (road.is_ramp_lane(self._lane) or c.lane_changes):
            return
        best = int(bots.best_lane(np.float64(self._lane), self._change_options(others)))
        if best != self._lane:
            self._origin, self._lane = self._lane, best

    def act(self, obs: dict, info: dict) -> np.ndarray:
        sim, road, c = self._sim, self._sim.road, self.config
        everyone = sim.vehicles()  # row 0 is the controlled car
        others = {name: everyone[name][1:] for name in ("x", "y", "psi", "v", "length", "width")}
        self._decide_lane(others)
        accel = self._lane_accel(others, self._lane, body=True)
        if self._origin is not None:
            accel = min(accel, self._lane_accel(others, self._origin, body=True))
        accel = float(np.clip(accel, ACTION_LOW[0], c.max_accel_mps2))
        curvature = bots.lane_keeping_curvature(c, np.float64(sim.y), np.float64(sim.psi), np.float64(sim.v),
                                                np.float64(road.lane_center_y(self._lane)), np.float64(sim.length),
                                                self._origin is not None, sim.dt)  # fmt: skip
        self._step += 1
        return np.array([accel, float(np.clip(curvature, ACTION_LOW[1], ACTION_HIGH[1]))])

    def diagnostics(self) -> dict[str, float]:
        return {}


# ------------------------------------------------------------------------------------------ factory
def make_driver(spec: str, *, fm: str | None = None, device: str = "cpu", seed: int = 0, **options) -> Driver:
    """The driver named by ``spec``: ``"no-action"``, ``"expert"``, ``"bot"`` (``options``: ``BotConfig``
    fields), or anything else for ``worldmodel.driving.model_drivers.make_model_driver`` (a policy
    checkpoint, ``plan:grad``, ``plan:cem``; with the forward model ``fm``, ``device``, ``seed``, ``options``).
    Raises ValueError (one line) for an option a simple driver does not take."""
    if spec in ("no-action", "expert"):
        if options:
            raise ValueError(f"driver {spec!r} takes no options, got {sorted(options)}")
        return NoActionDriver() if spec == "no-action" else ExpertDriver()
    if spec == "bot":
        known = {f.name for f in fields(BotConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"driver 'bot': unknown options {unknown}; known: {sorted(known)}")
        return BotDriver(BotConfig(**options))
    try:
        from worldmodel.driving.model_drivers import make_model_driver
    except ModuleNotFoundError as exc:
        if exc.name != "worldmodel.driving.model_drivers":
            raise
        raise ValueError(f"unknown driver {spec!r}: expected one of {list(SIMPLE_DRIVERS)} (model drivers are "
                         "not installed)") from None  # fmt: skip
    return make_model_driver(spec, fm=fm, device=device, seed=seed, **options)


__all__ = [
    "SIMPLE_DRIVERS",
    "BotConfig",
    "BotDriver",
    "Driver",
    "ExpertDriver",
    "FirstSlot",
    "LockstepDriver",
    "NoActionDriver",
    "OneSlot",
    "as_lockstep",
    "make_driver",
    "open_replay_env",
]
