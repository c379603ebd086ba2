import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import worldmodel.driving.envs  # noqa: F401  (registers the environments)
from worldmodel.data.trajectories import TrajectoryReader
from worldmodel.driving.envs import ReplayEnv, ReplayEnvConfig, TrafficEnv, TrafficEnvConfig

CONFIG = TrafficEnvConfig(scenario="tiny", warmup_s=20.0, max_steps=200)


def test_passes_the_gymnasium_env_checker():
    check_env(TrafficEnv(config=CONFIG), skip_render_check=False)


def test_make_reset_step_and_spaces():
    env = gym.make("worldmodel/Traffic-v0", config=CONFIG, render_mode="rgb_array")
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert obs["image"].shape == (4, 117, 24) and obs["image"][3].max() == 255  # the ego mask
    assert set(info["costs"]) == {"proximity", "lane", "offroad"}
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    expected = -(info["costs"]["proximity"] + 0.2 * info["costs"]["lane"] + info["costs"]["offroad"])
    assert reward == pytest.approx(expected)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8


def test_reset_with_a_seed_is_deterministic():
    env = TrafficEnv(config=CONFIG)
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["state"], b["state"])


def test_steering_off_the_road_terminates():
    env = TrafficEnv(config=CONFIG)
    env.reset(seed=0)
    event = None
    for _ in range(200):
        _, _, terminated, truncated, info = env.step(np.array([0.5, -0.2]))  # hard left
        if terminated or truncated:
            event = info["event"]
            break
    assert event in ("offroad", "collision")


def test_no_action_eventually_ends_with_an_event():
    env = TrafficEnv(config=CONFIG)
    env.reset(seed=2)
    for _ in range(200):
        _, _, terminated, truncated, info = env.step(np.zeros(2))
        if terminated or truncated:
            break
    assert info["event"] in ("collision", "offroad", "arrived", "timeout")
    assert info["distance_m"] > 0


def test_works_in_a_vector_env():
    envs = gym.vector.SyncVectorEnv([lambda: TrafficEnv(config=CONFIG) for _ in range(2)])
    obs, _ = envs.reset(seed=[0, 1])
    assert obs["image"].shape == (2, 4, 117, 24)
    obs, rewards, term, trunc, _ = envs.step(np.zeros((2, 2), dtype=np.float32))
    assert rewards.shape == (2,)
    envs.close()


# ------------------------------------------------------------------------------------------ replay
# recordings: tests/conftest.py (tiny_recording: 25 s of the tiny scenario with exact actions; following_pair:
# 1 lane, car 2 follows car 1 at 3.5 m, both at 10 m/s)
def test_replay_env_passes_the_gymnasium_env_checker(tiny_recording):
    check_env(ReplayEnv(tiny_recording, render_mode="rgb_array"), skip_render_check=False)


def test_replay_env_make_reset_step_render(tiny_recording):
    env = gym.make("worldmodel/Replay-v0", trajectories=tiny_recording, render_mode="rgb_array")
    vid = int(env.unwrapped.sim.eligible_vehicles()[5])
    obs, info = env.reset(seed=0, options={"vehicle": vid})
    assert env.observation_space.contains(obs) and obs["image"][3].max() == 255
    assert info["vehicle"] == vid and info["event"] is None and info["distance_m"] > 0
    assert len(info["context"]) == 20 and np.array_equal(info["context"][-1]["image"], obs["image"])
    assert info["ghost"]["x"] == pytest.approx(float(obs["state"][0]), abs=1e-4)
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    expected = -(info["costs"]["proximity"] + 0.2 * info["costs"]["lane"] + info["costs"]["offroad"])
    assert reward == pytest.approx(expected)
    assert {"costs", "event", "ghost", "distance_m", "speed_mps", "time_s"} <= set(info)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    env.close()


def test_replay_env_reset_with_a_vehicle_is_deterministic(tiny_recording):
    env = ReplayEnv(tiny_recording, ReplayEnvConfig(return_context=False))
    vid = int(env.sim.eligible_vehicles()[7])
    runs = []
    for seed in (1, 2):
        obs, info = env.reset(seed=seed, options={"vehicle": vid})
        assert "context" not in info
        for _ in range(5):
            obs, *_ = env.step(np.array([1.0, 0.01], dtype=np.float32))
        runs.append(obs)
    assert np.array_equal(runs[0]["image"], runs[1]["image"]) and np.array_equal(runs[0]["state"], runs[1]["state"])
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    assert np.array_equal(a["state"], b["state"])


def test_replay_env_expert_actions_arrive_on_the_recorded_path(tiny_recording):
    reader = TrajectoryReader(tiny_recording)
    env = ReplayEnv(tiny_recording, ReplayEnvConfig(return_context=False))
    vid = int(env.sim.eligible_vehicles()[0])
    track = reader.track(vid)
    obs, info = env.reset(options={"vehicle": vid})
    terminated = truncated = False
    while not (terminated or truncated):
        k = env.sim.frame - int(track["frame"][0])
        obs, _, terminated, truncated, info = env.step(np.array([track["accel"][k], track["curvature"][k]]))
        if info["ghost"] is not None:
            assert np.hypot(obs["state"][0] - info["ghost"]["x"], obs["state"][1] - info["ghost"]["y"]) <= 0.01
    assert truncated and not terminated and info["event"] in ("arrived", "end_of_data")


@pytest.mark.parametrize(
    ("vehicle", "action", "event"),
    [(1, (-6.2, 0.0), "collision_behind"), (2, (6.2, 0.0), "collision_ahead"), (1, (0.0, -0.2), "offroad")],
)
def test_replay_env_terminates_on_collisions_and_leaving_the_road(following_pair, vehicle, action, event):
    env = ReplayEnv(following_pair)
    env.reset(options={"vehicle": vehicle})
    for _ in range(60):
        _, _, terminated, truncated, info = env.step(np.array(action, dtype=np.float32))
        if terminated or truncated:
            break
    assert terminated and not truncated and info["event"] == event


def test_replay_env_truncates_at_the_end_of_data_and_on_timeout(following_pair):
    env = ReplayEnv(following_pair, ReplayEnvConfig(max_steps=7))
    env.reset(options={"vehicle": 1})
    for _ in range(7):
        _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    assert truncated and not terminated and info["event"] == "timeout"
    env = ReplayEnv(following_pair)
    env.reset(options={"vehicle": 1})
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    assert truncated and info["event"] == "end_of_data" and info["time_s"] == pytest.approx(13.0)
