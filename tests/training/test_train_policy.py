"""Policy training in imagination: PPUU's coupled MPUR lowers the model-predicted cost, IL fits the expert,
resume is exact (the decoupled MPUR, its worlds rebuilt from their seeds). The decoupled methods:
``test_policy_decoupled.py``."""

import json

import pytest
import torch

from worldmodel.cli import main
from worldmodel.data.hdf5 import DataError
from worldmodel.training.policy import PolicyTrainer, TrainPolicyConfig, train_policy


def config(micro_data, micro_run, out, **overrides) -> TrainPolicyConfig:
    kwargs = dict(data=str(micro_data), fm=str(micro_run / "checkpoints" / "last.pt"), out=str(out), horizon=5,
                  replicas=3, steps=20, batch_size=6, lr=1e-3, stats_windows=12, val_every=0, val_windows=12,
                  val_episodes=0, ckpt_every=10, log_every=5, workers=0, device="cpu", progress=False,
                  world_pool=24)  # fmt: skip
    return TrainPolicyConfig(**(kwargs | overrides))


def test_mpur_ppuu_lowers_the_model_predicted_cost(micro_data, micro_run, tmp_path):
    c = config(micro_data, micro_run, tmp_path / "mpur", steps=40, method="mpur-ppuu")
    trainer = PolicyTrainer(c)
    before = trainer.validate()
    summary = trainer.run()
    after = trainer.validate()
    assert after["predicted_loss"] < before["predicted_loss"]
    assert summary["step"] == 40 and (tmp_path / "mpur" / "checkpoints" / "last.pt").exists()
    ckpt = torch.load(tmp_path / "mpur" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["kind"] == "policy" and ckpt["uncertainty_stats"] is not None and ckpt["method"] == "mpur-ppuu"
    lines = [json.loads(x) for x in (tmp_path / "mpur" / "metrics.jsonl").read_text().splitlines()]
    assert {"cost", "uncertainty", "u_images", "grad_norm", "loss"} <= set(lines[-1])


def test_il_fits_the_expert_actions(micro_data, micro_run, tmp_path):
    train_policy(config(micro_data, micro_run, tmp_path / "il", method="il", steps=200, log_every=10))
    lines = [json.loads(x) for x in (tmp_path / "il" / "metrics.jsonl").read_text().splitlines()]
    mse = [x["action_mse"] for x in lines if x["split"] == "train"]
    assert sum(mse[-3:]) < 0.7 * sum(mse[:3])  # the acceleration is readable from the states' speeds


def test_mper_runs_and_logs_its_terms(micro_data, micro_run, tmp_path):
    summary = train_policy(config(micro_data, micro_run, tmp_path / "mper", method="mper", steps=5, log_every=5))
    assert {"image_mse", "state_mse", "action_mse"} <= set(summary["train"])


def test_resume_continues_exactly(micro_data, micro_run, tmp_path):
    straight = train_policy(config(micro_data, micro_run, tmp_path / "a", steps=8, ckpt_every=4))
    train_policy(config(micro_data, micro_run, tmp_path / "b", steps=4, ckpt_every=4))
    resumed = train_policy(config(micro_data, micro_run, tmp_path / "b", steps=8, ckpt_every=4))
    assert resumed["resumed_from"] == 4 and straight["step"] == 8
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_are_one_line_errors(micro_data, micro_run, tmp_path):
    with pytest.raises(DataError, match="no such episodes file"):
        PolicyTrainer(config(tmp_path / "missing.h5", micro_run, tmp_path / "x"))
    with pytest.raises(ValueError, match="method"):
        config(micro_data, micro_run, tmp_path / "x", method="rl")
    with pytest.raises(ValueError, match="progress-weight"):
        config(micro_data, micro_run, tmp_path / "x", progress_weight=-0.1)
    rc = main(["train", "policy", "--fm", str(tmp_path / "nope.pt"), "--data", str(micro_data), "--out",
               str(tmp_path / "y"), "--no-progress"])  # fmt: skip
    assert rc != 0


def test_progress_weight_sets_the_objectives_speed_term(micro_data, micro_run, tmp_path):
    preset = config(micro_data, micro_run, tmp_path / "x").objective_config()
    heavier = config(micro_data, micro_run, tmp_path / "x", progress_weight=0.3).objective_config(uncertainty=0.2)
    assert preset.speed == 0.1 and heavier.speed == 0.3 and heavier.uncertainty == 0.2
    assert heavier.proximity_ahead == preset.proximity_ahead  # the rest of the preset is kept


def test_cli_train_policy(micro_data, micro_run, tmp_path, capsys):
    rc = main(["train", "policy", "--method", "il", "--fm", str(micro_run / "checkpoints" / "last.pt"), "--data",
               str(micro_data), "--out", str(tmp_path / "cli"), "--steps", "3", "--horizon", "3", "--val-every", "0",
               "--device", "cpu", "--workers", "0", "--no-progress"])  # fmt: skip
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3
