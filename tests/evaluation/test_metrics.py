"""PSNR, SSIM, Spearman and diversity: closed-form cases and a brute-force SSIM reference."""

import math

import pytest
import torch

from worldmodel.evaluation.metrics import (
    PSNR_MAX_DB,
    gaussian_window,
    mean_pairwise,
    mse,
    psnr,
    psnr_from_mse,
    rank,
    spearman,
    ssim,
)

C1, C2 = 0.01**2, 0.03**2


def test_psnr_closed_forms():
    a = torch.rand(2, 3, 3, 20, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(psnr(a, a), torch.full((2, 3), PSNR_MAX_DB))  # identical: capped, not inf
    b = (a + 0.1).clamp(max=5.0)  # every pixel off by 0.1: MSE 0.01 -> 20 dB
    torch.testing.assert_close(mse(a, b), torch.full((2, 3), 0.01))
    torch.testing.assert_close(psnr(a, b), torch.full((2, 3), 20.0))
    torch.testing.assert_close(psnr_from_mse(torch.tensor([1e-3, 1.0])), torch.tensor([30.0, 0.0]))


def test_gaussian_window():
    g = gaussian_window()
    assert g.shape == (11,) and g.sum().item() == pytest.approx(1.0) and torch.equal(g, g.flip(0))
    assert g[6] / g[5] == pytest.approx(math.exp(-1 / (2 * 1.5**2)))


def test_ssim_of_identical_images_is_one_and_of_constants_is_the_luminance_term():
    a = torch.rand(4, 3, 117, 24, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ssim(a, a), torch.ones(4))
    for x, y in ((0.2, 0.7), (0.5, 0.5), (0.0, 1.0)):
        flat_x, flat_y = torch.full((3, 16, 16), x), torch.full((3, 16, 16), y)
        expected = (2 * x * y + C1) / (x * x + y * y + C1)  # no variance: the contrast-structure term is 1
        assert ssim(flat_x, flat_y).item() == pytest.approx(expected, rel=1e-5)


def ssim_brute_force(x: torch.Tensor, y: torch.Tensor) -> float:
    """SSIM of [C, H, W] images with an explicit 11 x 11 window at every valid position (float64)."""
    g = gaussian_window(dtype=torch.float64)
    w = torch.outer(g, g)
    x, y = x.double(), y.double()
    values = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - 10):
            for j in range(x.shape[2] - 10):
                px, py = x[c, i : i + 11, j : j + 11], y[c, i : i + 11, j : j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cxy = (w * (px - mx) * (py - my)).sum()
                values.append(((2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))).item())
    return sum(values) / len(values)


def test_ssim_equals_the_brute_force_definition():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 14, 13, generator=g)
    y = (x + 0.2 * torch.randn(2, 14, 13, generator=g)).clamp(0, 1)
    assert ssim(x, y).item() == pytest.approx(ssim_brute_force(x, y), abs=1e-5)


def test_ssim_falls_with_noise_and_rejects_small_images():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 40, 24, generator=g)
    noise = torch.randn(3, 40, 24, generator=g)
    values = [ssim(x, (x + s * noise).clamp(0, 1)).item() for s in (0.0, 0.05, 0.2, 0.5)]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(1.0)
    assert ssim(x, 1 - x).item() < 0  # anti-correlated structure
    with pytest.raises(ValueError, match="smaller"):
        ssim(torch.rand(3, 10, 24), torch.rand(3, 10, 24))


def test_spearman_and_ranks():
    x = torch.tensor([0.1, 0.5, 0.3, 2.0, 1.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert torch.equal(
        rank(torch.tensor([3.0, 1.0, 3.0, 2.0])), torch.tensor([3.5, 1.0, 3.5, 2.0], dtype=torch.float64)
    )
    assert math.isnan(spearman(torch.ones(4), x[:4]))  # no variation: undefined
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = torch.randn(50, generator=torch.Generator().manual_seed(4)), torch.randint(0, 5, (50,)).float()
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)


def test_mean_pairwise_distance():
    x = torch.tensor([[[0.0], [1.0], [3.0]]])  # B=1, K=3 samples of one value
    assert mean_pairwise(x, lambda a, b: (a - b).abs().squeeze(-1)).item() == pytest.approx((1 + 3 + 2) / 3)
