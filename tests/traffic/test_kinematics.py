import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worldmodel.traffic import kinematics

DT = 0.1


def roll(x, y, psi, v, accel, curvature, steps):
    xs, ys = [x], [y]
    for _ in range(steps):
        x, y, psi, v = kinematics.step(x, y, psi, v, accel, curvature, DT)
        xs.append(x)
        ys.append(y)
    return np.array(xs), np.array(ys), psi, v


def test_straight_constant_acceleration_closed_form():
    n, v0, a = 50, 3.0, 1.5
    xs, ys, psi, v = roll(0.0, 2.0, 0.0, v0, a, 0.0, n)
    k = np.arange(n + 1)
    # x_k = sum_{j<k} (v0 + a j dt) dt = v0 k dt + a dt^2 k (k - 1) / 2
    np.testing.assert_allclose(xs, v0 * k * DT + a * DT**2 * k * (k - 1) / 2, atol=1e-9)
    np.testing.assert_allclose(ys, 2.0, atol=1e-12)
    assert np.isclose(v, v0 + a * n * DT) and psi == 0.0


def test_constant_curvature_turns_by_atan_per_step_on_a_regular_polygon():
    n, v, b = 40, 5.0, 0.05
    xs, ys, psi, _ = roll(0.0, 0.0, 0.0, v, 0.0, b, n)
    dpsi = np.arctan(b * v * DT)
    assert np.isclose(psi, n * dpsi)
    # the points lie on a circle: every step has length v dt and turns by dpsi
    steps = np.hypot(np.diff(xs), np.diff(ys))
    np.testing.assert_allclose(steps, v * DT)
    headings = np.arctan2(np.diff(ys), np.diff(xs))
    np.testing.assert_allclose(np.diff(headings), dpsi, atol=1e-12)
    assert ys[-1] > 0  # positive curvature turns toward +y (to the right of the road frame)


def test_speed_never_negative():
    _, _, _, v = kinematics.step(0.0, 0.0, 0.0, 0.5, -10.0, 0.0, DT)
    assert v == 0.0


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=30, max_size=30),
    st.lists(st.floats(-0.05, 0.05), min_size=30, max_size=30),
    st.floats(2.0, 20.0),
)
def test_invert_recovers_the_actions_that_made_a_trajectory(accels, curvs, v0):
    x, y, psi, v = 0.0, 5.0, 0.02, v0
    xs, ys = [x], [y]
    for a, b in zip(accels, curvs, strict=True):
        x, y, psi, v = kinematics.step(x, y, psi, v, a, b, DT)
        xs.append(x)
        ys.append(y)
    _, speed, accel, curvature = kinematics.invert(np.array(xs), np.array(ys), DT)
    # speeds must stay positive for the inverse to be unique; with v0 >= 2 and |a| <= 3 over 3 s they may not
    if np.all(speed > 0.5):
        np.testing.assert_allclose(accel[:-2], accels[:-1][: len(accel) - 2], atol=1e-6)
        np.testing.assert_allclose(curvature[:-2], curvs[:-1], atol=1e-6)
