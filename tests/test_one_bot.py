"""One bot: the simulator's bots and the closed-loop ``BotDriver`` share ``traffic.drivers``, so on the same
frame, with the same settings, they take the same lane-change decision."""

from dataclasses import asdict

import numpy as np
import pytest

from worldmodel.data.trajectories import TrajectoryWriter
from worldmodel.driving.drivers import BotConfig, BotDriver
from worldmodel.driving.envs import ReplayEnv, ReplayEnvConfig
from worldmodel.traffic import kinematics
from worldmodel.traffic.scenario import scenario_from_dict
from worldmodel.traffic.simulation import TrafficSimulation

LENGTH_M, WIDTH_M, FRAMES = 4.5, 1.8, 40
BOT = BotConfig(lane_changes=True)
#: The simulator's drivers, given the bot's settings.
PARAMS = dict(headway=BOT.time_headway_s, s0=BOT.min_gap_m, amax=BOT.max_accel_mps2, bcomf=BOT.comfort_decel_mps2,
              polite=BOT.politeness, thresh=BOT.change_threshold_mps2, width=WIDTH_M)  # fmt: skip

#: (x [m], lane, v [m/s]) of the deciding car (first) and the others.
SITUATIONS = {
    "left: slow leader, right lane blocked": [(100.0, 1, 15.0), (125.0, 1, 5.0), (120.0, 2, 5.0), (75.0, 1, 15.0)],
    "right: slow leader, left lane blocked": [(100.0, 1, 15.0), (125.0, 1, 5.0), (118.0, 0, 6.0)],
    "keep: leader far ahead": [(100.0, 1, 15.0), (220.0, 1, 14.0), (60.0, 2, 15.0)],
    "keep: left gap too short": [(100.0, 1, 15.0), (125.0, 1, 5.0), (103.0, 0, 15.0), (118.0, 2, 5.0)],
    "keep: too slow to move sideways": [(100.0, 1, 0.5), (107.0, 1, 0.0), (103.0, 2, 0.5)],
    "keep: would brake hard behind the new leader": [
        (100.0, 1, 10.0),
        (112.5, 1, 0.0),
        (114.9, 0, 8.0),
        (103.0, 2, 10.0),
    ],
}


def scenario():
    return scenario_from_dict({
        "road": {"lanes": 3, "length_m": 400.0, "section_m": [10.0, 390.0], "evaluated_m": [20.0, 380.0]},
        "demand": {"mainline_veh_per_h_per_lane": 0.0},
        "noise": {"accel_std_mps2": 0.0, "lateral_std_m": 0.0},
    })  # fmt: skip


def simulator_decision(cars) -> int:
    """The lane the simulator's bot (car 0) chooses on the first frame (a decision frame)."""
    sim = TrafficSimulation(scenario(), seed=0)
    x, lane, v = (np.array(c) for c in zip(*cars, strict=True))
    # the cars ahead keep their speed; car 0 and those behind it want the speed limit (as the bot assumes)
    v0 = np.where(x <= x[0], sim.road.config.speed_limit_mps, v)
    ids = sim.place_bots(x, lane, v, length=LENGTH_M, v0=v0, **PARAMS)
    sim.step()
    return int(sim.lane[sim.index_of(ids[0])])


def bot_decision(cars, tmp_path) -> int:
    """The lane ``BotDriver`` chooses at the hand-over, driving car 0 of a recording of the same frame (cars
    at constant speed)."""
    sim = TrafficSimulation(scenario(), seed=0)
    path = tmp_path / "situation.h5"
    frames = np.arange(FRAMES)
    with TrajectoryWriter(path, sim.road.to_dict(), "one-bot situation", ["car"]) as w:
        for vid, (x, lane, v) in enumerate(cars, start=1):
            w.add_vehicle(vid, LENGTH_M, WIDTH_M, 0, {
                "frame": frames, "x": x + v * sim.dt * frames, "y": np.full(FRAMES, sim.road.lane_center_y(lane)),
                "vx": np.full(FRAMES, v), "vy": np.zeros(FRAMES), "lane": np.full(FRAMES, lane, np.int16),
            })  # fmt: skip
    env = ReplayEnv(path, ReplayEnvConfig(context_frames=1, return_context=False))
    obs, info = env.reset(options={"vehicle": 1})
    assert env.sim.frame == 0 and env.sim.x == cars[0][0] and env.sim.v == pytest.approx(cars[0][2])
    driver = BotDriver(BOT)
    driver.reset(env, obs, info)
    driver.act(obs, info)
    return driver._lane


def test_the_bot_settings_are_the_simulators():
    simulator_fields = set(asdict(scenario().behaviour)) - {"max_decel_mps2"}
    assert len(simulator_fields) == 7  # each has its DriverSettings field, which BotConfig extends
    assert {"time_headway_s", "politeness", "safe_decel_mps2", "lateral_time_s"} <= set(asdict(BOT))


@pytest.mark.parametrize("name", list(SITUATIONS))
def test_simulator_and_bot_driver_choose_the_same_lane_change(name, tmp_path):
    cars = SITUATIONS[name]
    expected = {"left": 0, "right": 2, "keep": 1}[name.split(":")[0]]
    assert simulator_decision(cars) == expected
    assert bot_decision(cars, tmp_path) == expected


def test_invert_actions_clips_what_invert_infers():
    t = np.arange(30) * 0.1
    x = 10.0 * t + np.where(t > 1.5, 4.0 * (t - 1.5) ** 2, 0.0)  # a jump in acceleration: 8 m/s^2
    psi, v, accel, curvature = kinematics.invert(x, np.zeros_like(x), 0.1)
    inverted = kinematics.invert_actions(x, np.zeros_like(x), 0.1)
    np.testing.assert_array_equal(inverted.psi, psi)
    np.testing.assert_array_equal(inverted.v, v)
    np.testing.assert_array_equal(inverted.curvature, curvature)
    limit = kinematics.MAX_REPLAY_ACCEL_MPS2
    np.testing.assert_array_equal(inverted.accel, np.clip(accel, -limit, limit))
    np.testing.assert_array_equal(inverted.clipped, np.abs(accel) > limit)
    assert inverted.clipped.any() and np.abs(inverted.accel).max() == limit
