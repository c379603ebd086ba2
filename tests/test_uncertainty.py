"""The uncertainty cost (SPEC §2): replica variances, normalisation, hinge, discounting."""

import pytest
import torch

from worldmodel.costs import UncertaintyStats, discounted_mean, prediction_variances, uncertainty_cost


def test_prediction_variances_match_a_loop():
    g = torch.Generator().manual_seed(0)
    b, k, t = 2, 5, 3
    images, states, costs = torch.rand(b, k, t, 3, 7, 4, generator=g), torch.randn(b, k, t, 4, generator=g), \
        torch.rand(b, k, t, generator=g)  # fmt: skip
    v = prediction_variances(images, states, costs)
    assert v.shape == (3, b, t)
    for i in range(b):
        for s in range(t):

            def var(x):  # unbiased variance over the K replicas, averaged over the other axes
                x = x.reshape(k, -1)
                return ((x - x.mean(0)) ** 2).sum(0).div(k - 1).mean()

            assert torch.allclose(v[0, i, s], var(images[i, :, s]))
            assert torch.allclose(v[1, i, s], var(states[i, :, s]))
            assert torch.allclose(v[2, i, s], var(costs[i, :, s]))


def test_prediction_variances_need_two_replicas():
    with pytest.raises(ValueError, match="K >= 2"):
        prediction_variances(torch.rand(1, 1, 2, 3, 4, 4), torch.rand(1, 1, 2, 4), torch.rand(1, 1, 2))


def test_uncertainty_cost_formula_hinge_and_per_window():
    stats = UncertaintyStats(torch.tensor([[1.0, 2.0]] * 3, dtype=torch.float64),
                             torch.tensor([[0.5, 1.0]] * 3, dtype=torch.float64))  # fmt: skip
    var = torch.tensor([[[1.2, 2.4], [3.0, 0.0]]] * 3)  # [3, B=2, T=2]
    out = uncertainty_cost(var, stats, hinge=0.5)
    # per element relu((v - mu_t) / sigma_t - 0.5): [[0, 0], [3.5, 0]] -> mean 0.875 per term
    assert out["images"].item() == pytest.approx(0.875)
    assert out["total"].item() == pytest.approx(3 * 0.875)
    per = uncertainty_cost(var, stats, hinge=0.5, per_window=True)
    assert per["total"].shape == (2,)
    assert per["total"].tolist() == pytest.approx([0.0, 3 * 1.75])
    # steps beyond the statistics reuse the last column
    longer = torch.cat([var, var[..., -1:]], dim=-1)
    assert uncertainty_cost(longer, stats)["total"].item() == pytest.approx(3 * 3.5 / 6)


def test_uncertainty_stats_validate_and_round_trip():
    stats = UncertaintyStats(torch.rand(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64) + 0.1)
    again = UncertaintyStats.from_dict(stats.to_dict())
    assert torch.equal(again.mean, stats.mean) and torch.equal(again.std, stats.std)
    with pytest.raises(ValueError, match="std > 0"):
        UncertaintyStats(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[3, T\]"):
        UncertaintyStats(torch.zeros(2, 2), torch.ones(2, 2))


def test_discounted_mean():
    costs = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]])
    expected = (1 + 0.5 + 0.25 + 2 * 0.5) / 6
    assert discounted_mean(costs, 0.5).item() == pytest.approx(expected)


def test_discounted_mean_per_window():
    costs = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]])
    assert discounted_mean(costs, 0.5, per_window=True).tolist() == pytest.approx([1.75 / 3, 1.0 / 3])
