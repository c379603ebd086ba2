"""Each loss equals a plain-loop implementation of its paper's formula, on random inputs."""

from __future__ import annotations

import math

import pytest
import torch

from worldmodel.ssl import losses


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _mean(xs):
    return sum(xs) / len(xs)


def _std(xs, unbiased):
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - (1 if unbiased else 0)))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_loop(temperature):
    b, d = 5, 7
    za, zb = _randn(b, d, seed=1), _randn(b, d, seed=2)
    views = [row.tolist() for row in za] + [row.tolist() for row in zb]
    total = 0.0
    for i in range(2 * b):
        j = (i + b) % (2 * b)
        denom = sum(math.exp(_cos(views[i], views[k]) / temperature) for k in range(2 * b) if k != i)
        total += -math.log(math.exp(_cos(views[i], views[j]) / temperature) / denom)
    expected = total / (2 * b)
    assert losses.nt_xent(za, zb, temperature)["loss"].item() == pytest.approx(expected, rel=1e-9)


def test_barlow_twins_matches_loop():
    b, d, lambd = 6, 4, 0.0051
    za, zb = _randn(b, d, seed=3), _randn(b, d, seed=4)

    def bn(z):
        cols = [[z[n][i] for n in range(b)] for i in range(d)]
        return [[(z[n][i] - _mean(cols[i])) / math.sqrt(_std(cols[i], False) ** 2 + 1e-5) for i in range(d)]
                for n in range(b)]  # fmt: skip

    na, nb = bn(za.tolist()), bn(zb.tolist())
    c = [[sum(na[n][i] * nb[n][j] for n in range(b)) / b for j in range(d)] for i in range(d)]
    on = sum((1 - c[i][i]) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    out = losses.barlow_twins(za, zb, lambd)
    assert out["on_diag"].item() == pytest.approx(on, rel=1e-9)
    assert out["off_diag"].item() == pytest.approx(off, rel=1e-9)
    assert out["loss"].item() == pytest.approx(on + lambd * off, rel=1e-9)


def test_vicreg_matches_loop():
    b, d = 8, 5
    za, zb = _randn(b, d, seed=5) * 0.5, _randn(b, d, seed=6) * 2.0

    def var_cov(z):
        cols = [[z[n][i] for n in range(b)] for i in range(d)]
        v = _mean([max(0.0, 1.0 - math.sqrt(_std(col, True) ** 2 + 1e-4)) for col in cols])
        means = [_mean(col) for col in cols]
        cov = [[sum((z[n][i] - means[i]) * (z[n][j] - means[j]) for n in range(b)) / (b - 1) for j in range(d)]
               for i in range(d)]  # fmt: skip
        c = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return v, c

    inv = _mean([(za[n, i].item() - zb[n, i].item()) ** 2 for n in range(b) for i in range(d)])
    (va, ca), (vb, cb) = var_cov(za.tolist()), var_cov(zb.tolist())
    var, cov = (va + vb) / 2, (ca + cb) / 2
    out = losses.vicreg(za, zb)
    assert out["invariance"].item() == pytest.approx(inv, rel=1e-9)
    assert out["variance"].item() == pytest.approx(var, rel=1e-9)
    assert out["covariance"].item() == pytest.approx(cov, rel=1e-9)
    assert out["loss"].item() == pytest.approx(25 * inv + 25 * var + cov, rel=1e-9)


def test_byol_matches_loop():
    b, d = 4, 6
    pa, pb, ta, tb = (_randn(b, d, seed=s) for s in (7, 8, 9, 10))

    def nmse(p, z):
        npn, nz = math.sqrt(sum(x * x for x in p)), math.sqrt(sum(x * x for x in z))
        return sum((x / npn - y / nz) ** 2 for x, y in zip(p, z, strict=True))

    expected = _mean([nmse(pa[n].tolist(), tb[n].tolist()) for n in range(b)]) + _mean(
        [nmse(pb[n].tolist(), ta[n].tolist()) for n in range(b)]
    )
    assert losses.byol(pa, pb, ta, tb)["loss"].item() == pytest.approx(expected, rel=1e-9)


def test_simsiam_matches_loop_and_stops_gradient():
    b, d = 4, 6
    pa, pb = _randn(b, d, seed=11), _randn(b, d, seed=12)
    za, zb = _randn(b, d, seed=13).requires_grad_(), _randn(b, d, seed=14).requires_grad_()
    expected = 0.5 * _mean([-_cos(pa[n].tolist(), zb[n].tolist()) for n in range(b)]) + 0.5 * _mean(
        [-_cos(pb[n].tolist(), za[n].tolist()) for n in range(b)]
    )
    out = losses.simsiam(pa.requires_grad_(), pb, za, zb)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-9)
    out["loss"].backward()
    assert za.grad is None and zb.grad is None and pa.grad is not None


def test_off_diagonal():
    m = torch.arange(9.0).view(3, 3)
    assert losses.off_diagonal(m).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]
