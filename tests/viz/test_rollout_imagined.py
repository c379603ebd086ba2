"""Rollout videos with what the driver intends: its planned path on the top-down view, and the imagined-future
panel (what it imagined k steps ago for now beside what happened), on a 20 s recording of the tiny scenario."""

from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.record import RecordConfig, record
from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving.driver_protocol import OneSlot, driver_intent
from worldmodel.driving.drivers import make_driver, open_replay_env
from worldmodel.driving.envs import ReplayEnvConfig
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.policy import Policy, PolicyConfig
from worldmodel.traffic.raster import COLOURS
from worldmodel.viz.imagined_panel import choose_step
from worldmodel.viz.rollout_video import HEADER_PX, PLOT_PX, render_rollout, rollout_frames, topdown_pixels

PLANNER = {"horizon": 6, "iterations": 2}  # frames at steps 2, 4, 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """20 s of the tiny scenario (after a 20 s warm-up) and its episodes, laid out like datasets/<name>/."""
    folder = tmp_path_factory.mktemp("rollout_imagined")
    record(RecordConfig(scenario="tiny", minutes=20 / 60, warmup_s=20.0, seed=0, progress=False),
           folder / "trajectories-0.h5")  # fmt: skip
    extract([folder / "trajectories-0.h5"], folder / "episodes.h5", ExtractConfig(workers=1, progress=False))
    return folder


@pytest.fixture(scope="module")
def vehicle(dataset) -> int:
    """A car with traffic in its view at the hand-over (so that a misaligned prediction shows)."""
    env = open_replay_env(dataset / "trajectories-0.h5", ReplayEnvConfig(return_context=False))
    for vid in env.sim.eligible_vehicles():
        obs, _ = env.reset(seed=0, options={"vehicle": int(vid)})
        if obs["image"][1].sum() > 50 * 255:
            return int(vid)
    raise AssertionError("no car with traffic in view")


def replay_env(dataset, max_steps=10, **config):
    config = ReplayEnvConfig(return_context=config.pop("return_context", False), max_steps=max_steps, **config)
    return open_replay_env(dataset / "trajectories-0.h5", config, render_mode="rgb_array")


def test_the_planner_exposes_its_plan_through_the_kinematics(dataset, vehicle):
    env = replay_env(dataset)
    driver = make_driver("plan:grad", world="cv", **PLANNER)
    obs, info = env.reset(seed=0, options={"vehicle": vehicle})
    driver.reset(env, obs, info)
    assert driver.intent() is None  # nothing planned yet
    before = np.array([env.sim.x, env.sim.y])
    action = driver.act(obs, info)
    intent = driver_intent(driver)
    assert intent.poses.shape == (6, 3) and intent.world == "cv"
    assert intent.frames.shape == (1, 3, 3, 117, 24) and intent.frame_steps == (2, 4, 6)
    assert intent.frame_poses.shape == (3, 3)
    assert np.linalg.norm(intent.poses[0, :2] - before) <= env.sim.v * env.sim.dt + 0.1  # one step from the car
    env.step(action)
    np.testing.assert_allclose(intent.poses[0, :2], [env.sim.x, env.sim.y], atol=1e-3)  # the step it took
    assert driver_intent(make_driver("bot")) is None and OneSlot(make_driver("bot")).slot_intent(0) is None


def test_topdown_pixels_land_on_the_drawn_car(dataset, vehicle):
    env = replay_env(dataset)
    obs, _ = env.reset(seed=0, options={"vehicle": vehicle})
    for _ in range(5):
        obs, *_ = env.step(np.array([1.0, 0.002]))
    image = env._render_topdown(env.sim.vehicles(), env.sim.kind_names)  # ``render`` without the ghost's outline
    rows, cols = np.nonzero((image == COLOURS["controlled"]).all(-1))
    col, row = topdown_pixels(np.array([env.sim.x]), np.array([env.sim.y]), obs["state"][0])[0]
    assert abs(cols.mean() - col) < 0.5 and abs(rows.mean() - row) < 0.5


def test_the_planned_path_is_drawn_where_the_mapping_puts_it(dataset, vehicle):
    """At the hand-over both drivers see the same state: the frames differ on the path only."""
    env = replay_env(dataset)
    planned = next(rollout_frames(make_driver("plan:grad", world="cv", **PLANNER), env, vehicle, "d", 0))
    start = (env.sim.x, env.sim.y)
    centre = env.sim.vehicles()["x"][0]
    bot = next(rollout_frames(make_driver("bot"), env, vehicle, "d", 0))
    height = env.render().shape[0]
    a, b = (f.image[HEADER_PX : HEADER_PX + height] for f in (planned, bot))
    differ = (a != b).any(-1)
    xy = np.concatenate([[start], planned.intent.poses[:, :2]])
    pts = topdown_pixels(xy[:, 0], xy[:, 1], np.float32(centre))
    near = cv2.polylines(np.zeros(differ.shape, np.uint8), [np.round(pts).astype(np.int32)], False, 1, 9)
    assert differ.sum() > len(pts) and not (differ & (near == 0)).any()  # drawn, and only along the path
    end = np.round(pts[-1]).astype(int)
    assert differ[end[1], end[0]]  # the path reaches the last planned pose


@pytest.mark.parametrize("lr", [0.3, 1e-9])
def test_the_oracle_imagined_k_steps_ago_is_what_happened(dataset, vehicle, lr):
    """The oracle world imagined at t - k for step t is the recorded traffic at t from the same pose; an
    off-by-one in time would differ. A plan that is never changed (lr ~ 0: zero actions) is followed exactly, and
    then the imagined frame is the car's own view at t too (the pose alignment)."""
    driver = make_driver("plan:grad", world="oracle", lr=lr, lane_plans="none", **PLANNER)
    frames = list(rollout_frames(driver, replay_env(dataset), vehicle, "d", 0, imagined_step=4))
    assert frames[0].imagined_step == 4 and len(frames) == 11
    assert all(f.rasters["imagined"] is None for f in frames[:4])
    for f, previous in zip(frames[4:], frames[3:], strict=False):
        imagined = f.rasters["imagined"]
        assert imagined[1].sum() > 50  # traffic in view
        np.testing.assert_allclose(imagined, f.rasters["happened"], atol=1e-6)
        assert previous.rasters["happened"] is None or np.abs(imagined - previous.rasters["happened"]).max() > 0.3
        if lr < 1e-6:
            np.testing.assert_allclose(imagined, f.rasters["car's view"], atol=1.5 / 255)


@pytest.fixture(scope="module")
def models(dataset, tmp_path_factory):
    """An untrained tiny forward model (dropout replicas that disagree) and a policy with uncertainty
    statistics, as checkpoints."""
    folder = tmp_path_factory.mktemp("models")
    stats = WindowDataset(dataset / "episodes.h5", WindowConfig(4, 5)).stats
    torch.manual_seed(0)
    fm = ForwardModel(ForwardModelConfig.tiny("vae", zero_init=False))
    fm.set_normalisation(stats)
    torch.save(fm.checkpoint_dict(0), folder / "fm.pt")
    policy = Policy(PolicyConfig.tiny())
    policy.set_normalisation(stats)
    uncertainty = {"terms": ["images", "states", "cost"], "mean": [[0.0]] * 3, "std": [[1.0]] * 3}
    torch.save(policy.checkpoint_dict(0, uncertainty_stats=uncertainty), folder / "policy.pt")
    return folder / "fm.pt", folder / "policy.pt"


def test_the_model_world_panel_shows_the_mean_and_the_spread_of_its_futures(dataset, vehicle, models):
    driver = make_driver("plan:grad", fm=str(models[0]), world="model", samples=2, replicas=2, **PLANNER)
    env = replay_env(dataset, max_steps=3, return_context=True, view=driver.view)
    frames = list(rollout_frames(driver, env, vehicle, "d", 0, imagined_step=2))
    intent = frames[0].intent
    assert intent.frames.shape[:3] == (4, 3, 3) and intent.world == "model"  # 2 draws x 2 replicas, 3 steps
    shown = frames[2].rasters
    assert list(shown) == ["imagined", "spread", "happened", "car's view"]
    np.testing.assert_allclose(shown["imagined"], intent.frames[:, 0].mean(0), atol=1e-6)  # imagined at 0 for 2
    assert shown["spread"].max() > 0 and 0 <= shown["spread"].min()


def test_a_policy_with_a_model_exposes_its_imagined_rollout(dataset, vehicle, models):
    fm, policy = models
    driver = make_driver(str(policy), fm=str(fm), uncertainty_horizon=3, replicas=2)
    env = replay_env(dataset, return_context=True, view=driver.view)
    obs, info = env.reset(seed=0, options={"vehicle": vehicle})
    driver.reset(env, obs, info)
    action = driver.act(obs, info)
    intent = driver.intent()
    assert (
        intent.poses.shape == (3, 3) and intent.frames.shape == (1, 3, 3, 117, 24) and intent.frame_steps == (1, 2, 3)
    )
    env.step(action)
    np.testing.assert_allclose(intent.poses[0, :2], [env.sim.x, env.sim.y], atol=1e-3)  # its first action is taken
    plain = make_driver(str(policy))  # without a model: nothing imagined
    plain.reset(env, obs, info)
    plain.act(obs, info)
    assert plain.intent() is None


def test_render_rollout_writes_readable_videos_with_and_without_the_panel(dataset, vehicle, tmp_path):
    planned = render_rollout("plan:grad", dataset, vehicle, tmp_path / "plan.gif", max_steps=4, imagined_step=2,
                             driver_options={"world": "cv", **PLANNER})  # fmt: skip
    frames = imageio.mimread(planned["out"])
    assert len(frames) == planned["frames"] == 5 and planned["imagined_step"] == 2
    assert frames[0].shape[:2] == tuple(planned["size"])
    bot = render_rollout("bot", dataset, vehicle, tmp_path / "bot.mp4", max_steps=4)
    assert len(imageio.mimread(bot["out"], memtest=False)) == bot["frames"] == 5 and bot["imagined_step"] is None
    env = replay_env(dataset)
    env.reset(seed=0, options={"vehicle": vehicle})
    assert bot["size"][0] == HEADER_PX + env.render().shape[0] + PLOT_PX  # as before: no intent, no panel
    assert planned["size"][0] > bot["size"][0]
    none = render_rollout("plan:grad", dataset, vehicle, tmp_path / "none.gif", max_steps=1, imagined_step=0,
                          driver_options={"world": "cv", **PLANNER})  # fmt: skip
    assert none["size"] == bot["size"] and none["imagined_step"] is None
    with pytest.raises(ValueError, match=r"imagines steps \[2, 4, 6\]"):
        render_rollout("plan:grad", dataset, vehicle, tmp_path / "bad.gif", max_steps=1, imagined_step=3,
                       driver_options={"world": "cv", **PLANNER})  # fmt: skip


def test_the_default_imagined_step_is_the_nearest_to_one_second():
    assert choose_step((2, 4, 6), None) == 6 and choose_step((2, 4, 8, 12, 20), None) == 8
    assert choose_step(tuple(range(2, 21, 2)), None) == 10 and choose_step((3,), 3) == 3


def test_a_policy_without_uncertainty_statistics_imagines_for_videos_only_when_asked(
    dataset, vehicle, models, tmp_path
):
    fm, policy = models
    ckpt = torch.load(policy, weights_only=True)
    ckpt.pop("uncertainty_stats", None)  # as the decoupled MPUR's checkpoints
    bare = tmp_path / "bare.pt"
    torch.save(ckpt, bare)
    env = replay_env(dataset, return_context=True)
    obs, info = env.reset(seed=0, options={"vehicle": vehicle})
    for imagine, expected in ((False, None), (True, (3, 3))):
        driver = make_driver(str(bare), fm=str(fm), uncertainty_horizon=3, replicas=2, imagine=imagine)
        driver.reset(env, obs, info)
        driver.act(obs, info)
        intent = driver.intent()
        assert (intent is None) if expected is None else (intent.poses.shape == expected)
        assert "uncertainty" not in driver.diagnostics()
