"""Model-based drivers (a policy checkpoint, the planners) in the closed-loop harness, and the trainer's
closed-loop validation."""

import numpy as np
import pytest
import torch

from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving.closed_loop import EvalPolicyConfig, evaluate_driving
from worldmodel.driving.drivers import make_driver, open_replay_env
from worldmodel.driving.envs import ACTION_HIGH, ACTION_LOW
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.policy import Policy, PolicyConfig
from worldmodel.training.policy import TrainPolicyConfig, train_policy


@pytest.fixture(scope="module")
def models(driving_data, tmp_path_factory):
    """An (untrained) tiny forward model and policy with the dataset's statistics, as checkpoints."""
    folder = tmp_path_factory.mktemp("models")
    stats = WindowDataset(driving_data / "episodes.h5", WindowConfig(4, 5)).stats
    torch.manual_seed(0)
    fm = ForwardModel(ForwardModelConfig.tiny("vae"))
    fm.set_normalisation(stats)
    torch.save(fm.checkpoint_dict(0), folder / "fm.pt")
    policy = Policy(PolicyConfig.tiny())
    policy.set_normalisation(stats)
    torch.save(policy.checkpoint_dict(0, uncertainty_stats=None), folder / "policy.pt")
    return folder / "fm.pt", folder / "policy.pt"


def drive(driving_data, driver, **kw):
    config = EvalPolicyConfig(driver=str(driver), data=str(driving_data), split="train", out=None, progress=False, **kw)
    return evaluate_driving(config)


def test_policy_checkpoint_drives_deterministically(driving_data, models):
    _, policy = models
    a = drive(driving_data, policy, episodes=3, max_steps=30)
    b = drive(driving_data, policy, episodes=3, max_steps=30)
    assert a["episodes"] == 3 and 0.0 <= a["success_rate"] <= 1.0
    assert [e["distance_m"] for e in a["per_episode"]] == [e["distance_m"] for e in b["per_episode"]]


def test_lockstep_batches_drive_as_one_episode_at_a_time(driving_data, models):
    _, policy = models
    alone = drive(driving_data, policy, episodes=6, max_steps=40, batch=1)
    together = drive(driving_data, policy, episodes=6, max_steps=40, batch=4)  # slots refill mid-group
    two_workers = drive(driving_data, policy, episodes=6, max_steps=40, batch=2, workers=2)  # 2 groups of 4 and 2
    one_worker = drive(driving_data, policy, episodes=6, max_steps=40, batch=2, workers=1)
    for a, b in zip(alone["per_episode"], together["per_episode"], strict=True):
        assert (a["vehicle"], a["event"], a["steps"]) == (b["vehicle"], b["event"], b["steps"])
        assert a["distance_m"] == pytest.approx(b["distance_m"], abs=1e-3)  # batched arithmetic only
    assert two_workers["per_episode"] == one_worker["per_episode"]


def test_policy_driver_slots_are_independent(driving_data, models):
    """Two slots driving two cars act as two separate drivers do."""
    _, policy = models
    files = sorted(driving_data.glob("trajectories-*.h5"))
    first = open_replay_env(files[0])
    envs = [first, open_replay_env(files[0], recording=first.sim)]  # the second shares the loaded recording
    assert envs[1].sim._tracks is first.sim._tracks
    vehicles = first.sim.eligible_vehicles()[:2]
    starts = [env.reset(seed=0, options={"vehicle": int(v)}) for env, v in zip(envs, vehicles, strict=True)]
    lockstep = make_driver(str(policy))
    for slot, (env, (obs, info)) in enumerate(zip(envs, starts, strict=True)):
        torch.manual_seed(slot)
        lockstep.reset_slot(slot, env, obs, info)
    both = lockstep.act_slots([0, 1], [s[0] for s in starts], [s[1] for s in starts])
    for slot, (env, (obs, info)) in enumerate(zip(envs, starts, strict=True)):
        single = make_driver(str(policy))
        torch.manual_seed(slot)
        single.reset(env, obs, info)
        np.testing.assert_allclose(both[slot], single.act(obs, info), atol=1e-5)
    assert not np.allclose(both[0], both[1])  # two different cars, two different actions
    assert envs[0].sim.ego_id != envs[1].sim.ego_id  # one episode per simulation


@pytest.mark.parametrize("planner", ["plan:grad", "plan:cem"])
def test_planner_drivers_in_the_model_world_act_within_bounds(driving_data, models, planner):
    fm, _ = models
    options = {"horizon": 4, "iterations": 2, "world": "model", "samples": 2, "replicas": 2}
    if planner == "plan:cem":
        options |= {"population": 4, "elites": 2}
    driver = make_driver(planner, fm=str(fm), **options)
    env = open_replay_env(sorted(driving_data.glob("trajectories-*.h5"))[0])
    obs, info = env.reset(seed=0)
    driver.reset(env, obs, info)
    for _ in range(3):
        action = driver.act(obs, info)
        assert action.shape == (2,) and np.isfinite(action).all()
        assert (ACTION_LOW - 1e-6 <= action).all() and (action <= ACTION_HIGH + 1e-6).all()
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    frames = driver.world.futures([env.sim], np.zeros((1, 2, 3)), [2, 4], torch.zeros(1, 4, 2),
                                  [driver._slots[0].window])  # fmt: skip
    assert frames.images.shape == (1, 4, 2, 3, 117, 24) and frames.replicas == 2  # 2 draws x 2 dropout replicas
    assert 0 <= frames.images.min() and frames.images.max() <= 1
    assert "planned_cost" in driver.diagnostics()
    with pytest.raises(ValueError, match="unknown option"):
        make_driver(planner, fm=str(fm), nonsense=1)
    with pytest.raises(ValueError, match="needs a forward model"):
        make_driver(planner, world="model")


def test_policy_driver_reports_uncertainty_with_a_model(driving_data, models, tmp_path):
    fm, policy = models
    ckpt = torch.load(policy, weights_only=True)
    ckpt["uncertainty_stats"] = {"terms": ["images", "states", "cost"], "mean": [[0.0]] * 3, "std": [[1e-9]] * 3}
    torch.save(ckpt, tmp_path / "p.pt")
    driver = make_driver(str(tmp_path / "p.pt"), fm=str(fm), uncertainty_horizon=2, replicas=3)
    env = open_replay_env(sorted(driving_data.glob("trajectories-*.h5"))[0])
    obs, info = env.reset(seed=1)
    driver.reset(env, obs, info)
    driver.act(obs, info)
    assert driver.diagnostics()["uncertainty"] >= 0.0


def test_training_validates_in_closed_loop_and_keeps_the_best(driving_data, models, tmp_path):
    fm, _ = models
    summary = train_policy(TrainPolicyConfig(
        data=str(driving_data), fm=str(fm), out=str(tmp_path / "run"), method="il", horizon=3, steps=2,
        batch_size=4, val_every=2, val_episodes=2, ckpt_every=2, log_every=1, workers=0, device="cpu",
        progress=False,
    ))  # fmt: skip
    assert {"success_rate", "mean_distance_m", "collision_rate"} <= set(summary["val"])
    assert summary["best_checkpoint"] is not None


def test_the_uncertainty_cost_is_calibrated_on_training_windows_and_moves_with_the_ego(driving_data, models,
                                                                                       tmp_path):  # fmt: skip
    from worldmodel.driving.planners import PlanInputs
    from worldmodel.driving.uncertainty import calibrate

    options = {"world": "model", "horizon": 4, "iterations": 2, "replicas": 3, "uncertainty": 1.0,
               "uncertainty_hinge": -100.0, "calibration_windows": 8}  # fmt: skip
    with pytest.raises(ValueError, match="no training data recorded"):
        make_driver("plan:grad", fm=str(models[0]), **options)
    torch.manual_seed(0)  # a model whose dropout replicas disagree (not zero-initialised), trained on driving_data
    fm = ForwardModel(ForwardModelConfig.tiny("vae", zero_init=False))
    fm.set_normalisation(WindowDataset(driving_data / "episodes.h5", WindowConfig(4, 5)).stats)
    torch.save(fm.checkpoint_dict(0, train_config={"data": str(driving_data / "episodes.h5")}), tmp_path / "fm.pt")
    driver = make_driver("plan:grad", fm=str(tmp_path / "fm.pt"), **options)
    env = open_replay_env(sorted(driving_data.glob("trajectories-*.h5"))[0])
    obs, info = env.reset(seed=0)
    driver.reset(env, obs, info)
    driver.act(obs, info)
    stats = driver.world.uncertainty
    assert stats.windows == 8 and stats.std > 0 and stats.mean > 0  # untrained dropout replicas disagree
    assert driver.diagnostics()["term_uncertainty"] > 0  # hinge -100: never clipped here
    before = torch.get_rng_state()
    again = calibrate(driver.world, str(driving_data / "episodes.h5"), 8, [2, 4], 4)
    assert again == stats and torch.equal(torch.get_rng_state(), before)  # seeded, and the caller's RNG kept
    # the cost is read at the ego's pose: two plans over the same futures disagree differently
    sim = env.sim
    state = torch.tensor([[sim.x, sim.y, sim.psi, sim.v]], dtype=torch.float32)
    plans = torch.tensor([[[0.0, 0.0]] * 4, [[3.0, 0.1]] * 4])[None]  # [1, 2, 4, 2]: keep on / speed up and turn
    planner = driver._get_planner(float(sim.dt))
    frames = driver.world.futures([sim], planner.reference(state, plans[:, 0]).numpy(), planner.frame_steps,
                                  plans[:, 0], [driver._slots[0].window])  # fmt: skip
    inputs = PlanInputs(state, frames, torch.zeros(1, 2), torch.tensor([10.0]), torch.tensor([[4.5, 1.8]]))
    _, terms = planner.cost(inputs, plans)
    assert terms["uncertainty"].shape == (1, 2) and terms["uncertainty"][0, 0] != terms["uncertainty"][0, 1]
