"""The torch kinematics equal the simulator's numpy definition, and are differentiable."""

import numpy as np
import pytest
import torch

from worldmodel.data.record import RecordConfig, record
from worldmodel.data.replay import recorded_headings
from worldmodel.data.trajectories import TrajectoryReader
from worldmodel.driving import kinematics
from worldmodel.traffic import kinematics as simulator_kinematics

DT = 0.1


def numpy_rollout(state: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """T calls of the simulator's ``step``: state [N, 4], actions [N, T, 2] -> [N, T, 4]."""
    columns, out = list(state.T), []
    for t in range(actions.shape[1]):
        columns = simulator_kinematics.step(*columns, actions[:, t, 0], actions[:, t, 1], DT)
        out.append(np.stack(columns, -1))
    return np.stack(out, 1)


def test_rollout_equals_the_simulators_steps_on_random_actions():
    rng = np.random.default_rng(0)
    state = np.stack(
        [rng.uniform(0, 100, 64), rng.uniform(0, 20, 64), rng.normal(0, 0.2, 64), rng.uniform(0, 15, 64)], 1
    )
    actions = np.stack([rng.normal(0, 4, (64, 40)), rng.normal(0, 0.03, (64, 40))], -1)
    expected = numpy_rollout(state, actions)
    assert (expected[..., 3] == 0).any()  # the clamp at standstill is exercised
    ours = kinematics.rollout(torch.from_numpy(state), torch.from_numpy(actions), DT).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10)
    one = kinematics.step(torch.from_numpy(state), torch.from_numpy(actions[:, 0]), DT).numpy()
    np.testing.assert_allclose(one, expected[:, 0], atol=1e-12)


@pytest.fixture(scope="module")
def recorded_car(tmp_path_factory):
    """The exact actions and states of one bot of a short recording of the tiny scenario."""
    path = tmp_path_factory.mktemp("kin") / "t.h5"
    record(RecordConfig(scenario="tiny", minutes=0.25, warmup_s=10.0, seed=3, progress=False), path)
    with TrajectoryReader(path) as reader:
        table = reader.vehicles
        k = int(np.argmax(table["count"]))
        rows = reader.read_rows(int(table["start"][k]), int(table["start"][k] + table["count"][k]),
                                ("x", "y", "vx", "vy", "heading", "accel", "curvature"))  # fmt: skip
    return {name: values.astype(np.float64) for name, values in rows.items()}


def test_replaying_a_recorded_cars_actions_reproduces_its_track(recorded_car):
    c = recorded_car
    psi = recorded_headings(c["vx"], c["vy"], np.array([len(c["x"])]), c["heading"])
    state = torch.tensor([[c["x"][0], c["y"][0], psi[0], np.hypot(c["vx"][0], c["vy"][0])]], dtype=torch.float64)
    actions = torch.from_numpy(np.stack([c["accel"], c["curvature"]], -1)[None, :-1])
    states = kinematics.rollout(state, actions, DT)[0].numpy()
    assert len(states) > 100
    np.testing.assert_allclose(states[:, 0], c["x"][1:], atol=2e-3)  # float32 storage of the recording
    np.testing.assert_allclose(states[:, 1], c["y"][1:], atol=2e-3)


def test_rollout_is_differentiable_and_relative_pose_inverts_the_frame():
    state = torch.tensor([[1.0, 2.0, 0.1, 5.0]], dtype=torch.float64)
    actions = torch.tensor([[[0.5, 0.01], [-1.0, -0.02], [2.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: kinematics.rollout(state, a, DT), (actions,))
    reference = torch.tensor([3.0, 1.0, np.pi / 2], dtype=torch.float64)  # heading +y: forward is +y, right is -x
    pose = torch.tensor([2.0, 4.0, np.pi / 2 + 0.1], dtype=torch.float64)
    np.testing.assert_allclose(kinematics.relative_pose(pose, reference).numpy(), [3.0, 1.0, 0.1], atol=1e-12)


def test_a_car_at_rest_keeps_the_gradient_of_its_acceleration():
    """At v = 0 with zero actions the rollout's speed gradient equals the step-by-step clamp's (a planner must
    be able to start a stopped car)."""
    state = torch.zeros(1, 4, dtype=torch.float64)
    actions = torch.zeros(1, 5, 2, dtype=torch.float64, requires_grad=True)
    kinematics.rollout(state, actions, DT)[..., 3].sum().backward()
    looped = torch.zeros(1, 5, 2, dtype=torch.float64, requires_grad=True)
    speeds, s = [], state
    for t in range(5):
        s = kinematics.step(s, looped[:, t], DT)
        speeds.append(s[..., 3])
    torch.stack(speeds).sum().backward()
    np.testing.assert_allclose(actions.grad.numpy(), looped.grad.numpy())
    assert actions.grad[0, 0, 0] > 0


def test_lane_plans_take_the_ego_to_each_lateral_target_at_each_acceleration():
    from worldmodel.driving.lane_plans import LanePlanConfig, lane_plans

    state = torch.tensor([[0.0, 5.55, 0.0, 10.0]])
    targets = torch.tensor([[1.85, 5.55, 9.25]])
    config = LanePlanConfig(accels_mps2=(-1.0, 0.0, 1.0))
    plans = lane_plans(state, targets, horizon=40, dt=0.1, config=config)  # [1, 9, 40, 2]
    assert plans.shape == (1, 9, 40, 2)
    assert plans[..., 1].abs().max() <= config.max_curvature_per_m + 1e-6
    np.testing.assert_allclose(plans[0, :, :, 0], torch.tensor([-1.0, 0.0, 1.0]).repeat(3)[:, None].expand(9, 40))
    end = kinematics.rollout(state[:, None].expand(1, 9, 4), plans, 0.1)[0, :, -1]  # [9, 4] after 4 s
    np.testing.assert_allclose(end[:, 1], targets[0].repeat_interleave(3), atol=0.3)
    assert end[:, 2].abs().max() < 0.05  # aligned with the road again


def test_invert_step_recovers_the_action_of_a_step():
    g = torch.Generator().manual_seed(0)
    state = torch.cat([torch.randn(64, 3, generator=g, dtype=torch.float64),
                       1.0 + 20 * torch.rand(64, 1, generator=g, dtype=torch.float64)], dim=-1)  # fmt: skip
    action = torch.stack([torch.randn(64, generator=g, dtype=torch.float64).clamp(-3, 3),
                          0.02 * torch.randn(64, generator=g, dtype=torch.float64)], dim=-1)  # fmt: skip
    torch.testing.assert_close(kinematics.invert_step(state, kinematics.step(state, action, 0.1), 0.1), action)
    slow = state.clone()
    slow[:, 3] = 0.2
    assert (kinematics.invert_step(slow, kinematics.step(slow, action, 0.1), 0.1)[:, 1] == 0).all()
