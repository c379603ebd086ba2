"""The compiled kernel of the simulator step (``traffic/compiled.py``) against the numpy path: the same
traffic bit for bit, and the same collision sweep answers."""

import numpy as np
import pytest

from worldmodel.traffic import compiled
from worldmodel.traffic.collisions import BAND_KEY, BandSweep
from worldmodel.traffic.scenario import resolve_scenario
from worldmodel.traffic.simulation import TrafficSimulation
from worldmodel.traffic.vehicles import HALF_DIAGONAL, HALF_LENGTH, HALF_WIDTH, N_FIELDS, SIN, X, Y

pytest.importorskip("numba")


def drive(compiled_kernel: bool, steps: int = 400) -> list[dict]:
    """i80 (ramps, dense traffic) with two controlled cars, one of them leaving the road (NO_LANE)."""
    sim = TrafficSimulation(resolve_scenario("i80"), seed=5, compiled_kernel=compiled_kernel)
    for _ in range(100):
        sim.step()
    swerving = sim.add_controlled(120.0, 5.5, 0.0, 12.0, 4.5, 1.8)
    braking = sim.add_controlled(60.0, 9.2, 0.0, 10.0, 4.5, 1.8)
    snapshots = []
    for step in range(steps):
        actions = {braking: (-1.0 if step < 60 else 0.5, 0.0)}
        if swerving in sim.ids:
            actions[swerving] = (0.0, -0.02 if step < 40 else 0.0)  # toward and off the road's edge
        sim.step(actions)
        snapshots.append(sim.snapshot() | {"collisions": sim.stats.collisions})
    return snapshots


def test_the_kernel_gives_the_same_traffic_bit_for_bit():
    numpy_path, kernel = drive(False), drive(True)
    assert any(s["lane"].min() < 0 for s in numpy_path)  # a car off the road was simulated
    for a, b in zip(numpy_path, kernel, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), key


def test_the_kernel_sweep_answers_as_the_numpy_sweep():
    rng = np.random.default_rng(0)
    answers = []
    for _ in range(400):
        n = int(rng.integers(0, 30))
        d = np.zeros((N_FIELDS, n))
        d[X], d[Y] = rng.uniform(0, 120, n), rng.uniform(0, 18, n)
        d[SIN] = np.sin(rng.normal(0, 0.05, n))
        d[HALF_LENGTH], d[HALF_WIDTH] = rng.uniform(1.5, 4, n), rng.uniform(0.8, 1.1, n)
        d[HALF_DIAGONAL] = np.hypot(d[HALF_LENGTH], d[HALF_WIDTH])
        expected = BandSweep(3.7).apart(*(d[r] for r in (X, Y, SIN, HALF_LENGTH, HALF_WIDTH, HALF_DIAGONAL)))
        assert compiled.bands_apart(d, n, 3.7, BAND_KEY) == expected
        answers.append(expected)
    assert 0 < sum(answers) < len(answers)  # both answers were asked for


def test_asking_for_the_kernel_without_numba_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(compiled, "available", lambda: False)
    with pytest.raises(ValueError, match="numba"):
        TrafficSimulation(resolve_scenario("tiny"), compiled_kernel=True)
    assert not TrafficSimulation(resolve_scenario("tiny")).compiled
