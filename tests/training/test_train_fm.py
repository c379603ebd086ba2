"""Forward-model training: run directory, bit-exact resume, NaN guard, warm start, learning."""

import json
import math
from dataclasses import replace

import pytest
import torch
from fm_helpers import train_config, write_micro_episodes

from worldmodel.evaluation.fm import EvalFMConfig, evaluate_fm
from worldmodel.nn.distributed import DistContext
from worldmodel.nn.forward_model import ForwardModel
from worldmodel.training.fm import FMTrainer, TrainFMConfig, TrainingError, train_fm


def test_a_run_writes_config_metrics_and_self_contained_checkpoints(micro_data, tmp_path):
    summary = train_fm(train_config(micro_data, tmp_path / "run", mode="vae-lp"))
    run = tmp_path / "run"
    config = TrainFMConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert config.model.mode == "vae-lp" and config.steps == 10 and config.model.backbone.context_frames == 4
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["split"] == "train"]
    val = [line for line in lines if line["split"] == "val"]
    assert [line["step"] for line in train] == [5, 10] and [line["step"] for line in val] == [5, 10]
    for key in ("loss", "image_mse", "state_mse", "kl", "active_units", "lr", "windows_per_s", "grad_norm"):
        assert math.isfinite(train[-1][key]), key
    assert {"loss", "image_mse", "kl"} <= set(val[-1])
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["format"] == 1 and ckpt["kind"] == "forward_model" and ckpt["step"] == 10
    assert {"optimizer", "scheduler", "rng", "data"} <= set(ckpt)
    model = ForwardModel.from_checkpoint(run / "checkpoints" / "best.pt")
    from worldmodel.data.windows import WindowConfig, WindowDataset

    stats = WindowDataset(micro_data, WindowConfig(4, 3)).stats
    torch.testing.assert_close(model.state_std, stats["state_std"])  # the normalisation travels with the model
    assert summary["step"] == 10 and summary["best_val_loss"] == pytest.approx(min(v["loss"] for v in val))


def test_resume_continues_bit_exactly(tmp_path):
    # 2 train episodes of 20 frames: 28 windows, 3 batches of 8 per epoch, so the runs cross epochs
    data = write_micro_episodes(tmp_path / "small.h5", splits=(0, 0, 1, 2), frames=20)
    kwargs = dict(steps=8, val_every=3, ckpt_every=100, log_every=2)  # dropout and z-dropout on: RNG matters
    straight = train_fm(train_config(data, tmp_path / "straight", **kwargs))
    first = train_fm(train_config(data, tmp_path / "resumed", **(kwargs | {"steps": 4})))
    second = train_fm(train_config(data, tmp_path / "resumed", **(kwargs | {"workers": 1})))
    assert (first["resumed_from"], second["resumed_from"], straight["epoch"]) == (None, 4, 2)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg_sq"], b["optimizer"]["state"][0]["exp_avg_sq"])
    assert a["data"] == b["data"]
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["split"] == "train"] == [2, 4, 6, 8]
    assert straight["train"]["loss"] == second["train"]["loss"]


def test_resuming_with_another_model_fails_clearly(micro_data, tmp_path):
    train_fm(train_config(micro_data, tmp_path / "run", steps=1, val_every=0))
    with pytest.raises(ValueError, match="model config differs"):
        train_fm(train_config(micro_data, tmp_path / "run", mode="deterministic", steps=2))


def test_non_finite_steps_are_skipped_then_stop_the_run(micro_data, tmp_path, monkeypatch):
    trainer = FMTrainer(train_config(micro_data, tmp_path / "run", max_bad_steps=3, val_every=0), DistContext())
    loss = trainer.model.loss

    def poisoned(batch, step=None, generator=None):
        terms = loss(batch, step=step, generator=generator)
        return terms | {"loss": terms["loss"] * float("nan")}

    before = [p.detach().clone() for p in trainer.model.parameters()]
    monkeypatch.setattr(trainer.model, "loss", poisoned)
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=8)))
    terms, updated = trainer.train_step(batch)
    assert not updated and math.isnan(terms["loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert all(not s for s in trainer.optimizer.state.values())  # Adam saw nothing
    with pytest.raises(TrainingError, match="3 steps in a row"):
        trainer.run()


def test_warm_start_loads_a_deterministic_checkpoint(micro_run, micro_data, tmp_path):
    det = ForwardModel.from_checkpoint(micro_run / "checkpoints" / "last.pt")
    config = train_config(micro_data, tmp_path / "vae", warm_start=str(micro_run / "checkpoints" / "last.pt"))
    trainer = FMTrainer(config, DistContext())
    for name, value in det.backbone.state_dict().items():
        assert torch.equal(trainer.model.backbone.state_dict()[name], value), name
    assert trainer.model.z_expander.expand.weight.abs().sum() == 0  # starts as the deterministic model


def test_a_short_run_lowers_the_loss_and_beats_copy_last(micro_run, micro_data):
    lines = [json.loads(x) for x in (micro_run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if x["split"] == "train"]
    assert losses[-1] < 0.5 * losses[0]
    result = evaluate_fm(EvalFMConfig(str(micro_run / "checkpoints" / "last.pt"), str(micro_data), k=2, horizon=3,
                                      windows=32, progress=False, device="cpu"))  # fmt: skip
    model, copy = result["per_step"]["mean"]["image_mse"], result["per_step"]["copy_last"]["image_mse"]
    assert all(m < c for m, c in zip(model, copy, strict=True)), (model, copy)


def test_backbone_from_ssl_initialises_and_freezes(micro_data, tmp_path):
    """``--backbone``: the model starts from an exported (e.g. SSL-pretrained) backbone; ``--freeze-backbone``
    keeps it fixed while the rest trains."""
    from worldmodel.nn.backbone import Backbone
    from worldmodel.nn.backbone_export import export_backbone
    from worldmodel.nn.checkpointing import load_checkpoint
    from worldmodel.nn.saving import seed_everything

    config = train_config(micro_data, tmp_path / "run", mode="deterministic", steps=4, val_every=0)
    torch.manual_seed(123)
    pretrained = Backbone(config.model.backbone)
    path = export_backbone(pretrained, tmp_path / "backbone.pt")
    frozen = replace(config, backbone=str(path), freeze_backbone=True)
    train_fm(frozen)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["state_dict"]
    for name, value in pretrained.state_dict().items():
        assert torch.equal(state[f"backbone.{name}"], value), name
    seed_everything(config.seed)  # the trainer's initialisation, to see that the rest did train
    initial = ForwardModel(config.model).state_dict()
    assert any(not torch.equal(state[k], v) for k, v in initial.items() if not k.startswith("backbone."))
