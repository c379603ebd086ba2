import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import worldmodel.envs  # noqa: F401  (registers the environments)
from worldmodel.envs import TrafficEnv, TrafficEnvConfig

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
