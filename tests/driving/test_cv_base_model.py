"""A forward model that corrects the constant-velocity world (``ForwardModelConfig(base="cv")``): the model, its
training windows (``window_worlds.RenderedWindows``), the offline comparison and the planner's ``model`` world."""

import pytest
import torch
from evaluation import driving_helpers  # tests/evaluation/driving_helpers.py

from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving import kinematics
from worldmodel.driving.drivers import open_replay_env
from worldmodel.driving.envs import ReplayEnvConfig
from worldmodel.driving.model_world import ModelWorld
from worldmodel.driving.window_worlds import RenderedWindows
from worldmodel.driving.world_error import WorldErrorConfig, compare_worlds
from worldmodel.driving.worlds import RenderedWorld
from worldmodel.evaluation.fm import EvalFMConfig, evaluate_fm
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.saving import save_checkpoint

TC, TP = 4, 6


def cv_model(**overrides) -> ForwardModel:
    torch.manual_seed(0)
    return ForwardModel(ForwardModelConfig.tiny("vae", base="cv", image_update="pixel", **overrides))


def synthetic(b=3, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"context_images": torch.rand(b, TC, 3, 117, 24, generator=g),
            "context_states": torch.randn(b, TC, 4, generator=g), "actions": torch.randn(b, TP, 2, generator=g),
            "future_images": torch.rand(b, TP, 3, 117, 24, generator=g),
            "future_states": torch.randn(b, TP, 4, generator=g), "base_images": torch.rand(b, TP, 3, 117, 24, generator=g)}  # fmt: skip


def test_an_untrained_cv_model_predicts_its_base_frames_and_needs_them():
    model, batch = cv_model().eval(), synthetic()
    args = (batch["context_images"], batch["context_states"], batch["actions"])
    out = model.rollout(*args, base_images=batch["base_images"])
    assert torch.equal(out["images"], batch["base_images"])  # zero updates: exactly the cv frames
    sampled = model.rollout(*args, n_samples=2, base_images=batch["base_images"])["images"]
    assert torch.equal(sampled, batch["base_images"][:, None].expand_as(sampled))
    with pytest.raises(ValueError, match="needs base_images"):
        model.rollout(*args)
    with pytest.raises(ValueError, match="takes no base_images"):
        ForwardModel(ForwardModelConfig.tiny("vae")).rollout(*args, base_images=batch["base_images"])
    with pytest.raises(ValueError, match="base must be one of"):
        ForwardModelConfig.tiny(base="previous")


def test_the_cv_model_learns_a_correction_that_depends_on_its_base_frame():
    model, batch = cv_model(dropout=0.0), synthetic()
    # the truth: the base frame with its vehicles channel halved (what a correction of cv's cars looks like)
    batch["future_images"] = batch["base_images"].clone()
    batch["future_images"][:, :, 1] *= 0.5
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = model.loss(batch)["image_mse"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(model.loss(batch)["image_mse"]) < 0.5 * first
    model.eval()
    args = (batch["context_images"], batch["context_states"], batch["actions"])
    other = synthetic(seed=1)["base_images"]
    delta_a = model.rollout(*args, base_images=batch["base_images"])["images"] - batch["base_images"]
    delta_b = model.rollout(*args, base_images=other)["images"] - other
    assert (delta_a - delta_b).abs().mean() > 1e-3  # the update reads the base frame, not the context alone
    assert model.base_mix.weight.abs().sum() > 0


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    return driving_helpers.make_driving_dataset(tmp_path_factory.mktemp("cvbase") / "micro", seconds=20.0)


@pytest.fixture(scope="module")
def cv_checkpoint(traffic, tmp_path_factory):
    model = cv_model()
    model.set_normalisation(WindowDataset(traffic / "episodes.h5", WindowConfig(TC, TP)).stats)
    path = tmp_path_factory.mktemp("fm") / "cv.pt"
    return save_checkpoint(model.checkpoint_dict(0, train_config={"ego_relative": True,
                                                                  "data": str(traffic / "episodes.h5")}), path)  # fmt: skip


def test_cv_base_windows_carry_the_cv_frames_which_are_the_truth_when_cars_keep_their_speed(tmp_path):
    path = driving_helpers.write_braking_leader(tmp_path / "trajectories-0.h5", brake_at_s=1e6, frames=80)
    extract([path], tmp_path / "episodes.h5", ExtractConfig(progress=False))
    for split in ("test", "val", "train"):
        dataset = WindowDataset(tmp_path / "episodes.h5", WindowConfig(TC, TP, False, split, image_dtype="uint8"))
        if len(dataset):
            break
    windows = RenderedWindows(dataset, tmp_path)
    item = windows[len(windows) // 2]
    assert item["base_images"].dtype == torch.uint8 and item["base_images"].shape == item["future_images"].shape
    assert torch.equal(item["base_images"][:, 1], item["future_images"][:, 1])  # the vehicles: cv is exact here
    assert item["context_images"].shape[0] == TC and len(windows) == len(dataset)


def test_an_untrained_cv_model_scores_exactly_as_the_cv_world(traffic, cv_checkpoint):
    config = WorldErrorConfig(data=str(traffic), fm=str(cv_checkpoint), windows=6, horizon=TP, progress=False)
    out = compare_worlds(config)
    for metric, errors in out["per_step"]["cv"].items():
        assert out["per_step"]["model"][metric] == pytest.approx(errors, abs=1e-7)
    assert out["summary"]["cv"]["vehicles_mse"] < out["summary"]["copy_last"]["vehicles_mse"]


def test_the_planners_model_world_of_an_untrained_cv_model_is_the_cv_world(traffic, cv_checkpoint):
    world = ModelWorld(str(cv_checkpoint))
    env = open_replay_env(traffic / "trajectories-0.h5", ReplayEnvConfig(context_frames=TC, return_context=True))
    obs, info = env.reset(seed=0)
    window, sim = world.new_window(env, info), env.sim
    plan = torch.tensor([[[0.5, 0.0]] * TP], dtype=torch.float32)  # [1, T, 2] SI: gentle acceleration
    steps = [2, 4, 6]
    ego = torch.tensor([[sim.x, sim.y, sim.psi, sim.v]], dtype=torch.float64)
    poses = kinematics.rollout(ego, plan.double(), float(sim.dt))[..., :3].numpy()  # [1, T, 3]
    frames = world.futures([sim], poses[:, [s - 1 for s in steps]], steps, plan, [window])
    cv = RenderedWorld("cv", world.view).futures([sim], poses, list(range(1, TP + 1)))
    assert frames.images.shape == (1, 1, len(steps), 3, *cv.images.shape[-2:])
    torch.testing.assert_close(frames.images[:, 0], cv.images[:, 0, [s - 1 for s in steps]], atol=1e-6, rtol=0)
    assert float(cv.images[:, 0, :, 1].sum()) > 0  # there are cars to predict


def test_eval_fm_feeds_a_cv_model_its_frames(traffic, cv_checkpoint):
    config = EvalFMConfig(checkpoint=str(cv_checkpoint), data=str(traffic / "episodes.h5"), k=2, horizon=TP,
                          windows=8, batch_size=4, device="cpu", progress=False)  # fmt: skip
    out = evaluate_fm(config)
    mean, copy = out["per_step"]["mean"]["image_mse"], out["per_step"]["copy_last"]["image_mse"]
    assert len(mean) == TP and mean[-1] < copy[-1]  # the untrained model is the cv world: better than holding
