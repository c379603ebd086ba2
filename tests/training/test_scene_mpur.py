"""A scene policy trained by MPUR in an object-level imagination (``driving.scene_windows``,
``training.scene_mpur``): the imagined windows are the recording where they should be (the recorded car's state,
actions and poses agree with the kinematics; the oracle's cars are the recorded ones; the features at the start
are those the closed loop computes there), and a seconds-long run lowers the imagined objective."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from evaluation import driving_helpers  # tests/evaluation/driving_helpers.py

from worldmodel.data.hdf5 import DT_S
from worldmodel.driving import kinematics
from worldmodel.driving.closed_loop import EvalPolicyConfig
from worldmodel.driving.episode_selection import dataset_files, select_episodes
from worldmodel.driving.episode_workers import run_episodes
from worldmodel.driving.objective import ObjectiveConfig
from worldmodel.driving.recorded_drives import DriveRecorder
from worldmodel.driving.scene import EGO_FEATURES, FEATURE_NAMES, features_at, scene_features
from worldmodel.driving.scene_driver import ScenePolicyDriver
from worldmodel.driving.scene_windows import (
    build_pool,
    driven_moments,
    future_others,
    scene_drive,
    start_lanes,
    window_moments,
)
from worldmodel.driving.window_worlds import Recordings
from worldmodel.driving.worlds import recorded_others
from worldmodel.nn.scene_policy import ScenePolicy, ScenePolicyConfig
from worldmodel.traffic.view import ViewSpec
from worldmodel.training.policy import train_policy
from worldmodel.training.policy_config import TrainPolicyConfig
from worldmodel.training.scene_mpur import imagined_terms, recorded_normalisation


class ConstantDriver:
    """The same action at every step."""

    name, max_slots, needs_context, view = "constant", None, False, None

    def __init__(self, action) -> None:
        self.action = np.asarray(action, dtype=np.float64)

    def reset_slot(self, slot, env, obs, info) -> None:
        pass

    def act_slots(self, slots, observations, infos):
        return np.tile(self.action, (len(slots), 1))

    def slot_diagnostics(self, slot):
        return {}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return driving_helpers.make_driving_dataset(tmp_path_factory.mktemp("scene-mpur") / "micro", seconds=20.0,
                                                seeds=(0,))  # fmt: skip


def test_imagined_windows_are_the_recording(recorded):
    moments = window_moments(recorded, "train", 6, 10, seed=0)
    assert len(moments) == 6 and moments == window_moments(recorded, "train", 6, 10, seed=0)
    pool = build_pool(recorded, moments, 10, "oracle")
    assert pool.frames.shape[:2] == (6, 10) and pool.frames.dtype == torch.uint8 and pool.frames.max() > 0
    # the recorded actions (inverted steps) move the recorded car along its recorded poses
    rolled = kinematics.rollout(pool.start.double(), pool.actions.double(), DT_S)
    assert torch.allclose(rolled[..., :2], pool.reference[..., :2].double(), atol=0.05)
    recordings = Recordings(dataset_files(recorded)[1])
    for n, moment in enumerate(moments[:3]):
        sim = recordings.handover(moment.vehicle, moment.row)
        assert np.allclose(pool.start[n].numpy(), [sim.x, sim.y, sim.psi, sim.v], atol=1e-4)
        oracle = future_others("oracle", sim, 10)
        assert np.array_equal(oracle[4]["x"], recorded_others(sim, sim.frame + 4)["x"])
        cv = future_others("cv", sim, 10)
        assert np.allclose(cv[10]["x"], cv[0]["x"] + cv[0]["v"] * np.cos(cv[0]["psi"]) * 10 * sim.dt)
        # what the policy reads at the start is what the closed loop computes there (last action: the pool's)
        closed_loop = scene_features(sim.vehicles(), sim.road, pool.previous_action[n].numpy())
        policy = ScenePolicy(ScenePolicyConfig(feature_names=FEATURE_NAMES))
        policy.set_normalisation(recorded_normalisation(pool))
        drive = scene_drive(policy, pool, torch.tensor([n]), steps=1)
        assert np.allclose(drive.features[0, 0].detach().numpy(), closed_loop, atol=1e-4)
    # the features read after the first step depend on the policy's actions, unless feature_gradient is off
    three = {on: scene_drive(policy, pool, torch.tensor([0, 1]), steps=3, feature_gradient=on) for on in (True, False)}
    assert three[True].features[:, 1:].requires_grad and not three[False].features.requires_grad
    assert torch.equal(three[True].states, three[False].states) and three[False].states.requires_grad
    # ego_gradient: through the ego's own features only (its speed, heading, offset, last action), not the cars'
    ego = scene_drive(policy, pool, torch.tensor([0, 1]), steps=3, ego_gradient=True).features[:, 1]
    own = [FEATURE_NAMES.index(name) for name in EGO_FEATURES]
    cars = [i for i, name in enumerate(FEATURE_NAMES) if name.endswith("_gap")]
    assert ego[:, own].requires_grad and ego[:, own].grad_fn is not None
    (car_grad,) = torch.autograd.grad(
        ego[:, cars].sum(), list(policy.parameters())[0], allow_unused=True, retain_graph=True
    )
    (own_grad,) = torch.autograd.grad(ego[:, own].sum(), list(policy.parameters())[0])
    assert (car_grad is None or not car_grad.any()) and own_grad.abs().sum() > 0
    with pytest.raises(ValueError, match="traffic model"):
        future_others("traffic", sim, 10)


def test_windows_at_a_drivers_own_states(recorded):
    """A driver's drive (``DriveRecorder``) cut into windows: each starts where the driver was, with the action it
    executed before, its own next states as the reference; past the drive's end the car coasts on."""
    config = EvalPolicyConfig(data=str(recorded), split="train", episodes=1, seed=0, workers=1, out=None,
                              progress=False)  # fmt: skip
    files, chosen, _ = select_episodes(recorded, "train", config.context_frames, 1, 0)
    record = run_episodes(config, files, chosen, DriveRecorder(ConstantDriver([-0.5, 0.002])))[0]
    drive = record["collected"]
    n = len(drive["actions"])
    assert (
        n == record["steps"] and drive["rows"][0] == config.context_frames - 1 and np.all(np.diff(drive["rows"]) == 1)
    )
    moments = driven_moments(chosen[0].vehicle, drive, 10, stride=4)
    assert [m.row for m in moments] == drive["rows"][::4].tolist()
    pool = build_pool(recorded, moments, 10, "cv")
    assert np.allclose(pool.start.numpy(), drive["states"][::4], atol=1e-4)
    assert torch.allclose(pool.previous_action[1], torch.tensor([-0.5, 0.002]))
    assert torch.equal(pool.previous_action[0], torch.zeros(2))  # the closed loop starts with no last action
    rolled = kinematics.rollout(pool.start.double(), pool.actions.double(), DT_S)
    assert torch.allclose(rolled[..., :3], pool.reference.double(), atol=1e-3)
    inside = [i for i, m in enumerate(moments) if m.row + 10 < drive["rows"][-1]]
    assert torch.allclose(pool.actions[inside].double(), torch.tensor([-0.5, 0.002], dtype=torch.float64)
                          .expand(len(inside), 10, 2), atol=1e-3)  # fmt: skip
    assert torch.allclose(pool.actions[-1, -1], torch.zeros(2), atol=1e-4)  # coasting after the end
    sim = Recordings(dataset_files(recorded)[1]).at(chosen[0].vehicle, moments[2].row, moments[2].driven[0])
    closed_loop = scene_features(sim.vehicles(), sim.road, np.array([-0.5, 0.002]))
    policy = ScenePolicy(ScenePolicyConfig(feature_names=FEATURE_NAMES))
    policy.set_normalisation(recorded_normalisation(pool))
    seen = scene_drive(policy, pool, torch.tensor([2]), steps=1).features[0, 0].detach().numpy()
    assert np.allclose(seen, closed_loop, atol=1e-4)


def test_a_seconds_long_scene_mpur_run_lowers_the_imagined_objective(recorded, tmp_path):
    out = tmp_path / "run"
    config = TrainPolicyConfig(
        data=str(recorded), fm="nowhere.pt", out=str(out), method="mpur", observation="scene", world="cv",
        world_pool=24, val_windows=12, horizon=10, steps=40, batch_size=8, lr=3e-3, log_every=10, val_every=0,
        rounds=2, round_episodes=2, driven_stride=5, val_episodes=1, episode_workers=1, device="cpu", seed=0,
        progress=False)  # fmt: skip
    summary = train_policy(config)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = lines[0], lines[-1]
    assert first["step"] == 0 and last["step"] == 40 and summary["final"] == last
    # round 1: windows cut from the policy's own drives of 2 train cars joined the 24 recorded ones
    joined = next(line for line in lines if line.get("round") == 1)
    assert joined["step"] == 20 and 0 < joined["driven"] <= 24 and joined["windows"] == 24 + joined["driven"]
    assert last["val_total"] < 0.9 * first["val_total"]  # the imagined objective on val windows it never trained on
    assert "val_success_rate" in last and (out / "checkpoints" / "best.pt").exists()
    driver = ScenePolicyDriver(out / "checkpoints" / "last.pt")  # a checkpoint the closed loop drives
    # a run from that policy starts where it ended
    resumed = TrainPolicyConfig(**(config.to_dict() | {"out": str(tmp_path / "again"), "steps": 1, "costs":
                                                       config.costs, "init_policy": str(out / "checkpoints" / "last.pt")}))  # fmt: skip
    train_policy(resumed)
    again = json.loads((tmp_path / "again" / "metrics.jsonl").read_text().splitlines()[0])
    assert again["val_total"] == pytest.approx(last["val_total"], rel=1e-5)
    assert driver.policy.config.feature_names == FEATURE_NAMES
    with pytest.raises(ValueError, match="forward model predicts views"):
        TrainPolicyConfig(method="mpur", observation="scene", world="model")


def test_a_lane_choice_is_learnt_and_driven(recorded, tmp_path):
    """With ``scene_lane_choice`` the lane head learns what the imagined drives toward each lane cost, and the
    closed loop drives with it: it only ever targets lanes that exist."""
    out = tmp_path / "lanes"
    config = TrainPolicyConfig(
        data=str(recorded), fm="nowhere.pt", out=str(out), method="mpur", observation="scene", world="cv",
        world_pool=24, val_windows=12, horizon=10, steps=60, batch_size=8, lr=3e-3, log_every=10, val_every=0,
        rounds=1, val_episodes=1, episode_workers=1, device="cpu", seed=0, progress=False, scene_lane_choice=True,
        lane_intent=1.0)  # fmt: skip
    train_policy(config)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([line for line in lines if "lane_mse" in line]) == 6 and "val_lane_mse" in lines[0]
    # the action head drives toward the lane it is given: a second after the start, nearer to a neighbour it is
    # given than where it keeps its lane
    policy = ScenePolicy.from_checkpoint(out / "checkpoints" / "last.pt")
    pool = build_pool(recorded, window_moments(recorded, "val", 12, 10, seed=3), 10, "cv")
    nearest, index = start_lanes(pool, torch.arange(12)), {name: i for i, name in enumerate(FEATURE_NAMES)}
    seen = features_at(pool.start, pool.previous_action, [o[0] for o in pool.others], pool.roads, pool.car_size)
    side = torch.where(seen[:, index["left_exists"]] > 0, -1, 1)  # a neighbour that exists (one lane or more)
    assert bool((seen[:, index["left_exists"]] + seen[:, index["right_exists"]] > 0).all())
    with torch.no_grad():
        y = [scene_drive(policy, pool, torch.arange(12), lanes=(torch.tensor(nearest) + offsets).tolist())
             .states[:, -1, 1] for offsets in (side, 0 * side)]  # fmt: skip
    assert ((y[0] - y[1]) * side).mean() > 0.3
    # the lane head regresses what each of those drives costs (here alone, on these windows)
    optimizer = torch.optim.Adam(policy.lane_head.parameters(), lr=3e-3)
    objective, spec = ObjectiveConfig.preset("drive"), ViewSpec()
    errors = []
    for _ in range(80):
        terms = imagined_terms(policy, pool, torch.arange(12), objective, spec, every_lane=True)
        optimizer.zero_grad()
        terms["lane_mse"].backward()
        optimizer.step()
        errors.append(float(terms["lane_mse"].detach()))
    assert errors[-1] < 0.2 * errors[0]
    driver = ScenePolicyDriver(out / "checkpoints" / "last.pt")
    assert driver.policy.lane_head is not None
    # the lane head decides among existing lanes only: make the left lane look free, then take it away
    features = torch.from_numpy(np.stack([scene_features(*recorded_scene(recorded))] * 2))
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    with torch.no_grad():
        driver.policy.lane_head[-1].bias.copy_(torch.tensor([-100.0, 0.0, 0.0]))
        features[:, index["left_exists"]] = torch.tensor([1.0, 0.0])
        assert driver.policy.choose_lanes(features).tolist() == [-1, 0]
    with pytest.raises(ValueError, match="scene-lane-choice"):
        TrainPolicyConfig(method="dagger", observation="scene", world="traffic", traffic="t.pt", scene_lane_choice=True)


def recorded_scene(recorded):
    """The vehicles and road of a recorded car at its hand-over (``scene_features``' first two arguments)."""
    moment = window_moments(recorded, "train", 1, 10, seed=0)[0]
    sim = Recordings(dataset_files(recorded)[1]).handover(moment.vehicle, moment.row)
    return sim.vehicles(), sim.road


def test_the_lag_term_counts_falling_behind_the_recording(recorded):
    """``lag_weight``: a policy braking hard falls behind the recorded car and pays for it; one that does not
    brake pays (almost) nothing; windows at a driver's own states never do."""
    pool = build_pool(recorded, window_moments(recorded, "train", 8, 10, seed=2), 10, "oracle")
    policy = ScenePolicy(ScenePolicyConfig(feature_names=FEATURE_NAMES, action_limits=((-6.0, -0.2), (6.0, 0.2))))
    policy.set_normalisation(recorded_normalisation(pool))
    objective, spec, index = ObjectiveConfig.preset("drive"), ViewSpec(), torch.arange(8)
    with torch.no_grad():
        policy.head[-1].weight.zero_()
        policy.head[-1].bias.copy_(-policy.action_mean / policy.action_std)  # no action
        coasting = imagined_terms(policy, pool, index, objective, spec, lag_weight=1.0)
        policy.head[-1].bias[0] = -100.0  # brake as hard as the limits allow
        braking = imagined_terms(policy, pool, index, objective, spec, lag_weight=1.0)
    assert braking["lag"] > 10 * coasting["lag"] and braking["lag"] > 1e-3
    assert braking["loss"] == pytest.approx(float(braking["total"] + braking["lag"]), rel=1e-5)
    pool.moments = [replace(m, driven=np.zeros((11, 4))) for m in pool.moments]  # as if cut from a drive
    with torch.no_grad():
        assert imagined_terms(policy, pool, index, objective, spec, lag_weight=1.0)["lag"] == 0
