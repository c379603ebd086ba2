"""Scenarios: the road, the traffic demand and the populations of drivers and vehicles, read from TOML.

A scenario is data (``envs/*.toml``), not code. ``load_scenario(path)`` parses and validates it: an
unknown key or an impossible value raises ``ScenarioError`` with one line naming the file and the key.

Distributions (``Distribution``) are truncated normals written as ``{mean, std, min, max}`` tables or as a
plain number (a constant); each vehicle draws its own value at spawn, from the simulation's generator.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import tomllib

from worldmodel.traffic.kinematics import DT_S


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class Distribution:
    """Truncated normal ``N(mean, std)`` clipped to ``[min, max]``; ``std = 0`` is a constant."""

    mean: float
    """Mean of the untruncated normal."""
    std: float = 0.0
    """Standard deviation (0 = constant)."""
    min: float = -math.inf
    """Lower clip."""
    max: float = math.inf
    """Upper clip."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws as float64 ``[n]`` (clipped, so the bounds hold exactly)."""
        if self.std == 0:
            return np.full(n, np.clip(self.mean, self.min, self.max), dtype=np.float64)
        return np.clip(rng.normal(self.mean, self.std, n), self.min, self.max)

    def check(self, where: str, low: float = -math.inf, high: float = math.inf) -> None:
        if not (self.std >= 0 and self.min <= self.max and math.isfinite(self.mean)):
            raise ValueError(f"{where}: needs std >= 0, min <= max and a finite mean, got {self}")
        lo, hi = max(self.min, self.mean - 4 * self.std), min(self.max, self.mean + 4 * self.std)
        if lo < low or hi > high:
            raise ValueError(f"{where}: values must lie in [{low}, {high}], got {self}")


@dataclass(frozen=True)
class RampConfig:
    """An on-ramp: an extra lane to the right of the mainline over ``[start_m, end_m]``; its cars merge left."""

    name: str = "onramp"
    """Name, used in summaries."""
    start_m: float = 0.0
    """Where the ramp lane begins and its cars enter [m]."""
    end_m: float = 100.0
    """Where the ramp lane ends: cars must have merged before it [m]."""
    demand_veh_per_h: float = 300.0
    """Inflow on the ramp [vehicles/h]."""


@dataclass(frozen=True)
class RoadConfig:
    """A straight highway. x along travel from the road start; y lateral from the left edge; lane 0 leftmost."""

    lanes: int = 3
    """Mainline lanes."""
    lane_width_m: float = 3.7
    """Lane width [m]."""
    length_m: float = 300.0
    """Road length [m]; cars exit at the end."""
    section_m: tuple[float, float] = (50.0, 250.0)
    """Recorded section [start, end] in metres (the camera's view); upstream of it is run-in, downstream run-out."""
    evaluated_m: tuple[float, float] = (70.0, 230.0)
    """Evaluated zone [start, end] inside the section [m]: a driven car succeeds when it reaches its end."""
    speed_limit_mps: float = 25.0
    """Speed limit [m/s]; desired speeds are drawn relative to it."""
    ramps: tuple[RampConfig, ...] = ()
    """On-ramps (at most one per side for now: all ramps add lanes to the right of the mainline)."""


@dataclass(frozen=True)
class DemandConfig:
    """Traffic entering at the road start."""

    mainline_veh_per_h_per_lane: float = 1200.0
    """Poisson inflow per mainline lane [vehicles/h/lane]; cars wait in a queue when there is no safe gap."""
    initial_density_veh_per_km_per_lane: float = 0.0
    """Cars placed on the road at reset [vehicles/km/lane] (0 = start empty and warm up)."""


@dataclass(frozen=True)
class DownstreamConfig:
    """The traffic beyond the road end, which the run-out zone feels: per lane, a desired speed that follows
    a mean-reverting random process (Ornstein-Uhlenbeck). Low values back a queue up into the recorded
    section and send stop-and-go waves upstream, as the bottleneck beyond NGSIM's camera did on I-80."""

    start_m: float = math.inf
    """Where the downstream zone starts [m] (inf = no downstream disturbance)."""
    speed_mean_mps: float = 10.0
    """Mean desired speed in the zone [m/s]."""
    speed_std_mps: float = 0.0
    """Stationary standard deviation of that speed [m/s]."""
    speed_min_mps: float = 0.5
    """Lower clip of the zone's desired speed [m/s]."""
    time_constant_s: float = 20.0
    """Correlation time of the process [s]."""
    lane_correlation: float = 0.5
    """Share of the process common to all lanes (0 = independent lanes, 1 = identical)."""


@dataclass(frozen=True)
class DriverConfig:
    """Per-vehicle parameters of the IDM car-following and MOBIL lane-change models."""

    desired_speed_factor: Distribution = Distribution(1.0, 0.1, 0.6, 1.4)
    """Desired speed as a multiple of the speed limit."""
    time_headway_s: Distribution = Distribution(1.5, 0.3, 0.8, 3.0)
    """IDM desired time headway T [s]."""
    min_gap_m: Distribution = Distribution(2.0, 0.5, 1.0, 4.0)
    """IDM jam distance s0 [m]."""
    max_accel_mps2: Distribution = Distribution(1.2, 0.3, 0.5, 3.0)
    """IDM maximum acceleration a [m/s^2]."""
    comfort_decel_mps2: Distribution = Distribution(2.0, 0.4, 1.0, 4.0)
    """IDM comfortable deceleration b [m/s^2]."""
    politeness: Distribution = Distribution(0.3, 0.15, 0.0, 1.0)
    """MOBIL politeness p."""
    change_threshold_mps2: Distribution = Distribution(0.2, 0.1, 0.0, 1.0)
    """MOBIL incentive threshold [m/s^2]."""


@dataclass(frozen=True)
class VehicleKind:
    """A kind of vehicle, with its share of the traffic and its size distributions."""

    kind: str = "car"
    """Name: car, truck, ..."""
    share: float = 1.0
    """Fraction of spawned vehicles of this kind (shares are normalised)."""
    length_m: Distribution = Distribution(4.6, 0.5, 3.5, 6.0)
    """Length [m]."""
    width_m: Distribution = Distribution(1.85, 0.12, 1.5, 2.2)
    """Width [m]."""
    max_accel_scale: float = 1.0
    """Multiplies the driver's maximum acceleration (trucks accelerate slowly)."""
    desired_speed_scale: float = 1.0
    """Multiplies the driver's desired speed."""


@dataclass(frozen=True)
class NoiseConfig:
    """Driver imperfection."""

    accel_std_mps2: float = 0.2
    """Stationary std of an Ornstein-Uhlenbeck acceleration noise added to the model's output [m/s^2]."""
    accel_time_constant_s: float = 1.0
    """Correlation time of that noise [s]."""
    lateral_std_m: float = 0.25
    """Stationary std of an Ornstein-Uhlenbeck wander of each bot's lateral target around its lane centre
    [m] (bounded so that the car stays 0.3 m inside its lane); 0: bots hold the centre line exactly."""
    lateral_time_constant_s: float = 5.0
    """Correlation time of that wander [s]."""


@dataclass(frozen=True)
class BehaviourConfig:
    """Rates and limits shared by all drivers."""

    lane_change_period_s: float = 1.0
    """Each driver considers a lane change once per period (staggered across drivers) [s]."""
    lane_change_cooldown_s: float = 4.0
    """No new lane change for this long after one ends [s]."""
    safe_decel_mps2: float = 3.0
    """MOBIL safety: a lane change may not force the new follower to brake harder [m/s^2]."""
    min_change_gap_m: float = 2.0
    """Minimum bumper gap ahead and behind in the target lane for a lane change [m]."""
    right_bias_mps2: float = 0.1
    """Incentive bonus for moving right (keep-right rule) [m/s^2]."""
    lateral_time_s: float = 1.2
    """Time constant of the lateral controller that tracks the lane centre [s]."""
    max_lateral_speed_mps: float = 1.2
    """Upper bound on the lateral speed during a lane change [m/s]."""
    max_decel_mps2: float = 9.0
    """Physical braking limit [m/s^2]."""


@dataclass(frozen=True)
class Scenario:
    """Everything the simulator needs to build a road and its traffic."""

    name: str = "scenario"
    """Short name."""
    description: str = ""
    """What this scenario stands for."""
    dt_s: float = 0.1
    """Time step [s]: must be 0.1 (recordings, replay, the ego views' dynamics and the models all assume
    0.1 s frames, DESIGN.md §4)."""
    road: RoadConfig = field(default_factory=RoadConfig)
    """The road."""
    demand: DemandConfig = field(default_factory=DemandConfig)
    """Inflow at the road start."""
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    """The traffic beyond the road end."""
    drivers: DriverConfig = field(default_factory=DriverConfig)
    """Driver parameter distributions."""
    vehicles: tuple[VehicleKind, ...] = (VehicleKind(),)
    """Vehicle kinds."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Driver imperfection."""
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    """Rates and limits of the driver models."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Turn a TOML value into the type ``hint``, recursively; raise ValueError naming ``where``."""
    origin = getattr(hint, "__origin__", None)
    if dataclasses.is_dataclass(hint):
        if hint is Distribution and isinstance(value, (int, float)) and not isinstance(value, bool):
            return Distribution(float(value))
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table, got {value!r}")
        return _build(hint, value, where)
    if origin is tuple:
        args = hint.__args__
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported field type {hint!r}")


def _build(cls: type, data: dict, where: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            path = f"{where}.{key}" if where else key
            raise ValueError(f"unknown key '{path}' (allowed: {', '.join(sorted(names))})")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def validate(s: Scenario) -> None:
    """Raise ValueError naming the key of the first impossible value."""
    r = s.road
    checks = [
        (
            math.isclose(s.dt_s, DT_S),
            "dt_s",
            f"must be {DT_S} s (the whole pipeline runs on {DT_S} s frames), got {s.dt_s}",
        ),
        (r.lanes >= 1 and r.lanes <= 12, "road.lanes", "must be in [1, 12]"),
        (2.0 <= r.lane_width_m <= 6.0, "road.lane_width_m", "must be in [2, 6] m"),
        (r.length_m >= 50.0, "road.length_m", "must be >= 50 m"),
        (
            0 <= r.section_m[0] < r.section_m[1] <= r.length_m,
            "road.section_m",
            "must satisfy 0 <= start < end <= length",
        ),
        (
            r.section_m[0] <= r.evaluated_m[0] < r.evaluated_m[1] <= r.section_m[1],
            "road.evaluated_m",
            "must lie inside road.section_m with start < end",
        ),
        (0 < r.speed_limit_mps <= 60, "road.speed_limit_mps", "must be in (0, 60] m/s"),
        (s.demand.mainline_veh_per_h_per_lane >= 0, "demand.mainline_veh_per_h_per_lane", "must be >= 0"),
        (
            s.demand.initial_density_veh_per_km_per_lane >= 0,
            "demand.initial_density_veh_per_km_per_lane",
            "must be >= 0",
        ),
        (len(s.vehicles) >= 1, "vehicles", "needs at least one vehicle kind"),
        (s.downstream.speed_std_mps >= 0, "downstream.speed_std_mps", "must be >= 0"),
        (s.downstream.time_constant_s > 0, "downstream.time_constant_s", "must be > 0"),
        (0 <= s.downstream.lane_correlation <= 1, "downstream.lane_correlation", "must be in [0, 1]"),
        (s.noise.accel_std_mps2 >= 0, "noise.accel_std_mps2", "must be >= 0"),
        (s.noise.accel_time_constant_s > 0, "noise.accel_time_constant_s", "must be > 0"),
        (s.noise.lateral_std_m >= 0, "noise.lateral_std_m", "must be >= 0"),
        (s.noise.lateral_time_constant_s > 0, "noise.lateral_time_constant_s", "must be > 0"),
        (s.behaviour.lane_change_period_s >= s.dt_s, "behaviour.lane_change_period_s", "must be >= dt_s"),
        (s.behaviour.lateral_time_s > 0, "behaviour.lateral_time_s", "must be > 0"),
        (s.behaviour.max_lateral_speed_mps > 0, "behaviour.max_lateral_speed_mps", "must be > 0"),
        (s.behaviour.max_decel_mps2 > 0, "behaviour.max_decel_mps2", "must be > 0"),
    ]
    for ok, key, what in checks:
        if not ok:
            raise ValueError(f"{key} {what}")
    for i, ramp in enumerate(r.ramps):
        if not (0 <= ramp.start_m < ramp.end_m <= r.length_m):
            raise ValueError(f"road.ramps[{i}] needs 0 <= start_m < end_m <= road.length_m")
        if ramp.end_m - ramp.start_m < 30:
            raise ValueError(f"road.ramps[{i}] merge zone must be >= 30 m long")
        if ramp.demand_veh_per_h < 0:
            raise ValueError(f"road.ramps[{i}].demand_veh_per_h must be >= 0")
    d = s.drivers
    d.desired_speed_factor.check("drivers.desired_speed_factor", 0.05, 3.0)
    d.time_headway_s.check("drivers.time_headway_s", 0.1, 10.0)
    d.min_gap_m.check("drivers.min_gap_m", 0.1, 20.0)
    d.max_accel_mps2.check("drivers.max_accel_mps2", 0.05, 10.0)
    d.comfort_decel_mps2.check("drivers.comfort_decel_mps2", 0.1, 10.0)
    d.politeness.check("drivers.politeness", 0.0, 5.0)
    d.change_threshold_mps2.check("drivers.change_threshold_mps2", 0.0, 10.0)
    for i, v in enumerate(s.vehicles):
        if v.share < 0:
            raise ValueError(f"vehicles[{i}].share must be >= 0")
        v.length_m.check(f"vehicles[{i}].length_m", 0.5, 30.0)
        v.width_m.check(f"vehicles[{i}].width_m", 0.3, min(4.0, r.lane_width_m))
        if v.max_accel_scale <= 0 or v.desired_speed_scale <= 0:
            raise ValueError(f"vehicles[{i}] scales must be > 0")
    if sum(v.share for v in s.vehicles) <= 0:
        raise ValueError("vehicles shares must sum to > 0")


def scenario_from_dict(data: dict, source: str = "<dict>") -> Scenario:
    """Build and validate a scenario from a parsed TOML dict; ScenarioError names ``source`` and the key."""
    try:
        scenario = _build(Scenario, data, "")
        validate(scenario)
    except (ValueError, TypeError) as e:
        raise ScenarioError(f"{source}: {e}") from None
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read ``envs/<name>.toml`` into a validated ``Scenario``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: a directory, not a scenario file") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML ({e})") from None
    return scenario_from_dict(data, str(path))


def scenarios_dir() -> Path:
    """The repository's ``envs/`` folder (the package is installed in place, see scripts/setup.sh)."""
    return Path(__file__).resolve().parents[2] / "envs"


def resolve_scenario(scenario: str | Path | Scenario) -> Scenario:
    """A ``Scenario`` from itself, a TOML path, or a name in ``envs/`` (``"i80"``, ``"tiny"``, ...)."""
    if isinstance(scenario, Scenario):
        return scenario
    path = Path(scenario)
    if not path.is_file() and path.suffix == "" and (scenarios_dir() / f"{path}.toml").exists():
        path = scenarios_dir() / f"{path}.toml"
    return load_scenario(path)
