"""Prediction metrics, written from their formulas: MSE, PSNR, SSIM, rank correlation, sample diversity.

Images are float in [0, 1] with shape ``[..., C, H, W]``; every image metric returns one value per image,
shape ``[...]``, so that callers can average over windows, samples or steps as they need.

- PSNR = 10 log10(MAX^2 / MSE) with MAX = 1, capped at ``max_db`` (identical images would give +inf).
- SSIM (Wang et al. 2004): per channel, local statistics under an 11 x 11 Gaussian window (sigma 1.5,
  normalised to sum 1, "valid" positions only), C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1;
  SSIM = mean over positions of (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
  then averaged over the channels. The Gaussian is separable: two 1-D passes, as products with banded matrices. Computed in float64 on CPU
  (the local variances are differences of moments: float32 loses ~1e-4 of SSIM on flat bright areas).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_MAX_DB = 100.0


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error per image: [..., C, H, W] x2 -> [...]."""
    return (a - b).pow(2).mean((-3, -2, -1))


def psnr(a: Tensor, b: Tensor, max_db: float = PSNR_MAX_DB) -> Tensor:
    """Peak signal-to-noise ratio [dB] per image (peak 1): [..., C, H, W] x2 -> [...], at most ``max_db``."""
    return psnr_from_mse(mse(a, b), max_db)


def psnr_from_mse(m: Tensor, max_db: float = PSNR_MAX_DB) -> Tensor:
    """10 log10(1 / mse) [dB], capped at ``max_db`` (mse 0 -> max_db)."""
    floor = 10.0 ** (-max_db / 10.0)
    return (10.0 * torch.log10(1.0 / m.clamp(min=floor))).clamp(max=max_db)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float32, device=None) -> Tensor:
    """The 1-D Gaussian [size], summing to 1 (its outer product is the 2-D SSIM window)."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _band(n: int, g: Tensor) -> Tensor:
    """[n - k + 1, n] matrix whose row i holds the 1-D window at columns i .. i + k - 1 ("valid" filtering)."""
    k = g.numel()
    band = torch.zeros(n - k + 1, n, dtype=g.dtype, device=g.device)
    for i in range(n - k + 1):
        band[i, i : i + k] = g
    return band


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, chunk: int = 64) -> Tensor:
    """Structural similarity per image: [..., C, H, W] x2 (H, W >= 11) -> [...] in [-1, 1] (1: identical).

    Computed ``chunk`` images at a time (small temporaries: no large allocations per call)."""
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    *lead, c, h, w = a.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"ssim: images of {h} x {w} are smaller than the {SSIM_WINDOW} x {SSIM_WINDOW} window")
    dtype = torch.float64 if a.device.type == "cpu" else torch.float32  # variances are differences of moments
    x, y = a.reshape(-1, c, h, w), b.reshape(-1, c, h, w)
    g = gaussian_window(dtype=dtype, device=a.device)
    rows, cols = _band(h, g), _band(w, g).T
    out = [
        _ssim(x[i : i + chunk].to(dtype), y[i : i + chunk].to(dtype), rows, cols, data_range)
        for i in range(0, len(x), chunk)
    ]
    return torch.cat(out).reshape(lead).to(a.dtype)


def _ssim(x: Tensor, y: Tensor, rows: Tensor, cols: Tensor, data_range: float) -> Tensor:
    """x, y: [N, C, H, W] -> [N]; rows [H', H] and cols [W, W'] filter along H and W (``_band``)."""

    def blur(t: Tensor) -> Tensor:
        return rows @ t @ cols  # N C H W -> N C H' W'

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    s_xx = blur(x * x) - mu_x * mu_x
    s_yy = blur(y * y) - mu_y * mu_y
    s_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * s_xy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (s_xx + s_yy + c2))
    return ssim_map.mean((-3, -2, -1))


def rank(x: Tensor) -> Tensor:
    """Ranks 1..n of a 1-D tensor, ties given their average rank."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x, dtype=torch.float64)
    i, n = 0, len(x)
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation of two 1-D samples (Pearson's r of the ranks); nan when undefined."""
    if len(x) != len(y) or len(x) < 2:
        return math.nan
    rx, ry = rank(x.flatten()), rank(y.flatten())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum()) / denominator if denominator > 0 else math.nan


def mean_pairwise(x: Tensor, distance) -> Tensor:
    """Mean of ``distance(x_i, x_j)`` over the pairs i < j of samples along dim 1: x [B, K, ...] -> [B, ...']."""
    k = x.shape[1]
    if k < 2:
        raise ValueError("mean_pairwise: needs at least 2 samples")
    i, j = torch.triu_indices(k, k, offset=1, device=x.device)
    return distance(x[:, i], x[:, j]).mean(1)


__all__ = [
    "PSNR_MAX_DB",
    "gaussian_window",
    "mean_pairwise",
    "mse",
    "psnr",
    "psnr_from_mse",
    "rank",
    "spearman",
    "ssim",
]
