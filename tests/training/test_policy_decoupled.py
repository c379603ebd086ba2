"""Policy training over decoupled imagined worlds: MPUR lowers the imagined objective, distill lowers its
regression of the teacher, the oracle world is the recorded future, the cv world the windows' cars at constant
velocity, worlds are built once per window."""

import json

import pytest
import torch
from evaluation import driving_helpers  # tests/evaluation/driving_helpers.py

from worldmodel.nn.saving import save_checkpoint
from worldmodel.nn.traffic_model import TrafficModel, TrafficModelConfig
from worldmodel.training.policy import PolicyTrainer, TrainPolicyConfig, train_policy


def config(micro_data, micro_run, out, **overrides) -> TrainPolicyConfig:
    kwargs = dict(data=str(micro_data), fm=str(micro_run / "checkpoints" / "last.pt"), out=str(out), horizon=5,
                  replicas=2, steps=16, batch_size=6, lr=1e-3, stats_windows=6, val_every=0, val_windows=6,
                  val_episodes=0, ckpt_every=100, log_every=4, workers=0, device="cpu", progress=False,
                  world_pool=12)  # fmt: skip
    return TrainPolicyConfig(**(kwargs | overrides))


def train_lines(out):
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["split"] == "train"]


def test_decoupled_mpur_lowers_the_imagined_objective(micro_data, micro_run, tmp_path):
    trainer = PolicyTrainer(config(micro_data, micro_run, tmp_path / "mpur", uncertainty=0.5, lr=3e-4))
    assert trainer.decoupled.stats is not None and trainer.decoupled.stats.std > 0
    before = trainer.validate()
    summary = trainer.run()
    after = trainer.validate()
    assert after["predicted_loss"] < 0.9 * before["predicted_loss"]
    assert summary["train"]["world_build_s"] > 0 and summary["train"]["cache_hit_rate"] > 0.5  # built once each
    assert trainer.decoupled.built == 12 + 6  # the train pool and the val windows, once each
    assert {"total", "proximity_ahead", "speed", "uncertainty", "loss"} <= set(summary["train"])
    ckpt = torch.load(tmp_path / "mpur" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["method"] == "mpur" and ckpt["pose_uncertainty_stats"]["windows"] == 6


def test_distill_lowers_its_regression_of_the_planner(micro_data, micro_run, tmp_path):
    train_policy(config(micro_data, micro_run, tmp_path / "distill", method="distill", steps=40, teacher_iterations=3,
                        uncertainty=0.0))  # fmt: skip
    mse = [x["action_mse"] for x in train_lines(tmp_path / "distill")]
    assert mse[-1] < 0.7 * mse[0]


def test_distill_toward_a_teacher_beyond_the_policys_range_settles_at_the_bound(
    micro_data, micro_run, tmp_path, monkeypatch
):
    """A teacher braking far beyond the policy's range (-40 m/s^2 against its -6.2): the regression aims at the
    bound (reachable, then nothing more to learn), not beyond it, where the straight-through clamp would grow the
    weights without end."""
    from worldmodel.training.policy_decoupled import DecoupledImagination

    def extreme(self, world, ego, *rest):
        plan = torch.zeros_like(ego.actions)
        plan[..., 0] = -40.0  # m/s^2: tens of sigmas of the recorded accelerations
        return plan

    monkeypatch.setattr(DecoupledImagination, "teach", extreme)
    train_policy(config(micro_data, micro_run, tmp_path / "bound", method="distill", steps=60, teacher_iterations=1,
                        uncertainty=0.0, log_every=10))  # fmt: skip
    lines = train_lines(tmp_path / "bound")
    assert lines[-1]["action_mse"] < 0.2 * lines[0]["action_mse"]  # the bound is reached, the loss goes
    assert lines[-1]["grad_norm"] < 2.0 * lines[0]["grad_norm"] + 1.0  # and the gradients do not grow


def test_dagger_distill_asks_the_teacher_from_where_the_policy_drove(micro_data, micro_run, tmp_path, monkeypatch):
    """own_steps > 0: the teacher plans from the state the policy reached on its own (not the window's start),
    over the rest of the horizon."""
    from worldmodel.training.policy_decoupled import DecoupledImagination

    calls, teach = [], DecoupledImagination.teach

    def spy(self, world, ego, state=None, previous_action=None, step=0):
        plan = teach(self, world, ego, state, previous_action, step)
        if step > 0:
            calls.append((step, (state[:, :2] - ego.start[:, :2]).norm(dim=-1).min().item(), plan.shape[1]))
        return plan

    monkeypatch.setattr(DecoupledImagination, "teach", spy)
    train_policy(config(micro_data, micro_run, tmp_path / "dagger", method="distill", steps=40, teacher_iterations=3,
                        uncertainty=0.0, own_steps=3))  # fmt: skip
    assert len(calls) > 10 and {step for step, _, _ in calls} == {1, 2, 3}
    assert all(moved > 0.5 and horizon == 5 - step for step, moved, horizon in calls)  # the policy's own state
    assert all(x["skipped"] == 0 for x in train_lines(tmp_path / "dagger"))


def test_the_oracle_world_is_the_recorded_future(micro_data, micro_run, tmp_path):
    trainer = PolicyTrainer(config(micro_data, micro_run, tmp_path / "oracle", world="oracle", steps=2))
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=2)))
    trainer.train_step(batch, 1)
    world, _ = trainer.decoupled.cache.get([(0, int(k)) for k in batch["window"]], replicas=1)
    assert world.images.shape[1] == 1  # K = 1
    torch.testing.assert_close(world.images[:, 0], batch["future_images"][:, :5], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A micro dataset with its recordings (the cv and traffic worlds render from them)."""
    return driving_helpers.make_driving_dataset(tmp_path_factory.mktemp("worlds") / "micro", seconds=20.0, seeds=(0,))


def cached_world(trainer, batch):
    trainer.train_step(batch, 1)
    world, _ = trainer.decoupled.cache.get([(0, int(k)) for k in batch["window"]], replicas=1)
    return world


def test_the_cv_world_is_the_windows_last_frame_at_constant_velocity(recorded, micro_run, tmp_path):
    trainer = PolicyTrainer(config(recorded, micro_run, tmp_path / "cv", world="cv", steps=2))
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=4)))
    assert batch["world_images"].shape == batch["future_images"].shape
    world = cached_world(trainer, batch)
    assert world.images.shape[1] == 1  # K = 1
    torch.testing.assert_close(world.images[:, 0], batch["world_images"][:, :5], atol=1e-6, rtol=0)
    error = (world.images[:, 0, :, 1] - batch["future_images"][:, :5, 1]).pow(2).mean((0, 2, 3))  # vehicles, [T]
    assert error[0] < error[-1]  # nearly exact a step ahead, drifting from the recorded future after


def test_the_traffic_world_moves_the_cars_by_its_model(recorded, micro_run, tmp_path):
    untrained = save_checkpoint(TrafficModel(TrafficModelConfig(horizon=5)).checkpoint_dict(0), tmp_path / "t.pt")
    worlds = {}
    for name, extra in (("cv", {}), ("traffic", {"traffic": str(untrained)})):
        trainer = PolicyTrainer(config(recorded, micro_run, tmp_path / name, world=name, steps=2, **extra))
        batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=3)))
        worlds[name] = cached_world(trainer, batch).images
    torch.testing.assert_close(worlds["traffic"], worlds["cv"])  # an untrained model: zero displacement
    with pytest.raises(ValueError, match="needs a traffic model"):
        config(recorded, micro_run, tmp_path / "t", world="traffic")
