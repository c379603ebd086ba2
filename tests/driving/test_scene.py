"""The scene as features (``driving.scene``) and the scene policy (``nn.scene_policy``) driving from them: the
features name the right cars and lanes; the policy clamps to its range, survives its checkpoint and drives
``Replay-v0`` in lockstep; a regression on features learns a rule the views would need a CNN to read."""

import numpy as np
import pytest
import torch
from evaluation import driving_helpers  # tests/evaluation/driving_helpers.py

from worldmodel.driving.closed_loop import EvalPolicyConfig
from worldmodel.driving.drivers import NoActionDriver
from worldmodel.driving.episode_selection import select_episodes
from worldmodel.driving.episode_workers import run_episodes
from worldmodel.driving.model_drivers import make_model_driver
from worldmodel.driving.scene import FAR_M, FEATURE_NAMES, ROOM_M, features_at, scene_features
from worldmodel.driving.scene_driver import ScenePolicyDriver
from worldmodel.nn.checkpointing import CheckpointError
from worldmodel.nn.saving import save_checkpoint
from worldmodel.nn.scene_policy import ScenePolicy, ScenePolicyConfig, car_slots, closing_inputs
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RampConfig, RoadConfig

LIMITS = ((-6.2, -0.2), (2.0, 0.2))


def road():
    """Two mainline lanes (y 0-3.7, 3.7-7.4) and a ramp lane (7.4-11.1) that ends at 200 m."""
    return Road(RoadConfig(lanes=2, lane_width_m=3.7, length_m=300.0, section_m=(0.0, 300.0),
                           evaluated_m=(10.0, 290.0), speed_limit_mps=25.0,
                           ramps=(RampConfig(start_m=0.0, end_m=200.0),)))  # fmt: skip


def vehicles(rows):
    """``rows`` of (x, y, v, psi), the ego first; every car 4 m long, 2 m wide."""
    x, y, v, psi = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
    n = len(rows)
    return {"x": x, "y": y, "v": v, "psi": psi, "length": np.full(n, 4.0), "width": np.full(n, 2.0)}


def named(features):
    return dict(zip(FEATURE_NAMES, features.tolist(), strict=True))


def test_the_features_name_the_lanes_and_the_nearest_cars():
    ego = (100.0, 5.0, 10.0, 0.0)  # lane 1 (centre 5.55)
    scene = vehicles([ego, (130.0, 5.6, 8.0, 0.0), (115.0, 5.4, 12.0, 0.0), (150.0, 5.5, 9.0, 0.0),
                      (90.0, 5.5, 11.0, 0.0), (50.0, 5.5, 11.0, 0.0), (105.0, 1.8, 9.0, 0.1)])  # fmt: skip
    f = named(scene_features(scene, road(), np.array([0.5, -0.01])))
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == len(scene_features(scene, road()))
    assert f["speed"] == 10.0 and f["lane_offset"] == pytest.approx(5.0 - 5.55)
    assert f["last_accel"] == 0.5 and f["last_curvature"] == pytest.approx(-0.01)
    assert f["target_speed"] == pytest.approx(10.0)  # cars 1 and 2 are within 40 m ahead: (8 + 12) / 2
    # own lane: the nearest ahead at x 115 (gap 11 m), then 130 (26 m); behind the one at 90 (gap 6 m)
    assert (f["own_ahead1_gap"], f["own_ahead1_dv"]) == (pytest.approx(11.0), pytest.approx(2.0))
    assert (f["own_ahead2_gap"], f["own_ahead2_dv"]) == (pytest.approx(26.0), pytest.approx(-2.0))
    assert (f["own_behind_gap"], f["own_behind_dv"]) == (pytest.approx(6.0), pytest.approx(1.0))
    # left (lane 0): one car beside, 5 m along; nobody behind: far and as fast as the ego
    assert f["left_exists"] == 1.0 and f["left_ahead1_present"] == 1.0 and f["left_ahead1_gap"] == pytest.approx(1.0)
    assert f["left_ahead1_vy"] == pytest.approx(9.0 * np.sin(0.1))
    assert f["left_behind_present"] == 0.0 and f["left_behind_gap"] == FAR_M and f["left_behind_dv"] == 0.0
    # right: the ramp lane, 100 m before its end, empty
    assert f["right_exists"] == 1.0 and f["right_room"] == pytest.approx(100.0) and f["right_ahead1_present"] == 0.0
    assert f["own_room"] == ROOM_M and f["on_ramp"] == 0.0
    # from the left lane: no lane further left
    g = named(scene_features(vehicles([(100.0, 1.8, 10.0, 0.0)]), road()))
    assert g["left_exists"] == 0.0 and g["own_centre_dy"] == pytest.approx(0.05)
    # past the ramp's end the ramp lane does not exist
    h = named(scene_features(vehicles([(250.0, 5.5, 10.0, 0.0)]), road()))
    assert h["right_exists"] == 0.0


@pytest.mark.parametrize("ego", [(100.0, 5.0, 10.0, 0.02), (120.0, 9.0, 7.0, -0.03)])  # mainline; on the ramp
def test_features_at_are_the_scene_features_with_their_exact_derivatives(ego):
    """``features_at`` (imagination's features, differentiable in the ego's state and last action) gives the
    numbers ``scene_features`` gives, and its gradients are the finite differences of ``scene_features`` (small
    moves that change no lane or nearest car)."""
    others = vehicles([ego, (130.0, 5.6, 8.0, 0.0), (115.0, 5.4, 12.0, 0.05), (90.0, 5.5, 11.0, 0.0),
                       (105.0, 1.8, 9.0, 0.1), (140.0, 9.2, 6.0, 0.0), (97.0, 9.0, 7.5, 0.0)])  # fmt: skip
    others = {name: value[1:] for name, value in others.items()}
    last = np.array([0.4, -0.01])
    inputs = torch.tensor([[*ego[:2], ego[3], ego[2], *last]], dtype=torch.float64, requires_grad=True)

    def numpy_features(z):
        x, y, psi, v, accel, curvature = z
        scene = {name: np.concatenate([[value], others[name]]) for name, value in
                 (("x", x), ("y", y), ("psi", psi), ("v", v), ("length", 4.0))}  # fmt: skip
        return scene_features(scene, road(), np.array([accel, curvature])).astype(np.float64)

    got = features_at(inputs[:, :4], inputs[:, 4:], [others], [road()], torch.tensor([[4.0, 2.0]]))
    z = inputs.detach().numpy()[0]
    assert np.allclose(got.detach().numpy()[0], numpy_features(z), atol=1e-5)
    size = torch.tensor([[4.0, 2.0]])
    jacobian = torch.autograd.functional.jacobian(lambda i: features_at(i[:, :4], i[:, 4:], [others], [road()], size),
                                                  inputs)[0, :, 0]  # fmt: skip
    eps = 1e-2  # the features are float32
    numeric = np.stack([(numpy_features(z + eps * np.eye(6)[k]) - numpy_features(z - eps * np.eye(6)[k])) / (2 * eps)
                        for k in range(6)], axis=1)  # fmt: skip
    target = FEATURE_NAMES.index("target_speed"), FEATURE_NAMES.index("speed_error")
    numeric[list(target), 0] = 0.0  # on a ramp the speed target's lane-end cap moves with x: held, not differentiated
    assert np.abs(numeric).sum() > 10  # the features move with the ego
    np.testing.assert_allclose(jacobian.numpy(), numeric, atol=5e-3)


def test_the_nearest_lane_is_the_lane_on_the_road_else_the_nearest_strip():
    """``Road.nearest_lane`` (the lane slots' and the speed target's): on a lane its index, off the road the
    nearest strip: beside the road the outer lanes, past the ramp's end the ramp lane's strip."""
    x, y = np.array([50.0, 50.0, 50.0, 50.0, 250.0]), np.array([1.0, 5.0, 9.0, -3.0, 9.0])
    assert road().nearest_lane(x, y).tolist() == [0, 1, 2, 0, 2]
    assert road().lane_at(x, y).tolist() == [0, 1, 2, -1, -1]
    assert road().nearest_lane(np.array([50.0]), np.array([20.0])).tolist() == [2]


def test_the_policy_clamps_to_its_range_and_survives_its_checkpoint(tmp_path):
    torch.manual_seed(0)
    policy = ScenePolicy(ScenePolicyConfig(feature_names=FEATURE_NAMES, action_limits=LIMITS))
    policy.set_normalisation({"state_mean": torch.zeros(len(FEATURE_NAMES)), "state_std": torch.ones(len(FEATURE_NAMES)),
                              "action_mean": torch.tensor([0.0, 0.0]), "action_std": torch.tensor([1.0, 0.01])})  # fmt: skip
    with torch.no_grad():
        policy.head[-1].bias.copy_(torch.tensor([50.0, -50.0]))  # far outside the range
    out = policy(torch.zeros(3, len(FEATURE_NAMES)))
    si = policy.unnormalise_actions(out["action"])
    assert torch.allclose(si, torch.tensor([[2.0, -0.2]] * 3), atol=1e-5) and out["mean"][0, 0] > 40
    path = save_checkpoint(policy.checkpoint_dict(7), tmp_path / "scene.pt")
    driver = make_model_driver(str(path))
    assert isinstance(driver, ScenePolicyDriver)
    x = torch.randn(5, len(FEATURE_NAMES))
    assert torch.equal(driver.policy(x)["action"], policy(x)["action"])
    other = ScenePolicy(ScenePolicyConfig(feature_names=("speed",)))
    save_checkpoint(other.checkpoint_dict(0), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other features"):
        ScenePolicyDriver(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="low < high"):
        ScenePolicyConfig(feature_names=FEATURE_NAMES, action_limits=((1.0, 0.0), (0.0, 0.1)))


def test_closing_inputs_are_the_times_to_contact_and_headways(tmp_path):
    """An ego at 10 m/s: 20 m behind a car 4 m/s slower (contact in 5 s, headway 2 s), a follower 5 m behind and
    2.5 m/s faster (0.5 s), nobody in the other slots (as far and as fast as the ego)."""
    features = scene_features(vehicles([(100.0, 1.85, 10.0, 0.0), (124.0, 1.85, 6.0, 0.0), (91.0, 1.85, 12.5, 0.0)]),
                              road())  # fmt: skip
    slots = car_slots(FEATURE_NAMES)
    assert len(slots) == 9 and "own_behind" in slots
    got = closing_inputs(torch.from_numpy(features)[None], FEATURE_NAMES)[0]
    inverse_ttc, headway = (
        dict(zip(slots, got[:9].tolist(), strict=True)),
        dict(zip(slots, got[9:].tolist(), strict=True)),
    )
    assert inverse_ttc["own_ahead1"] == pytest.approx(4.0 / 20.0) and headway["own_ahead1"] == pytest.approx(2.0 / 5.0)
    assert inverse_ttc["own_behind"] == pytest.approx(2.5 / 5.0) and headway["own_behind"] == pytest.approx(0.5 / 5.0)
    assert inverse_ttc["own_ahead2"] == 0.0 and headway["own_ahead2"] == pytest.approx(
        FAR_M / 10.0 / 5.0
    )  # absent: far
    assert inverse_ttc["left_ahead1"] == 0.0
    torch.manual_seed(0)
    policy = ScenePolicy(ScenePolicyConfig(feature_names=FEATURE_NAMES, action_limits=LIMITS, closing=True))
    path = save_checkpoint(policy.checkpoint_dict(0), tmp_path / "closing.pt")
    x = torch.randn(4, len(FEATURE_NAMES)) * 10
    assert torch.equal(ScenePolicyDriver(path).policy(x)["action"], policy(x)["action"])
    plain = ScenePolicy(ScenePolicyConfig(feature_names=FEATURE_NAMES, action_limits=LIMITS))
    assert policy.head[0].in_features == plain.head[0].in_features + 18


def test_a_scene_policy_drives_episodes_in_lockstep(tmp_path):
    """Trained on a rule of three features (brake above 5 m/s, steer toward the lane's centre): driven in
    Replay-v0, the cars slow to about 5 m/s and keep to the road (no-action on the same cars does not slow); lockstep
    gives the same as one episode at a time."""
    data = driving_helpers.make_driving_dataset(tmp_path / "micro", seconds=20.0, seeds=(0,))
    torch.manual_seed(0)
    policy = ScenePolicy(ScenePolicyConfig(feature_names=FEATURE_NAMES, action_limits=LIMITS, hidden=32))
    features = torch.zeros(512, len(FEATURE_NAMES))
    speeds, offsets, headings = (features[:, FEATURE_NAMES.index(name)] for name in ("speed", "lane_offset", "heading"))
    speeds.copy_(torch.rand(512) * 20.0)
    offsets.copy_(torch.rand(512) * 4.0 - 2.0)
    headings.copy_(torch.rand(512) * 0.4 - 0.2)
    curvature = (-0.01 * offsets - 0.1 * headings).clamp(-0.2, 0.2)
    target = torch.stack([torch.where(speeds > 5.0, -1.0, 0.0), curvature], dim=1)
    policy.set_normalisation({"state_mean": features.mean(0), "state_std": features.std(0).clamp_min(1e-3),
                              "action_mean": torch.zeros(2), "action_std": torch.tensor([1.0, 0.01])})  # fmt: skip
    used = [FEATURE_NAMES.index(name) for name in ("speed", "lane_offset", "heading")]
    blind = torch.ones(len(FEATURE_NAMES), dtype=torch.bool)
    blind[used] = False
    with torch.no_grad():  # the rule reads three features only: the others' inputs stay cut
        policy.head[0].weight[:, blind] = 0.0
    policy.head[0].weight.register_hook(lambda grad: grad.masked_fill(blind, 0.0))
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(400):
        loss = (policy(features)["mean"] - policy.normalise_actions(target)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02
    path = save_checkpoint(policy.checkpoint_dict(300), tmp_path / "brake.pt")
    records = {}
    for batch, driver in ((1, ScenePolicyDriver(path)), (4, ScenePolicyDriver(path)), ("still", NoActionDriver())):
        config = EvalPolicyConfig(data=str(data), split="train", episodes=3, seed=0, workers=1, out=None,
                                  progress=False, batch=1 if batch == "still" else batch)  # fmt: skip
        files, chosen, _ = select_episodes(data, "train", config.context_frames, 3, 0)
        records[batch] = run_episodes(config, files, chosen, driver)
    assert [r["speed_mps"] for r in records[1]] == pytest.approx([r["speed_mps"] for r in records[4]])
    assert all(3.5 < r["speed_mps"] < 6.0 and r["event"] != "offroad" for r in records[1])
    assert max(r["speed_mps"] for r in records["still"]) > 6.5
