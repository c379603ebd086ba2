"""Planner drivers in closed loop on hand-written recordings: the drive objective drives, PPUU's stops."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from worldmodel.data.trajectories import TrajectoryWriter
from worldmodel.driving.drivers import open_replay_env
from worldmodel.driving.envs import ReplayEnvConfig
from worldmodel.driving.planner_driver import fit_horizon, lateral_targets, make_planner_driver
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RampConfig, RoadConfig


def write_platoon(path: Path, gap_m: float = 13.0, speed_mps: float = 10.0, frames: int = 320) -> Path:
    """One lane, three cars at ``speed_mps``, ``gap_m`` apart centre to centre: leader (1), ego (2), follower
    (3). The recorded cars never react: an ego that slows down is rear-ended."""
    road = Road(RoadConfig(lanes=1, lane_width_m=3.7, length_m=340.0, section_m=(0.0, 340.0),
                           evaluated_m=(10.0, 280.0), speed_limit_mps=20.0, ramps=()))  # fmt: skip
    t = np.arange(frames)
    with TrajectoryWriter(path, road.to_dict(), "test platoon", ["car"]) as writer:
        for vid, x0 in ((1, 40.0 + 2 * gap_m), (2, 40.0 + gap_m), (3, 40.0)):
            writer.add_vehicle(vid, 4.5, 1.8, 0, {
                "frame": t, "x": x0 + speed_mps * 0.1 * t, "y": np.full(frames, 1.85), "vx": np.full(frames, speed_mps),
                "vy": np.zeros(frames), "lane": np.zeros(frames, np.int16),
            })  # fmt: skip
    return path


def drive(path: Path, driver, vehicle: int = 2, max_steps: int = 400) -> tuple[str, int]:
    env = open_replay_env(path, ReplayEnvConfig(return_context=driver.needs_context))
    obs, info = env.reset(options={"vehicle": vehicle})
    driver.reset(env, obs, info)
    for step in range(max_steps):
        action = driver.act(obs, info)
        assert action.shape == (2,) and np.isfinite(action).all()
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return info["event"], step + 1
    return "running", max_steps


@pytest.fixture(scope="module")
def platoon(tmp_path_factory):
    return write_platoon(tmp_path_factory.mktemp("platoon") / "platoon.h5")


@pytest.mark.parametrize("world", ["oracle", "cv"])
def test_the_drive_objective_keeps_its_place_where_ppuus_fails(platoon, world):
    options = {"horizon": 10, "iterations": 5, "lane_plans": "none"}  # SPEC §8's planner: warm start only
    event, _ = drive(platoon, make_planner_driver("grad", world=world, objective="drive", **options))
    assert event == "arrived"
    event, _ = drive(platoon, make_planner_driver("grad", world=world, objective="ppuu", **options))
    assert event in ("collision_behind", "offroad")  # PPUU's: slower is cheaper, and so is a step sideways


def test_cem_drives_the_platoon_and_reports_its_terms(platoon):
    driver = make_planner_driver("cem", world="oracle", horizon=10, iterations=2, population=16, elites=4)
    event, _ = drive(platoon, driver)
    assert event == "arrived"
    diagnostics = driver.diagnostics()
    assert {"planned_cost", "target_speed", "term_speed", "term_proximity_ahead"} <= set(diagnostics)


def test_bad_options_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown option 'nonsense'"):
        make_planner_driver("grad", world="cv", nonsense=1)
    with pytest.raises(ValueError, match="unknown world"):
        make_planner_driver("grad", world="dream")
    with pytest.raises(ValueError, match="needs a forward model"):
        make_planner_driver("grad", world="model")
    with pytest.raises(ValueError, match="frame_every must divide horizon"):
        make_planner_driver("grad", world="cv", horizon="7", frame_every="2")


def test_cem_draws_restart_from_the_episode_seed(platoon):
    """The harness seeds torch's global generator per episode; CEM's candidates follow it, so an episode's
    actions do not depend on what the driver drove before (nor on how episodes are spread over workers)."""
    driver = make_planner_driver("cem", world="cv", horizon=10, iterations=2, population=8, elites=2)
    env = open_replay_env(platoon, ReplayEnvConfig(return_context=False))

    def first_actions(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        obs, info = env.reset(options={"vehicle": 2})
        driver.reset(env, obs, info)
        actions = []
        for _ in range(3):
            actions.append(driver.act(obs, info))
            obs, _, _, _, info = env.step(actions[-1])
        return np.stack(actions)

    first = first_actions(0)
    first_actions(1)  # another episode in between
    np.testing.assert_array_equal(first_actions(0), first)
    assert not np.array_equal(first_actions(1), first)


def write_closing_follower(path: Path, frames: int = 300) -> Path:
    """Two lanes: the ego (2) at 10 m/s in lane 0 between a leader (1) at 10 m/s 30 m ahead and a follower (3)
    at 15 m/s 30 m behind that never brakes; lane 1 is free. Only a lane change escapes (the i80 failure
    where the recorded car changed lanes and its ghost's followers kept coming)."""
    road = Road(RoadConfig(lanes=2, lane_width_m=3.7, length_m=500.0, section_m=(0.0, 500.0),
                           evaluated_m=(10.0, 330.0), speed_limit_mps=20.0, ramps=()))  # fmt: skip
    t = np.arange(frames)
    with TrajectoryWriter(path, road.to_dict(), "test closing follower", ["car"]) as writer:
        for vid, x0, v in ((1, 100.0, 10.0), (2, 70.0, 10.0), (3, 40.0, 15.0)):
            writer.add_vehicle(vid, 4.5, 1.8, 0, {
                "frame": t, "x": x0 + v * 0.1 * t, "y": np.full(frames, 1.85), "vx": np.full(frames, v),
                "vy": np.zeros(frames), "lane": np.zeros(frames, np.int16),
            })  # fmt: skip
    return path


def test_the_planner_escapes_a_follower_by_changing_lane(tmp_path):
    path = write_closing_follower(tmp_path / "closing.h5")
    env = open_replay_env(path, ReplayEnvConfig(return_context=False))
    obs, info = env.reset(options={"vehicle": 2})
    driver = make_planner_driver("grad", world="oracle")
    driver.reset(env, obs, info)
    lateral = []
    for _ in range(400):
        obs, _, terminated, truncated, info = env.step(driver.act(obs, info))
        lateral.append(env.sim.y)
        if terminated or truncated:
            break
    assert info["event"] == "arrived"
    assert max(lateral) > 3.7 + 0.9  # wholly in lane 1 at some point (its line at y = 3.7 m, half a car 0.9 m)


def test_replanning_every_second_step_executes_the_plans_next_action(platoon):
    driver = make_planner_driver("grad", world="oracle", horizon=10, iterations=3, replan_every=2)
    planned = []
    plan_batch = driver._plan
    driver._plan = lambda chosen: planned.append(chosen[0].plan.clone()) or plan_batch(chosen)
    env = open_replay_env(platoon, ReplayEnvConfig(return_context=False))
    obs, info = env.reset(options={"vehicle": 2})
    driver.reset(env, obs, info)
    actions = []
    for _ in range(6):
        actions.append(driver.act(obs, info))
        if len(actions) % 2 == 1:  # just planned: the plan's next action comes at the next step
            expected = driver._slots[0].plan[0, 0].numpy()
        else:
            np.testing.assert_allclose(actions[-1], expected, rtol=0, atol=1e-6)
        obs, _, _, _, info = env.step(actions[-1])
    assert len(planned) == 3
    assert drive(platoon, make_planner_driver("grad", world="oracle", horizon=10, replan_every=2))[0] == "arrived"


def test_lane_plans_keep_the_lane_below_the_lane_change_speed_except_on_a_ramp():
    road = Road(RoadConfig(lanes=3, lane_width_m=3.7, length_m=300.0, section_m=(0.0, 300.0), evaluated_m=(10.0, 290.0),
                           speed_limit_mps=25.0, ramps=(RampConfig(start_m=0.0, end_m=200.0),)))  # fmt: skip
    centres = [float(road.lane_center_y(k)) for k in range(4)]
    middle = SimpleNamespace(road=road, x=100.0, y=centres[1], v=2.0)
    assert lateral_targets(middle, 2.0) == [centres[0], centres[1], centres[2]]
    assert lateral_targets(middle, 2.0, min_change_speed_mps=5.0) == [centres[1]] * 3  # slow: keep the lane
    assert lateral_targets(SimpleNamespace(**{**vars(middle), "v": 6.0}), 2.0, 5.0) == centres[:3]
    ramp = SimpleNamespace(road=road, x=100.0, y=centres[3], v=1.0)  # a slow ramp car must still merge
    assert lateral_targets(ramp, 2.0, min_change_speed_mps=5.0)[0] == centres[2]
    assert np.isfinite(lateral_targets(ramp, 2.0, 5.0)).all()


@pytest.mark.parametrize(("slow_speed", "horizon", "frames"), [(12.0, 30, (3, 6, 30)), (5.0, 20, (2, 4, 20))])
def test_below_the_slow_speed_the_plan_spans_the_slow_horizon(platoon, slow_speed, horizon, frames):
    """The platoon drives at 10 m/s: slower than 12 m/s (the slow horizon, frames every 3rd step), faster
    than 5 (the usual one); the warm start is cut or held at its last action when the horizon changes."""
    driver = make_planner_driver("grad", world="oracle", slow_horizon=30, slow_speed_mps=slow_speed, iterations=2)
    env = open_replay_env(platoon, ReplayEnvConfig(return_context=False))
    obs, info = env.reset(options={"vehicle": 2})
    driver.reset(env, obs, info)
    for _ in range(3):
        obs, _, _, _, info = env.step(driver.act(obs, info))
    intent = driver.intent()
    assert intent.poses.shape == (horizon, 3) and intent.frame_steps[:2] + intent.frame_steps[-1:] == frames
    assert (
        drive(platoon, make_planner_driver("grad", world="oracle", slow_horizon=30, slow_speed_mps=slow_speed))[0]
        == "arrived"
    )


def test_a_warm_start_fits_another_horizon():
    plan = torch.arange(8.0).reshape(1, 4, 2)
    np.testing.assert_array_equal(fit_horizon(plan, 2), plan[:, :2])
    longer = fit_horizon(plan, 6)
    assert longer.shape == (1, 6, 2) and (longer[0, 4:] == plan[0, -1]).all()
    with pytest.raises(ValueError, match="slow_frame_every must divide slow_horizon"):
        make_planner_driver("grad", world="cv", slow_horizon="31")


def test_an_action_executed_in_its_place_is_what_the_next_plans_jerk_starts_from(platoon):
    """Under a labelling driver another driver's action may be executed: the planner's next jerk term is
    measured from it, not from its own first action."""
    driver = make_planner_driver("grad", world="oracle", horizon=10, iterations=2)
    env = open_replay_env(platoon, ReplayEnvConfig(return_context=False))
    obs, info = env.reset(options={"vehicle": 2})
    driver.reset(env, obs, info)
    own = driver.act(obs, info)
    np.testing.assert_allclose(driver._slots[0].previous_action[0].numpy(), own, atol=1e-6)
    driver.executed(0, np.array([-3.0, 0.01]))
    np.testing.assert_allclose(driver._slots[0].previous_action.numpy(), [[-3.0, 0.01]], atol=1e-6)
    obs, _, _, _, info = env.step(np.array([-3.0, 0.01]))
    driver.act(obs, info)  # plans on from there
    assert driver._slots[0].previous_action.shape == (1, 2)
