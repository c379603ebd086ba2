"""World providers: the oracle's frames reused across control steps; planners scoring episodes in passes."""

import numpy as np
import torch
from test_planner_driver import drive, write_platoon

from worldmodel.driving.drivers import open_replay_env
from worldmodel.driving.envs import ReplayEnvConfig
from worldmodel.driving.planner_driver import make_planner_driver
from worldmodel.driving.planners import Planner, PlannerConfig
from worldmodel.driving.worlds import RenderedWorld, ReuseTolerance


def reference_from(sim, steps, ahead_m=0.0):
    """Poses ``[1, F, 3]`` along the lane at the car's speed from its current position (+ ``ahead_m``)."""
    x = sim.x + ahead_m + sim.v * sim.dt * np.asarray(steps, dtype=np.float64)
    return np.stack([x, np.full_like(x, sim.y), np.zeros_like(x)], -1)[None]


def test_the_oracle_reuses_frames_near_the_new_reference_and_they_equal_fresh_renders(tmp_path):
    env = open_replay_env(write_platoon(tmp_path / "platoon.h5"), ReplayEnvConfig())
    env.reset(options={"vehicle": 2})
    sim, steps = env.sim, [2, 4, 6, 8]
    world, fresh = RenderedWorld("oracle"), RenderedWorld("oracle", reuse=None)
    world.futures([sim], reference_from(sim, steps), steps)
    assert (world.rendered, world.reused) == (4, 0)
    env.step(np.zeros(2))  # one step on: frames +1, +3, +5, +7 are the last call's +2, +4, +6, +8
    near = world.futures([sim], reference_from(sim, [1, 3, 5, 7], ahead_m=0.4), [1, 3, 5, 7])
    assert (world.rendered, world.reused) == (4, 4)
    again = fresh.futures([sim], near.reference.numpy().astype(np.float64), [1, 3, 5, 7])  # at the poses returned
    torch.testing.assert_close(near.images, again.images)
    world.futures([sim], reference_from(sim, [2, 3], ahead_m=3.0), [2, 3])  # +2 new; +3 kept but 3 m off
    assert (world.rendered, world.reused) == (6, 4)
    assert not ReuseTolerance().close(np.zeros(3), np.array([0.0, 0.0, 0.05]))  # a turned reference


def test_the_oracle_keeps_each_episodes_frames_across_calls_and_drops_them_at_a_new_episode(tmp_path):
    path = write_platoon(tmp_path / "platoon.h5")
    envs = [open_replay_env(path, ReplayEnvConfig()) for _ in range(2)]
    for env, vehicle in zip(envs, (2, 3), strict=True):
        env.reset(options={"vehicle": vehicle})
    world, steps = RenderedWorld("oracle"), [2, 4]
    for env in envs:  # two groups of episodes, asked for one after the other (as a driver does by horizon)
        world.futures([env.sim], reference_from(env.sim, steps), steps)
    assert (world.rendered, world.reused) == (4, 0)
    for env in envs:
        world.futures([env.sim], reference_from(env.sim, steps), steps)
    assert (world.rendered, world.reused) == (4, 4)  # each kept its frames while the other was asked for
    sim, frame, reference = envs[0].sim, envs[0].sim.frame, reference_from(envs[0].sim, steps)
    envs[0].reset(options={"vehicle": 3})  # the same simulation object, another episode
    assert envs[0].sim is sim
    sim.frame = frame  # at the same world frames and poses, but another car's episode: its frames differ
    world.futures([sim], reference, steps)
    assert (world.rendered, world.reused) == (6, 4)


def test_the_cv_world_renders_every_call(tmp_path):
    env = open_replay_env(write_platoon(tmp_path / "platoon.h5"), ReplayEnvConfig())
    env.reset(options={"vehicle": 2})
    world, steps = RenderedWorld("cv"), [2, 4]
    for _ in range(2):
        world.futures([env.sim], reference_from(env.sim, steps), steps)
    assert (world.rendered, world.reused) == (4, 0)


def test_scoring_episodes_in_passes_gives_the_same_plans(tmp_path):
    path = write_platoon(tmp_path / "platoon.h5")
    captured = []

    class Capture(Planner):
        def plan(self, inputs, warm):
            captured.append((inputs, warm.clone()))
            return super().plan(inputs, warm)

    driver = make_planner_driver("grad", world="oracle", horizon=10, slow_horizon=None)
    driver._planners[False] = Capture(driver.planner_config, driver.objective, 0.1, driver.spec)
    drive(path, driver, max_steps=3)
    inputs, warm = captured[-1]
    batch = type(inputs)(*(torch.cat([x] * 3) if torch.is_tensor(x) else x for x in vars(inputs).values()))
    frames = inputs.frames
    batch = type(inputs)(batch.state + torch.tensor([[0.0, 0.0, 0.0, 0.5]]) * torch.arange(3.0)[:, None],
                         type(frames)(torch.cat([frames.images] * 3), torch.cat([frames.reference] * 3)),
                         batch.previous_action, batch.target_speed, batch.car_size, batch.lateral_targets)  # fmt: skip
    plans = {}
    for per_pass in (1, 2, None):
        for method in ("grad", "cem"):
            planner = Planner(
                PlannerConfig(method=method, horizon=10, episodes_per_pass=per_pass), driver.objective, 0.1
            )
            plans[per_pass, method] = planner.plan(batch, torch.cat([warm] * 3))[0]
    for method in ("grad", "cem"):
        torch.testing.assert_close(plans[1, method], plans[None, method])
        torch.testing.assert_close(plans[2, method], plans[None, method])
    assert not torch.equal(plans[None, "grad"][0], plans[None, "grad"][2])  # the episodes differ
