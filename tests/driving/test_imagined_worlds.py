"""Imagined worlds of training windows: along the recorded car's own path and recorded future, the costs read
at its pose equal those stored in episodes.h5; the model world is a function of its seed; the cache."""

import importlib.util
from pathlib import Path

import pytest
import torch

from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving import kinematics
from worldmodel.driving.imagined_worlds import EgoWindow, ModelWorldBuilder, OracleWorldBuilder, WorldCache
from worldmodel.driving.model_world import ModelWorld, ModelWorldConfig
from worldmodel.driving.pose_costs import costs_at_pose, pixel_set
from worldmodel.driving.worlds import WorldFrames
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.model_windows import to_model_units
from worldmodel.nn.saving import save_checkpoint

HORIZON = 10


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> Path:
    """A 12 s recording of the tiny scenario and its episodes (``tests/evaluation/driving_helpers.py``)."""
    path = Path(__file__).parents[1] / "evaluation" / "driving_helpers.py"
    spec = importlib.util.spec_from_file_location("driving_helpers", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers.make_driving_dataset(tmp_path_factory.mktemp("imagined"), seconds=12.0, seeds=(0,))


def windows(traffic, n=24):
    dataset = WindowDataset(traffic / "episodes.h5", WindowConfig(4, HORIZON, split="train", stride=7))
    chosen = torch.linspace(0, len(dataset) - 1, n).long().tolist()
    items = [dataset[i] for i in chosen]
    return dataset, {key: torch.stack([item[key] for item in items]) for key in items[0]}


def test_costs_at_the_recorded_pose_in_the_recorded_future_equal_the_stored_costs(traffic):
    dataset, batch = windows(traffic)
    ego = EgoWindow.from_batch(batch, dataset, HORIZON)
    world = OracleWorldBuilder().build(batch, ego)  # [B, 1, T]: the recorded future, centred on the recorded car
    states = kinematics.rollout(ego.start.double(), ego.actions.double(), 0.1)  # the recorded actions, replayed
    relative = kinematics.relative_pose(states[..., :3], world.reference.double())  # [B, T, 3]
    assert relative.abs().max() < 0.01  # the exact kinematics put the car where it was recorded
    costs = costs_at_pose(pixel_set(world.images[:, 0].double(), dataset.view), relative, states[..., 3],
                          ego.car_size[:, 0, None].double(), ego.car_size[:, 1, None].double(),
                          dataset.cost_config)  # fmt: skip
    stored = batch["future_costs"].double()  # [B, T, 3]: proximity, lane, off-road
    proximity = torch.maximum(costs["proximity_ahead"], costs["proximity_behind"])
    assert (stored[..., 0] > 0.05).sum() >= 5 and (stored[..., 1] > 0.05).sum() >= 5  # the test has costs to match
    for k, value in enumerate((proximity, costs["lane"], costs["offroad"])):
        torch.testing.assert_close(value, stored[..., k], atol=3e-3, rtol=0)
    moved = costs_at_pose(pixel_set(world.images[:, 0].double(), dataset.view), relative + torch.tensor([3.0, 0, 0]),
                          states[..., 3], 4.5, 1.8, dataset.cost_config)  # fmt: skip
    assert not torch.allclose(moved["proximity_ahead"], costs["proximity_ahead"], atol=1e-2)  # the pose matters


def test_the_model_world_is_a_function_of_its_seed(traffic, tmp_path):
    dataset, batch = windows(traffic, n=2)
    torch.manual_seed(0)
    model = ForwardModel(ForwardModelConfig.tiny("vae"))
    with torch.no_grad():  # an untrained decoder starts at zero (a copy of the last frame): give it weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.set_normalisation(dataset.stats)
    path = save_checkpoint(model.checkpoint_dict(0), tmp_path / "fm.pt")
    builder = ModelWorldBuilder(ModelWorld(str(path), ModelWorldConfig(samples=2, replicas=3)))
    ego = EgoWindow.from_batch(batch, dataset, HORIZON)
    units = to_model_units(batch, dataset, builder.world.model)
    a, b, c = (builder.build(units, ego, seed=s) for s in (5, 5, 6))
    assert a.images.shape == (2, 6, HORIZON, 3, dataset.view.height_px, dataset.view.width_px)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert not torch.equal(a.images[:, 0], a.images[:, 1])  # dropout replicas differ
    torch.testing.assert_close(a.reference, kinematics.rollout(ego.start, ego.actions, 0.1)[..., :3])
    assert a.replicas == 3


def test_the_cache_keeps_the_most_recent_worlds_as_uint8():
    cache = WorldCache(capacity=2)
    images = torch.rand(3, 2, 4, 3, 5, 6)
    cache.store([0, 1, 2], WorldFrames(images, torch.randn(3, 4, 3)), {"plan": torch.randn(3, 4, 2)})
    assert len(cache) == 2 and cache.missing([0, 1, 2]) == [0]  # the oldest went first
    world, extras = cache.get([2, 1], replicas=2)
    torch.testing.assert_close(world.images, images[[2, 1]], atol=0.5 / 255 + 1e-7, rtol=0)
    assert extras["plan"].shape == (2, 4, 2) and cache.nbytes == 2 * (images[0].numel() + 4 * 3 * 4 + 4 * 2 * 4)
    assert (cache.hits, cache.misses) == (2, 1)
