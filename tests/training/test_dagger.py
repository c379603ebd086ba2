"""DAgger (``train policy --method dagger``): the labelling driver keeps what the policy would have seen and the
teacher's answer at every step, executes the student's action unless told otherwise; the regression learns the
teacher's actions; a micro run goes through its rounds, the policy driving from round 1."""

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from evaluation import driving_helpers  # tests/evaluation/driving_helpers.py

from worldmodel.data.demos import read_demos, write_demos
from worldmodel.data.hdf5 import DataError
from worldmodel.driving.closed_loop import EvalPolicyConfig
from worldmodel.driving.episode_selection import select_episodes
from worldmodel.driving.episode_workers import run_episodes
from worldmodel.driving.labelling import LabellingDriver
from worldmodel.driving.model_drivers import PolicyDriver, make_model_driver
from worldmodel.driving.scene import FEATURE_NAMES
from worldmodel.driving.scene_driver import ScenePolicyDriver
from worldmodel.nn.policy import Policy, PolicyConfig
from worldmodel.training.dagger import DemoWindows, heldout_error, regression_updates, scene_normalisation
from worldmodel.training.policy import TrainPolicyConfig, train_policy


class Constant:
    """A lockstep driver acting ``action`` everywhere, keeping the views it was shown."""

    max_slots, view = None, None

    def __init__(self, action, name) -> None:
        self.action, self.name, self.seen = np.asarray(action, dtype=np.float64), name, []

    def reset_slot(self, slot, env, obs, info) -> None:
        pass

    def act_slots(self, slots, observations, infos):
        self.seen += [obs["image"][:3].copy() for obs in observations]
        return np.tile(self.action, (len(slots), 1))

    def slot_diagnostics(self, slot):
        return {}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return driving_helpers.make_driving_dataset(tmp_path_factory.mktemp("dagger") / "micro", seconds=20.0, seeds=(0,))


def drive(recorded, driver, episodes=2):
    config = EvalPolicyConfig(data=str(recorded), split="train", episodes=episodes, seed=0, workers=1, out=None,
                              progress=False, batch=4)  # fmt: skip
    files, chosen, _ = select_episodes(recorded, "train", config.context_frames, episodes, 0)
    return run_episodes(config, files, chosen, driver)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_the_labelling_driver_keeps_views_and_the_teachers_labels(recorded, beta):
    teacher, student = Constant([0.5, 0.0], "teacher"), Constant([-1.5, 0.0], "student")
    records = drive(recorded, LabellingDriver(teacher, student, beta=beta, context_frames=4))
    assert len(records) == 2
    for record in records:
        demo = record["collected"]
        steps = record["steps"]
        assert demo["labels"].shape == (steps, 2) and np.all(demo["labels"] == [0.5, 0.0])
        assert demo["images"].shape[0] == 3 + steps and demo["states"].shape == (3 + steps, 4)
        assert int(demo["executed_by_teacher"]) == (steps if beta == 1.0 else 0)
    # the view each label answered is the one the teacher was shown at that step (episodes in lockstep: sorted)
    shown = {im.tobytes() for im in teacher.seen}
    kept = {im.tobytes() for r in records for im in r["collected"]["images"][3:]}
    assert kept == shown
    # the executed actions: the student's brake (-1.5) ends slower than the teacher's push (+0.5)
    speeds = [r["speed_mps"] for r in records]
    assert (np.mean(speeds) < 12.0) if beta == 0.0 else (np.mean(speeds) > 1.0)


def test_demo_windows_are_what_the_policy_sees(recorded):
    records = drive(recorded, LabellingDriver(Constant([0.5, 0.01], "teacher"), context_frames=4), episodes=1)
    demo = records[0]["collected"]
    policy = Policy(PolicyConfig.tiny())
    policy.set_normalisation({"state_mean": torch.zeros(4), "state_std": torch.full((4,), 2.0),
                              "action_mean": torch.zeros(2), "action_std": torch.ones(2)})  # fmt: skip
    windows = DemoWindows([demo], policy)
    assert len(windows) == records[0]["steps"]
    item = windows[5]
    torch.testing.assert_close(item["images"][-1], torch.from_numpy(demo["images"][3 + 5]).float() / 255)
    torch.testing.assert_close(item["images"][0], torch.from_numpy(demo["images"][5]).float() / 255)
    assert torch.all(item["states"][-1, :2] == 0)  # positions relative to the newest frame
    low, high = policy.action_bounds()
    torch.testing.assert_close(item["target"][0], torch.tensor([0.5, 0.01]).clamp(low, high))


def test_the_regression_learns_the_teachers_action():
    """Labels that depend on the view (brake when the vehicles channel has a car ahead, else accelerate)."""
    torch.manual_seed(0)
    policy = Policy(PolicyConfig.tiny())
    policy.set_normalisation({"state_mean": torch.zeros(4), "state_std": torch.ones(4), "action_mean": torch.zeros(2),
                              "action_std": torch.ones(2)})  # fmt: skip
    demos = []
    for k in range(8):
        images = np.zeros((3 + 20, 3, 117, 24), dtype=np.uint8)
        blocked = k % 2 == 0
        if blocked:
            images[:, 1, 30:40, 9:15] = 255  # a car 15 m ahead
        demos.append({"images": images, "states": np.zeros((23, 4), np.float32), "context": np.int64(3),
                      "labels": np.tile([-2.0 if blocked else 1.0, 0.0], (20, 1)).astype(np.float32),
                      "ego_mask": np.zeros((117, 24), np.uint8), "car_size": np.array([4.5, 1.8], np.float32),
                      "executed_by_teacher": np.int64(20)})  # fmt: skip
    windows = DemoWindows(demos[:6], policy)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    losses = regression_updates(policy, optimizer, windows, 60, 16, 50.0, torch.Generator().manual_seed(0), "cpu")
    assert np.mean(losses[-10:]) < 0.05 * np.mean(losses[:5])
    held = heldout_error(policy, DemoWindows(demos[6:], policy), torch.device("cpu"))  # one blocked, one free drive
    assert held["heldout_var"][0] == pytest.approx(2.25 * 40 / 39, rel=1e-4)  # labels -2 and 1, 20 steps each
    assert held["heldout_mse"][0] < 0.05 * held["heldout_var"][0]
    policy.eval()
    with torch.no_grad():
        batch = torch.utils.data.default_collate([windows[0], windows[20]])  # blocked, free
        out = policy(policy.init_cache(batch["images"], batch["states"], batch["ego_mask"]))["action"]
    assert out[0, 0] < -1.0 and out[1, 0] > 0.5


def test_a_micro_dagger_run_and_its_resumption(recorded, micro_run, tmp_path):
    out = tmp_path / "dagger"
    config = TrainPolicyConfig(
        data=str(recorded), fm=str(micro_run / "checkpoints" / "last.pt"), out=str(out), method="dagger", world="cv",
        rounds=1, round_episodes=2, steps=2, batch_size=8, sequence_steps=1, val_episodes=2, episode_workers=1,
        device="cpu",
        progress=False)  # fmt: skip
    train_policy(config)
    first = out / "demos" / "round-0.h5"
    written = first.stat().st_mtime_ns
    summary = train_policy(replace(config, rounds=2, steps=4))  # resumes: round 0 is read, not driven again
    assert first.stat().st_mtime_ns == written
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1] and summary["rounds"] == lines
    assert lines[0]["teacher_share"] == 1.0 and lines[1]["beta"] == 0.5
    assert 0.0 < lines[1]["teacher_share"] < 1.0  # the policy drove some of round 1's steps
    assert lines[1]["windows"] == lines[0]["steps"] + lines[1]["steps"] and lines[1]["updates"] == 4
    assert "val_success_rate" in lines[1]
    assert sum(len(d["labels"]) for d in read_demos(out / "demos" / "round-1.h5")) == lines[1]["steps"]
    for name in ("last.pt", "best.pt"):
        driver = PolicyDriver(out / "checkpoints" / name)
        assert driver.policy.config.action_limits is not None


def test_dagger_keeps_drives_out_of_the_regression_and_scores_them(recorded, micro_run, tmp_path):
    out = tmp_path / "dagger"
    config = TrainPolicyConfig(
        data=str(recorded), fm=str(micro_run / "checkpoints" / "last.pt"), out=str(out), method="dagger", world="cv",
        rounds=1, round_episodes=2, steps=2, batch_size=8, sequence_steps=1, val_episodes=0, episode_workers=1,
        holdout=0.5, device="cpu", progress=False)  # fmt: skip
    line = train_policy(config)["rounds"][0]
    kept = read_demos(out / "demos" / "round-0.h5")[1]  # the round's last drive is held out
    assert line["heldout_drives"] == 1 and line["windows"] == line["steps"] - len(kept["labels"])
    assert all(np.isfinite(line["heldout_mse"])) and all(v >= 0 for v in line["heldout_var"])
    with pytest.raises(ValueError, match="holdout"):
        replace(config, holdout=1.0)


def test_demos_files_round_trip_and_refuse_damage(recorded, tmp_path):
    demos = [
        r["collected"] for r in drive(recorded, LabellingDriver(Constant([0.5, 0.0], "teacher"), context_frames=4))
    ]
    path = write_demos(tmp_path / "round-0.h5", demos)
    back = read_demos(path)
    assert len(back) == len(demos)
    for a, b in zip(demos, back, strict=True):
        for name in ("images", "states", "labels", "ego_mask", "car_size", "features"):
            np.testing.assert_array_equal(a[name], b[name])
        assert int(a["context"]) == int(b["context"])
    with h5py.File(path, "a") as f:
        f["label_offsets"][-1] += 1
    with pytest.raises(DataError, match="offsets"):
        read_demos(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="junk.h5"):
        read_demos(tmp_path / "junk.h5")


def test_a_sequence_gives_each_windows_own_action():
    """``Policy.forward_sequence`` (each frame encoded once) equals the policy on each window alone, and
    ``DemoWindows`` with steps = 4 holds the frames and targets of 4 consecutive one-step items."""
    torch.manual_seed(0)
    policy = Policy(PolicyConfig.tiny()).eval()
    policy.set_normalisation({"state_mean": torch.zeros(4), "state_std": torch.full((4,), 3.0),
                              "action_mean": torch.zeros(2), "action_std": torch.ones(2)})  # fmt: skip
    images, states, mask = torch.rand(2, 9, 3, 117, 24), torch.randn(2, 9, 4), torch.rand(2, 117, 24)
    with torch.no_grad():
        whole = policy.forward_sequence(images, states, mask)["mean"]  # [2, 6, 2]: windows ending at frames 3..8
        one_by_one = torch.stack([policy(policy.init_cache(images[:, t : t + 4], states[:, t : t + 4], mask))["mean"]
                                  for t in range(6)], dim=1)  # fmt: skip
    assert whole.shape == (2, 6, 2)
    torch.testing.assert_close(whole, one_by_one, atol=1e-5, rtol=1e-5)
    demo = {"images": np.random.default_rng(0).integers(0, 255, (3 + 10, 3, 117, 24), dtype=np.uint8),
            "states": np.random.default_rng(1).normal(size=(13, 4)).astype(np.float32), "context": np.int64(3),
            "labels": np.random.default_rng(2).normal(size=(10, 2)).astype(np.float32) * 0.1,
            "ego_mask": np.zeros((117, 24), np.uint8), "car_size": np.array([4.5, 1.8], np.float32),
            "executed_by_teacher": np.int64(10)}  # fmt: skip
    singles, runs = DemoWindows([demo], policy), DemoWindows([demo], policy, steps=4)
    assert len(singles) == 10 and len(runs) == 7
    run = runs[2]
    torch.testing.assert_close(run["target"], torch.stack([singles[t]["target"][0] for t in range(2, 6)]))
    torch.testing.assert_close(run["images"][-4:-3], singles[2]["images"][-1:])
    torch.testing.assert_close(run["images"][-1], singles[5]["images"][-1])


def test_a_micro_dagger_run_of_a_scene_policy(recorded, tmp_path):
    """``--observation scene``: the demos keep the scene's features at every labelled step, the policy's
    statistics come from round 0's drives, round 1 is driven by the scene policy, no forward model is read."""
    out = tmp_path / "scene"
    config = TrainPolicyConfig(
        data=str(recorded), fm="nowhere.pt", out=str(out), method="dagger", world="cv", observation="scene",
        rounds=2, round_episodes=2, steps=40, batch_size=32, lr=3e-3, sequence_steps=1, val_episodes=1,
        episode_workers=1, holdout=0.5, device="cpu", progress=False)  # fmt: skip
    lines = train_policy(config)["rounds"]
    demos = read_demos(out / "demos" / "round-0.h5")
    assert all(d["features"].shape == (len(d["labels"]), len(FEATURE_NAMES)) for d in demos)
    speed = demos[0]["features"][:, FEATURE_NAMES.index("speed")]
    assert np.all(np.abs(np.diff(speed)) < 1.0) and speed.std() > 0  # the ego's speed, step by step
    assert lines[1]["teacher_share"] < 1.0 and "val_success_rate" in lines[1]
    assert lines[1]["loss"] < lines[0]["loss_first"]
    driver = make_model_driver(str(out / "checkpoints" / "last.pt"))
    assert isinstance(driver, ScenePolicyDriver)
    stats = scene_normalisation(demos[:1])  # the first round's kept drive
    assert np.allclose(driver.policy.state_mean.numpy(), stats["state_mean"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="observation"):
        replace(config, method="il")
