"""SSL training end to end on micro data: metrics, resume, backbone export into the forward model, eval."""

from __future__ import annotations

import pytest
import torch

from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.ssl.evaluate import evaluate_ssl
from worldmodel.ssl.objectives import SSLConfig
from worldmodel.ssl.probes import TARGETS, ProbeConfig
from worldmodel.ssl.train import TrainSSLConfig, load_backbone, train_ssl
from worldmodel.training.checkpoint import load_checkpoint


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

    result = evaluate_ssl(tmp_path / "run" / "checkpoints" / "last.pt", micro_data,
                          ProbeConfig(samples_per_split=30, knn_k=(3,)), device="cpu")  # fmt: skip
    assert result["method"] == "vicreg" and set(result["beats_random"]) == set(TARGETS)
    assert set(result["random"]["probes"]) == set(TARGETS)


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
