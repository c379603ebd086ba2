"""The settings a dataset was made with travel with it: a simulation extracted with a view that is not PPUU's
trains a forward model of that view (recorded in its checkpoint), a policy through it, and drives the model
world and the planner with frames of that size; a mismatch is refused in one line."""

from pathlib import Path

import numpy as np
import pytest
import torch
from fm_helpers import train_config

from worldmodel.costs import CostConfig
from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.hdf5 import DataError
from worldmodel.data.record import RecordConfig, record
from worldmodel.driving.drivers import open_replay_env
from worldmodel.driving.envs import ReplayEnvConfig
from worldmodel.driving.imagination import Context, Imagination
from worldmodel.driving.model_world import ModelWorld
from worldmodel.driving.planner_driver import PlannerDriver
from worldmodel.driving.planners import PlannerConfig
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.traffic.view import ViewSpec
from worldmodel.training.fm import train_fm
from worldmodel.training.policy import TrainPolicyConfig, train_policy

pytestmark = pytest.mark.slow  # minutes of CPU: deselect with -m "not slow"

#: Not PPUU's 117 x 24 at 1.62 px/m: fewer pixels, another resolution.
VIEW = ViewSpec(height_px=49, width_px=16, px_per_m=1.25)
#: Another cost geometry than ``CostConfig()``'s.
COSTS = CostConfig(safe_time_s=1.0, lane_width_m=3.5)
CONTEXT = 4  # the tiny model's context frames


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """15 s of the tiny scenario extracted with ``VIEW`` and ``COSTS``, laid out like ``datasets/<name>/``."""
    folder = tmp_path_factory.mktemp("small_view")
    trajectories = folder / "trajectories-0.h5"
    record(RecordConfig(scenario="tiny", minutes=0.25, warmup_s=10.0, seed=0, progress=False), trajectories)
    extract([trajectories], folder / "episodes.h5", ExtractConfig(view=VIEW, costs=COSTS, progress=False))
    return folder


@pytest.fixture(scope="module")
def small_fm(small_data, tmp_path_factory) -> Path:
    """A tiny deterministic model trained 4 steps on ``small_data`` (the preset's 117 x 24 backbone)."""
    out = tmp_path_factory.mktemp("small_fm")
    train_fm(train_config(small_data / "episodes.h5", out, mode="deterministic", steps=4, val_every=0, ckpt_every=4,
                          log_every=2))  # fmt: skip
    return out / "checkpoints" / "last.pt"


def test_the_checkpoint_carries_the_datas_view_and_costs(small_fm):
    ckpt = torch.load(small_fm, weights_only=True)
    assert ckpt["config"]["view"] == VIEW.to_dict()
    assert ckpt["config"]["backbone"]["height"] == 49 and ckpt["config"]["backbone"]["width"] == 16
    model = ForwardModel.from_checkpoint(small_fm)
    assert model.config.view_spec == VIEW
    assert model.config.cost_config.geometry() == COSTS.geometry()
    im = Imagination(model)  # the model's view and costs, not the defaults
    assert im.view == VIEW and im.cost_config.geometry() == COSTS.geometry()


def test_a_policy_trains_through_it_and_the_model_world_drives_with_its_frames(small_data, small_fm, tmp_path):
    summary = train_policy(TrainPolicyConfig(
        data=str(small_data), fm=str(small_fm), out=str(tmp_path / "policy"), horizon=3, replicas=2, steps=2,
        batch_size=4, stats_windows=4, val_every=0, val_episodes=0, ckpt_every=2, log_every=1, workers=0,
        device="cpu", progress=False,
    ))  # fmt: skip
    assert summary["step"] == 2
    ckpt = torch.load(tmp_path / "policy" / "checkpoints" / "last.pt", weights_only=True)
    costs = ckpt["train_config"]["costs"]
    assert {k: costs[k] for k in COSTS.geometry()} == COSTS.geometry()  # the dataset's geometry
    assert ckpt["config"]["backbone"]["height"] == 49  # the policy reads frames of the model's size

    world = ModelWorld(str(small_fm))
    assert world.view == VIEW and world.objective.costs.geometry() == COSTS.geometry()
    driver = PlannerDriver(PlannerConfig(method="grad", horizon=4, iterations=1), world.objective, world,
                           spec=world.view)  # fmt: skip
    env = open_replay_env(small_data / "trajectories-0.h5",
                          ReplayEnvConfig(view=VIEW, context_frames=CONTEXT, return_context=True))  # fmt: skip
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (4, 49, 16)
    driver.reset(env, obs, info)
    for _ in range(3):
        action = driver.act(obs, info)
        assert action.shape == (2,) and np.isfinite(action).all()
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    window = driver._slots[0].window.window.context()
    frames = world.rollout(window.images, window.states, torch.zeros(1, 4, 2), [2, 4])
    assert frames.shape == (1, 1, 2, 3, 49, 16)
    im = Imagination(world.model)
    rollout = im.unroll(Context(window.images, window.states, window.car_size, window.ego_mask), 2,
                        actions=torch.zeros(1, 2, 2))  # fmt: skip
    assert rollout["images"].shape == (1, 2, 3, 49, 16)
    assert im.costs(rollout["images"], rollout["states"], window.car_size)["total"].shape == (1, 2)


def test_a_mismatch_is_refused_in_one_line(small_data, small_fm, micro_data, tmp_path):
    # a model config that asks for another view than the data's
    with pytest.raises(DataError, match="its views are 49 x 16 px") as error:
        train_fm(train_config(small_data / "episodes.h5", tmp_path / "fm", model_overrides={"view": ViewSpec()}))
    assert str(small_data / "episodes.h5") in str(error.value) and "\n" not in str(error.value)
    # a policy on data of another view than its model's (micro_data: PPUU's 117 x 24)
    with pytest.raises(DataError, match="trained on 49 x 16 px") as error:
        train_policy(TrainPolicyConfig(data=str(micro_data), fm=str(small_fm), out=str(tmp_path / "policy"),
                                       workers=0, device="cpu", progress=False))  # fmt: skip
    assert str(micro_data) in str(error.value) and "\n" not in str(error.value)


def test_checkpoints_without_a_view_load_with_ppuus(micro_data, tmp_path):
    model = ForwardModel(ForwardModelConfig.tiny("deterministic"))
    ckpt = model.checkpoint_dict(0)
    del ckpt["config"]["view"], ckpt["config"]["costs"]  # as written before the view was recorded
    torch.save(ckpt, tmp_path / "old.pt")
    old = ForwardModel.from_checkpoint(tmp_path / "old.pt")
    assert old.config.view is None and old.config.view_spec == ViewSpec()
    assert old.config.cost_config == CostConfig()
    assert Imagination(old).view == ViewSpec()
    # a run on PPUU's view resumes from such a checkpoint
    train_fm(train_config(micro_data, tmp_path / "run", mode="deterministic", steps=2, val_every=0, ckpt_every=2))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["config"]["view"], ckpt["config"]["costs"]
    torch.save(ckpt, last)
    summary = train_fm(train_config(micro_data, tmp_path / "run", mode="deterministic", steps=3, val_every=0))
    assert summary["resumed_from"] == 2 and summary["step"] == 3


def test_the_evaluation_harness_drives_the_model_world_in_the_models_view(small_data, small_fm):
    from worldmodel.driving.closed_loop import EvalPolicyConfig, evaluate_driving

    result = evaluate_driving(EvalPolicyConfig(
        driver="plan:grad", data=str(small_data), fm=str(small_fm), split="train", episodes=1, max_steps=3, out=None,
        context_frames=CONTEXT, progress=False, driver_options={"world": "model", "horizon": 4, "iterations": 1},
    ))  # fmt: skip
    assert result["episodes"] == 1 and result["mean_steps"] >= 1  # PPUU's 117 x 24 views would not fit the model
