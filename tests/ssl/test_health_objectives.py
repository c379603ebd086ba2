"""Health metrics on known clouds; objectives around a received backbone; BYOL's EMA target."""

from __future__ import annotations

import math

import pytest
import torch

from worldmodel.nn.backbone import Backbone, BackboneConfig
from worldmodel.ssl.health import effective_rank, health_metrics, normalised_std
from worldmodel.ssl.objectives import METHODS, SSLConfig, build_objective, byol_momentum


def test_effective_rank_and_std_detect_collapse():
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(4096, 16, generator=g, dtype=torch.float64)
    assert effective_rank(iso) == pytest.approx(16, rel=0.05)
    assert normalised_std(iso) == pytest.approx(1 / math.sqrt(16), rel=0.05)
    line = torch.randn(512, 1, generator=g) * torch.randn(1, 16, generator=g)  # rank 1
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-3)
    collapsed = torch.ones(64, 16) + 1e-9 * torch.randn(64, 16, generator=g)
    assert normalised_std(collapsed) < 1e-6
    assert set(health_metrics(iso, "emb_")) == {"emb_normalised_std", "emb_normalised_std_ref", "emb_effective_rank"}


def test_byol_momentum_schedule():
    assert byol_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert byol_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert byol_momentum(100, 100, 0.996) == pytest.approx(1.0)


def _views(b=6, tc=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, tc, 3, 117, 24, generator=g), torch.randn(b, tc, 4, generator=g)) for _ in range(2)]


@pytest.mark.parametrize("method", METHODS)
def test_objectives_train_the_received_backbone(method):
    torch.manual_seed(0)
    backbone = Backbone(BackboneConfig.tiny(dropout=0.0))
    objective = build_objective(backbone, SSLConfig(method=method, projector=(32, 16), predictor_hidden=8))
    assert objective.backbone is backbone
    out = objective(*_views())
    terms = objective.loss(out)
    assert "loss" in terms and all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert backbone.frame_encoder[0].weight.grad is not None
    keys = objective.online_state_dict()
    assert not any(k.startswith("target.") for k in keys)


def test_byol_target_is_an_ema_without_gradients():
    torch.manual_seed(0)
    objective = build_objective(
        Backbone(BackboneConfig.tiny(dropout=0.0)), SSLConfig(method="byol", projector=(32, 16))
    )
    target = objective.target
    assert all(not p.requires_grad for p in target.parameters())
    online0 = objective.encoder.backbone.trunk[-1].weight.detach().clone()
    target0 = target.encoder.backbone.trunk[-1].weight.detach().clone()
    with torch.no_grad():
        objective.encoder.backbone.trunk[-1].weight.add_(1.0)
    tau = objective.after_step(0, 10)["momentum"]
    expected = tau * target0 + (1 - tau) * (online0 + 1.0)
    assert torch.allclose(target.encoder.backbone.trunk[-1].weight, expected, atol=1e-6)
