"""The vehicle array's draws: the batched draws are the plain ones, number for number."""

import numpy as np
import pytest

from worldmodel.traffic.scenario import Distribution, resolve_scenario
from worldmodel.traffic.vehicles import choose, sample_all


def test_sample_all_draws_what_sample_draws():
    dists = [Distribution(1.3, 0.3, 0.8, 2.5), Distribution(4.0), Distribution(-2.0, 1e-3), Distribution(0.5, 2.0, 0.0)]
    counts = [5, 3, 0, 7]
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    batched = sample_all(a, list(zip(dists, counts, strict=True)), extra_normals=4)
    plain = [d.sample(b, k) for d, k in zip(dists, counts, strict=True)] + [b.standard_normal(4)]
    for x, y in zip(batched, plain, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a.random() == b.random()  # the generators are in the same state


@pytest.mark.parametrize("k", [0, 1, 3, 40])
def test_choose_is_rng_choice(k):
    shares = np.array([vk.share for vk in resolve_scenario("i80").vehicles])
    for p in (shares / shares.sum(), np.array([0.2, 0.5, 0.3]), np.array([1.0])):
        a, b = np.random.default_rng(k), np.random.default_rng(k)
        assert np.array_equal(choose(a, p, k), b.choice(len(p), size=k, p=p))
        assert a.random() == b.random()
