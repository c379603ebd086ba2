"""Probe targets on hand-made frames; ridge and kNN against direct formulas; probe samples by split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodel.nn.backbone import Backbone, BackboneConfig
from worldmodel.ssl.heads import Encoder
from worldmodel.ssl.probes import (
    TARGETS,
    ProbeConfig,
    RidgeFit,
    evaluate_probes,
    knn_probe,
    lane_phase,
    load_probe_split,
    probe_targets,
    r2_score,
    ridge_probe,
)


def test_probe_targets_on_a_drawn_frame():
    h, w, ppm = 117, 24, 1.6216216216216215
    image = np.zeros((1, 3, h, w), np.uint8)
    ego = np.zeros((1, h, w), np.uint8)
    ego[0, 54:63, 10:14] = 255
    image[0, 1, 40:46, 11:14] = 255  # a car ahead in the ego's columns, its rear at row 45
    image[0, 1, 70:76, 2:5] = 255  # a car behind, another lane
    image[0, 1, 10:16, 18:21] = 255  # a car ahead, another lane
    states = np.array([[50.0, 3.7 * 1.5 + 0.3, 3.0, 4.0]], np.float32)
    t = probe_targets(image, states, ego, ppm, 3.7)
    assert t["speed_mps"][0] == pytest.approx(5.0)
    assert t["headway_m"][0] == pytest.approx((54 - 46) / ppm)
    phi = 2 * np.pi * 0.3 / 3.7  # 0.3 m left of the lane centre
    assert t["lane_position"][0] == pytest.approx([np.sin(phi), np.cos(phi)], abs=1e-5)
    assert t["neighbours"][0] == 3
    empty = probe_targets(np.zeros_like(image), states, ego, ppm, 3.7)
    assert empty["headway_m"][0] == pytest.approx(54 / ppm) and empty["neighbours"][0] == 0


def test_lane_phase_is_continuous_across_a_marking():
    """The signed offset jumps by a lane width where the centre crosses a marking; the phase does not."""
    w = 3.7
    y = np.array([2 * w - 1e-3, 2 * w + 1e-3, 2.5 * w, 2.5 * w + 0.9])  # either side of a marking, centre, left
    phase = lane_phase(y, w)
    assert np.abs(phase[0] - phase[1]).max() < 1e-2
    assert phase[0] == pytest.approx([0.0, -1.0], abs=1e-2)  # on the marking: half a turn from the centre
    assert phase[2] == pytest.approx([0.0, 1.0])
    assert phase[3, 0] == pytest.approx(np.sin(2 * np.pi * 0.9 / w)) and phase[3, 0] > 0


def _split_data(seed=0, n=(300, 100, 100), d=6, noise=0.01):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    x = {s: torch.randn(k, d, generator=g) * 3 + 1 for s, k in zip(("train", "val", "test"), n, strict=True)}
    y = {s: v @ w + 2.0 + noise * torch.randn(len(v), generator=g) for s, v in x.items()}
    return x, y


def test_ridge_matches_the_closed_form_and_fits_linear_data():
    x, y = _split_data()
    out = ridge_probe(x, y, (1e-3,))
    assert out["r2"] > 0.999
    mean, std = x["train"].mean(0), x["train"].std(0)
    xs = ((x["train"] - mean) / std).double()
    lam = 1e-3 * len(xs)
    wts = torch.linalg.solve(xs.T @ xs + lam * torch.eye(xs.shape[1], dtype=torch.float64),
                             xs.T @ (y["train"].double() - y["train"].double().mean()))  # fmt: skip
    pred = ((x["test"] - mean) / std).double() @ wts + y["train"].double().mean()
    assert out["r2"] == pytest.approx(r2_score(y["test"].double(), pred), abs=1e-9)


def test_ridge_dual_form_equals_primal_form():
    x, y = _split_data(n=(20, 15, 15), d=40, noise=1.0)  # fewer samples than features: the dual form
    x_primal = {s: torch.cat([v, torch.zeros(len(v), 0)], 1) for s, v in x.items()}
    dual = RidgeFit(x)
    assert dual.dual
    mean, std = x["train"].mean(0), x["train"].std(0)
    xs = ((x["train"] - mean) / std).double()
    lam = 0.3
    wts = torch.linalg.solve(xs.T @ xs + lam * len(xs) * torch.eye(40, dtype=torch.float64),
                             xs.T @ (y["train"].double() - y["train"].double().mean()))  # fmt: skip
    expected = ((x_primal["test"] - mean) / std).double() @ wts + y["train"].double().mean()
    assert torch.allclose(dual.predict(y["train"], lam)["test"], expected, atol=1e-8)


def test_ridge_with_several_outputs_equals_one_fit_per_output():
    x, y = _split_data(n=(60, 30, 30), d=8, noise=0.5)
    y2 = {s: torch.stack([v, -2 * v + torch.sin(x[s][:, 1])], 1) for s, v in y.items()}  # [N, 2]
    fit = RidgeFit(x)
    both = fit.predict(y2["train"], 0.1)["test"]
    for k in range(2):
        assert torch.allclose(both[:, k], fit.predict(y2["train"][:, k], 0.1)["test"])
    # R^2 of [N, 2] pools the squared errors of both columns, each about its own mean
    res = ((y2["test"].double() - both) ** 2).sum()
    tot = ((y2["test"].double() - y2["test"].double().mean(0)) ** 2).sum()
    assert r2_score(y2["test"].double(), both) == pytest.approx(float(1 - res / tot))
    assert ridge_probe(fit, y2, (0.1,))["r2"] > 0.5


def test_knn_regression_and_r2():
    x, y = _split_data(noise=0.0)
    y = {s: torch.sin(v[:, 0]) for s, v in x.items()}  # a smooth function of one feature
    x = {s: v[:, :1] for s, v in x.items()}
    out = knn_probe(x, y, (1, 5))
    assert out["r2"] > 0.9 and out["k"] in (1, 5)
    assert r2_score(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0])) == pytest.approx(0.0)


def test_probe_splits_are_held_out_cars_and_evaluation_runs(micro_data):
    mean, std = torch.zeros(4), torch.ones(4)
    data = {s: load_probe_split(micro_data, s, 4, mean, std, 40) for s in ("train", "val", "test")}
    assert not set(data["train"]["vehicles"]) & set(data["test"]["vehicles"])
    assert data["test"]["images"].shape[1:] == (4, 3, 117, 24) and data["test"]["images"].dtype == torch.uint8
    assert torch.allclose(data["test"]["states"][:, -1, :2], torch.zeros(2))  # relative to the anchor
    torch.manual_seed(0)
    encoder = Encoder(Backbone(BackboneConfig.tiny()), "mean")
    result = evaluate_probes(encoder, data, ProbeConfig(knn_k=(3,), few_labels=10))
    assert set(result["probes"]) == set(TARGETS)
    assert np.isfinite(result["probes"]["speed_mps"]["ridge_r2"]) and result["health"]["repr_effective_rank"] >= 1
    # the few-label fit sees less: on speed (a linear function of the state input) it cannot do better
    speed = result["probes"]["speed_mps"]
    assert np.isfinite(speed["ridge_few_r2"]) and speed["ridge_few_r2"] <= speed["ridge_r2"] + 1e-6
