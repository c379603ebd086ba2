"""SSL training end to end on micro data: metrics, resume, backbone export into the forward model, eval."""

from __future__ import annotations

import pytest
import torch

from worldmodel.nn.backbone_export import load_backbone
from worldmodel.nn.checkpointing import load_checkpoint
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.ssl.evaluate import evaluate_ssl, mean_over_seeds, verdict
from worldmodel.ssl.objectives import SSLConfig
from worldmodel.ssl.probes import TARGETS, ProbeConfig
from worldmodel.ssl.train import TrainSSLConfig, method_defaults, train_ssl


def _config(data, out, method="vicreg", **overrides) -> TrainSSLConfig:
    kwargs = dict(data=str(data), out=str(out), ssl=SSLConfig(method=method, projector=(32, 16), predictor_hidden=8),
                  steps=3, batch_size=4, warmup_steps=1, workers=0, device="cpu", progress=False)  # fmt: skip
    return TrainSSLConfig.tiny(method, **(kwargs | overrides))


def test_train_logs_health_exports_backbone_and_feeds_the_forward_model(micro_data, tmp_path):
    summary = train_ssl(_config(micro_data, tmp_path / "run"))
    assert summary["steps"] == 3
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    last = summary["last"]
    for key in ("loss", "invariance", "variance", "covariance", "emb_effective_rank", "emb_normalised_std",
                "emb_normalised_std_ref", "repr_effective_rank"):  # fmt: skip
        assert key in last
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["kind"] == "ssl" and ckpt["step"] == 3 and "target" not in ckpt

    model_config = ForwardModelConfig.tiny("deterministic")
    backbone = load_backbone(tmp_path / "run" / "backbone.pt", model_config.backbone, freeze=True)
    exported = load_checkpoint(tmp_path / "run" / "backbone.pt")["state_dict"]
    assert all(torch.equal(v, exported[k]) for k, v in backbone.state_dict().items())
    assert not any(p.requires_grad for p in backbone.parameters())
    model = ForwardModel(model_config, backbone=backbone)
    assert model.backbone is backbone
    with pytest.raises(ValueError, match="trained with"):
        load_backbone(tmp_path / "run" / "backbone.pt", ForwardModelConfig.ppuu("deterministic").backbone)

    probes = ProbeConfig(samples_per_split=30, knn_k=(3,), few_labels=10)
    result = evaluate_ssl(tmp_path / "run" / "checkpoints" / "last.pt", micro_data, probes, device="cpu",
                          random_seeds=2)  # fmt: skip
    assert result["method"] == "vicreg" and result["random_seeds"] == [0, 1]
    for key in ("beats_random", "beats_random_few", "beats_random_knn"):
        assert set(result[key]) == set(TARGETS)
    assert set(result["random"]["probes"]) == set(TARGETS)
    for cell in result["random"]["probes"].values():  # the baseline is the mean of the two random backbones
        assert len(cell["ridge_r2_seeds"]) == 2 and cell["ridge_r2"] == pytest.approx(sum(cell["ridge_r2_seeds"]) / 2)
    assert set(result["verdict"]["ridge_r2"].values()) <= {"beats", "ceiling", "below"}
    assert any(c["ridge_r2_seeds"][0] != c["ridge_r2_seeds"][1] for c in result["random"]["probes"].values())


def test_resume_continues_bit_for_bit(micro_data, tmp_path):
    straight = train_ssl(_config(micro_data, tmp_path / "a", "byol", steps=4))
    interrupted = train_ssl(_config(micro_data, tmp_path / "b", "byol", steps=4, stop_at=2))
    assert interrupted["steps"] == 2 and interrupted["backbone"] is None
    resumed = train_ssl(_config(micro_data, tmp_path / "b", "byol", steps=4))
    assert straight["steps"] == resumed["steps"] == 4
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for key in ("state_dict", "target"):
        assert a[key].keys() == b[key].keys()
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 4


def test_verdict_and_the_mean_over_random_seeds():
    assert verdict(0.80, 0.77) == "beats" and verdict(0.76, 0.77) == "below"
    assert verdict(0.99940, 0.99945) == "ceiling"  # both at the ceiling: the difference is not about features
    assert verdict(0.99950, 0.99940) == "ceiling"
    assert verdict(0.9985, 0.9995) == "below"
    cell = {"ridge_r2": 0.5, "ridge_few_r2": 0.2, "knn_r2": 0.1}
    results = [{"probes": {t: {k: v + i for k, v in cell.items()} for t in TARGETS}, "health": {"rank": 2.0 + i}}
               for i in range(2)]  # fmt: skip
    mean = mean_over_seeds(results)
    assert mean["probes"]["headway_m"]["ridge_r2"] == pytest.approx(1.0)
    assert mean["probes"]["headway_m"]["knn_r2_seeds"] == [0.1, 1.1] and mean["health"]["rank"] == 2.5


def test_method_defaults_reach_both_presets_and_the_predictor_learning_rate(micro_data, tmp_path):
    assert method_defaults("vicreg") == {} and method_defaults("barlow") == {}
    for preset in (TrainSSLConfig.tiny, TrainSSLConfig.ppuu):
        assert preset("byol").views.drop_states == 0.25 and preset("vicreg").views.drop_states == 0.0
        simsiam = preset("simsiam")
        assert simsiam.predictor_lr_scale == 10.0 and simsiam.weight_decay == 1e-4
    assert TrainSSLConfig.ppuu("byol").backbone.widths == (64, 128, 256)
    from worldmodel.nn.distributed import DistContext
    from worldmodel.ssl.train import SSLTrainer

    trainer = SSLTrainer(_config(micro_data, tmp_path / "s", "simsiam", predictor_lr_scale=10.0), DistContext())
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    predictor = {id(p) for p in trainer.objective.predictor.parameters()}
    assert len(lrs) == 2 and lrs[1] == pytest.approx(10 * lrs[0])
    assert {id(p) for p in trainer.optimizer.param_groups[1]["params"]} == predictor
