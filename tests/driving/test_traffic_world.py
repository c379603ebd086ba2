"""The learned traffic model (``nn.traffic_model``), its training (``train traffic``) and the ``traffic`` world."""

import json

import numpy as np
import pytest
import torch
from evaluation import driving_helpers  # tests/evaluation/driving_helpers.py
from test_planner_driver import drive, write_platoon
from test_worlds import reference_from

from worldmodel.cli import main
from worldmodel.driving.drivers import open_replay_env
from worldmodel.driving.envs import ReplayEnvConfig
from worldmodel.driving.planner_driver import make_planner_driver
from worldmodel.driving.world_error import WorldErrorConfig, compare_worlds
from worldmodel.driving.worlds import RenderedWorld, TrafficWorld
from worldmodel.nn.saving import save_checkpoint
from worldmodel.nn.traffic_model import FEATURES, TrafficModel, TrafficModelConfig, car_features, moved_cars
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RoadConfig
from worldmodel.training.traffic import TrainTrafficConfig, train_traffic


def test_features_find_the_car_ahead_in_the_lane_and_the_acceleration():
    road = Road(RoadConfig(lanes=2, lane_width_m=3.7, length_m=300.0, section_m=(0.0, 300.0),
                           evaluated_m=(10.0, 290.0), speed_limit_mps=20.0, ramps=()))  # fmt: skip
    now = {"vehicle": np.array([1, 2, 3]), "x": np.array([50.0, 70.0, 60.0]), "y": np.array([1.85, 2.35, 5.55]),
           "psi": np.zeros(3), "v": np.array([10.0, 8.0, 12.0]), "length": np.full(3, 4.0), "lane": np.array([0, 0, 1])}  # fmt: skip
    before = {"vehicle": np.array([1, 3]), "v": np.array([9.0, 12.0])}
    f = dict(zip(FEATURES, car_features(now, before, road, 0.1, 5).T, strict=True))
    np.testing.assert_allclose(f["accel_mps2"], [2.0, 0.0, 0.0])  # car 2 unseen before: no acceleration
    np.testing.assert_allclose(f["gap_m"], [16.0, 100.0, 100.0])  # car 1 follows car 2, 20 m - 4 m apart
    np.testing.assert_allclose(f["closing_mps"], [2.0, 0.0, 0.0])
    np.testing.assert_allclose(f["has_leader"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(f["lane_offset_m"], [0.0, 0.5, 0.0], atol=1e-6)


def test_zero_displacement_is_constant_velocity():
    cars = {"x": np.array([0.0, 10.0]), "y": np.array([1.0, 2.0]), "psi": np.array([0.0, 0.1]),
            "v": np.array([10.0, 0.0]), "length": np.full(2, 4.0)}  # fmt: skip
    steps = moved_cars(cars, np.zeros((2, 3, 2)), 0.1)
    assert len(steps) == 3
    np.testing.assert_allclose(steps[2]["x"], [3.0, 10.0])
    np.testing.assert_allclose(steps[2]["psi"], [0.0, 0.1])  # the stopped car keeps its heading
    assert TrafficModel(TrafficModelConfig(horizon=3))(torch.randn(5, len(FEATURES))).abs().max() == 0


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    return driving_helpers.make_driving_dataset(tmp_path_factory.mktemp("traffic") / "micro", seconds=20.0)


@pytest.fixture(scope="module")
def trained(traffic, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainTrafficConfig(data=str(traffic), out=str(out), model=TrafficModelConfig(horizon=20, hidden=64),
                                every=2, steps=300, batch_size=256, lr=3e-3, progress=False)  # fmt: skip
    return train_traffic(config)


def test_training_predicts_the_cars_better_than_constant_velocity(trained):
    model, cv = np.array(trained["model_rmse_m"]), np.array(trained["cv_rmse_m"])
    assert len(model) == 20 and trained["train_examples"] > 1000 and trained["scored_on"] == "val"
    assert cv[-1] > 0.1  # the cars do not all keep their speed
    assert model[-1] < 0.8 * cv[-1] and model[9] < cv[9]  # 2 s and 1 s ahead, on the val split's cars
    assert TrafficModel.from_checkpoint(trained["checkpoint"]).config.horizon == 20


def test_an_untrained_model_is_the_cv_world_and_a_trained_one_is_scored_beside_it(traffic, trained, tmp_path):
    untrained = save_checkpoint(TrafficModel(TrafficModelConfig(horizon=10)).checkpoint_dict(0), tmp_path / "t.pt")
    config = WorldErrorConfig(data=str(traffic), traffic=str(untrained), windows=6, horizon=10, progress=False)
    out = compare_worlds(config)
    for metric, errors in out["per_step"]["cv"].items():
        assert out["per_step"]["traffic"][metric] == pytest.approx(errors, abs=1e-9)
    learned = compare_worlds(WorldErrorConfig(data=str(traffic), traffic=trained["checkpoint"], windows=24,
                                              horizon=20, progress=False))  # fmt: skip
    assert learned["summary"]["traffic"]["vehicles_mse"] < learned["summary"]["cv"]["vehicles_mse"]
    with pytest.raises(ValueError, match="predicts 10 steps"):
        env = open_replay_env(traffic / "trajectories-0.h5", ReplayEnvConfig())
        env.reset(seed=0)
        TrafficWorld(str(untrained)).futures([env.sim], reference_from(env.sim, [5, 20]), [5, 20])


def test_the_traffic_world_renders_its_cars_at_the_reference(tmp_path):
    path = write_platoon(tmp_path / "platoon.h5")
    env = open_replay_env(path, ReplayEnvConfig())
    env.reset(options={"vehicle": 2})
    ckpt = save_checkpoint(TrafficModel(TrafficModelConfig(horizon=10)).checkpoint_dict(0), tmp_path / "t.pt")
    steps = [2, 4, 10]
    reference = reference_from(env.sim, steps)
    frames = TrafficWorld(str(ckpt)).futures([env.sim], reference, steps)
    cv = RenderedWorld("cv").futures([env.sim], reference, steps)
    torch.testing.assert_close(frames.images, cv.images)  # zero displacement: the constant-velocity frames
    assert float(frames.images[0, 0, :, 1].sum()) > 0  # the leader and the follower are drawn


def test_plan_grad_drives_in_the_traffic_world(tmp_path, trained):
    path = write_platoon(tmp_path / "platoon.h5")
    driver = make_planner_driver("grad", world="traffic", fm=trained["checkpoint"], horizon=10, slow_horizon=None)
    event, _ = drive(path, driver)
    assert event == "arrived"
    with pytest.raises(ValueError, match="needs a traffic model"):
        make_planner_driver("grad", world="traffic")
    with pytest.raises(ValueError, match="predicts 20 steps, the planner plans 30"):  # the slow horizon
        make_planner_driver("grad", world="traffic", fm=trained["checkpoint"])


def test_cli_trains_and_bad_data_is_one_line(traffic, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "traffic", "--data", str(traffic), "--out", str(out), "--steps", "3", "--batch-size", "64",
               "--horizon", "10", "--no-progress"])  # fmt: skip
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert (out / "traffic.pt").exists() and json.loads((out / "summary.json").read_text())["config"]["steps"] == 3
    assert len(printed["cv_rmse_m"]) == 10
    never = tmp_path / "never"
    assert main(["train", "traffic", "--data", str(tmp_path / "missing"), "--out", str(never), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such dataset directory" in err[0]
    assert not never.exists()  # bad data leaves no run directory behind
