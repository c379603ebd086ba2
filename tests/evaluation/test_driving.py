"""Closed-loop evaluation in Replay-v0: the harness, the simple drivers, rollout videos, the CLI."""

import csv
import json
import math
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from driving_helpers import write_braking_leader

from worldmodel.cli import main
from worldmodel.data.extract import ExtractConfig
from worldmodel.data.hdf5 import DataError
from worldmodel.data.trajectories import TrajectoryWriter
from worldmodel.driving.closed_loop import (
    EVENTS,
    Episode,
    EpisodeRunner,
    EvalPolicyConfig,
    bench_eval_episodes,
    evaluate_driving,
    select_episodes,
    summarise,
    wilson_interval,
)
from worldmodel.driving.drivers import make_driver, open_replay_env
from worldmodel.driving.envs import ACTION_LOW, ReplayEnvConfig
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RoadConfig
from worldmodel.viz.rollout_video import compose_frame, render_rollout


def run(data, driver="no-action", **kw):
    return evaluate_driving(EvalPolicyConfig(driver=driver, data=str(data), **({"out": None, "progress": False} | kw)))


@pytest.fixture(scope="module")
def no_action_train(driving_data):
    return run(driving_data, split="train", episodes=16)


def test_episodes_of_a_split_follow_the_extraction_ids(driving_data):
    files, chosen, selection = select_episodes(driving_data, "train")
    assert [f.name for f in files] == ["trajectories-0.h5", "trajectories-1.h5"]
    stride = ExtractConfig().id_stride
    assert {e.file for e in chosen} == {0, 1}  # both recordings
    assert all(e.vehicle == e.file * stride + e.recorded_id for e in chosen)
    assert [e.vehicle for e in chosen] == sorted(e.vehicle for e in chosen)
    assert selection["split_cars"] == sum(selection["excluded"].values()) + selection["eligible"]
    assert selection["excluded"]["recording_ends_before_zone_end"] > 0 and selection["evaluated"] >= 20
    _, subset, sub_selection = select_episodes(driving_data, "train", episodes=5, seed=3)
    assert len(subset) == 5 and set(subset) <= set(chosen) and sub_selection["evaluated"] == 5
    assert select_episodes(driving_data, "train", episodes=5, seed=3)[1] == subset  # deterministic
    named = (chosen[-1].vehicle, chosen[0].vehicle)
    _, picked, picked_selection = select_episodes(driving_data, "train", vehicles=named)
    assert picked == [chosen[0], chosen[-1]] and picked_selection["evaluated"] == 2
    with pytest.raises(ValueError, match=r"vehicles \[-5\] are not eligible cars of the train split"):
        select_episodes(driving_data, "train", vehicles=(chosen[0].vehicle, -5))


def test_expert_arrives_without_collisions(driving_data):
    result = run(driving_data, "expert", split="train", episodes=20)
    assert result["episodes"] == 20
    assert result["success_rate"] >= 0.95, result["events"]
    assert result["collision_rate"] == 0 and result["offroad_rate"] == 0
    assert result["mean_distance_m"] > 60  # from the start of the recording to the end of the evaluated zone
    for r in result["per_episode"]:  # the expert drives its recording: level with it at the end
        assert abs(r["lag_m"]) < 0.05 and abs(r["lateral_offset_m"]) < 0.05, r
        assert r["speed_mps"] == pytest.approx(r["recorded_speed_mps"], abs=0.05)


def test_no_action_ends_behind_its_recording(driving_data):
    result = run(driving_data, "no-action", split="train", episodes=10)
    rear_ended = [r for r in result["per_episode"] if r["event"] == "collision_behind" and r["lag_m"] is not None]
    assert rear_ended and all(r["lag_m"] > 0 for r in rear_ended)  # it fell behind its recording, then was hit
    assert all(r["speed_mps"] < r["recorded_speed_mps"] for r in rear_ended if not r["rear_ended_not_at_fault"])


def test_no_action_writes_json_and_csv_and_does_not_depend_on_workers(driving_data, tmp_path):
    out = tmp_path / "eval" / "no-action.json"
    one = run(driving_data, split="test", out=str(out), workers=1)
    saved = json.loads(out.read_text())
    assert saved["per_episode"] == one["per_episode"] and saved["protocol"]["driver"] == "no-action"
    assert saved["protocol"]["split"] == "test" and saved["protocol"]["context_frames"] == 20
    n = one["episodes"]
    assert n == one["selection"]["evaluated"] >= 3
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(rows) == n and [int(r["vehicle"]) for r in rows] == [r["vehicle"] for r in one["per_episode"]]
    for key in ("success_rate", "collision_rate", "collision_ahead_rate", "collision_behind_rate", "offroad_rate"):
        assert 0.0 <= one[key] <= 1.0
    lo, hi = one["success_rate_ci95"]
    assert 0.0 <= lo <= one["success_rate"] <= hi <= 1.0
    assert sum(one["events"].values()) == n
    assert one["collision_rate"] == pytest.approx(one["collision_ahead_rate"] + one["collision_behind_rate"])
    for record in one["per_episode"]:
        assert record["success"] == (record["event"] == "arrived") and record["steps"] >= 1
        assert 0.0 <= record["cost_proximity"] <= 1.0 and record["time_s"] == pytest.approx(0.1 * record["steps"])
    two = run(driving_data, split="test", workers=2)
    assert two["per_episode"] == one["per_episode"]


def test_bot_drives_better_than_no_action(driving_data, no_action_train):
    bot = run(driving_data, "bot", split="train", episodes=16)
    assert [r["vehicle"] for r in bot["per_episode"]] == [r["vehicle"] for r in no_action_train["per_episode"]]
    assert bot["offroad_rate"] == 0.0  # lane keeping, and merging off the on-ramp
    assert bot["success_rate"] >= no_action_train["success_rate"]
    assert bot["success_rate"] >= 0.75, bot["events"]


def drive(env, driver, vehicle: int) -> tuple[dict, float]:
    """One episode: the last ``info`` and the smallest bumper gap to the car ahead [m]."""
    obs, info = env.reset(options={"vehicle": vehicle})
    driver.reset(env, obs, info)
    closest = np.inf
    while True:
        obs, _, terminated, truncated, info = env.step(driver.act(obs, info))
        cars = env.sim.vehicles()  # row 0: the controlled car
        gaps = cars["x"][1:] - cars["x"][0] - 0.5 * (cars["length"][1:] + cars["length"][0])
        if (cars["x"][1:] > cars["x"][0]).any():
            closest = min(closest, float(gaps[cars["x"][1:] > cars["x"][0]].min()))
        if terminated or truncated:
            return info, closest


def test_bot_stops_behind_a_braking_leader_that_no_action_hits(tmp_path):
    env = open_replay_env(write_braking_leader(tmp_path / "braking.h5"), ReplayEnvConfig(return_context=False))
    info, _ = drive(env, make_driver("no-action"), 2)
    assert info["event"] == "collision_ahead"
    info, closest = drive(env, make_driver("bot"), 2)
    assert info["event"] == "end_of_data" and info["speed_mps"] < 0.05
    assert 1.0 < closest < 5.0  # about the IDM standstill gap (2 m)
    info, closest = drive(env, make_driver("expert"), 2)
    assert info["event"] == "end_of_data" and closest == pytest.approx(20.5, abs=0.01)  # as recorded


class UncertainDriver:
    """No action, reporting a made-up uncertainty that grows by 1 per step."""

    name = "uncertain"
    needs_context = True

    def reset(self, env, obs, info):
        assert len(info["context"]) == 20 and np.array_equal(info["context"][-1]["image"], obs["image"])
        self.steps = 0

    def act(self, obs, info):
        self.steps += 1
        return np.zeros(2)

    def diagnostics(self):
        return {"uncertainty": float(self.steps)}


def test_diagnostics_are_averaged_per_episode(driving_data):
    files, chosen, _ = select_episodes(driving_data, "test")
    runner = EpisodeRunner(EvalPolicyConfig(data=str(driving_data)), files, driver=UncertainDriver())
    record = runner.run(chosen[0])
    assert record["uncertainty"] == pytest.approx((record["steps"] + 1) / 2)  # mean of 1..steps


def test_bench_reports_episodes_per_second(driving_data):
    result = bench_eval_episodes(driving_data, "no-action", episodes=2, split="train")
    assert result["eval_episodes"] == 2 and result["eval_episodes_per_s"] > 0 and result["eval_steps_per_s"] > 0


def test_wilson_interval():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bad_inputs_give_one_line_errors(driving_data, tmp_path):
    def one_line(excinfo, *words):
        text = str(excinfo.value)
        assert "\n" not in text and all(w in text for w in words), text

    with pytest.raises(DataError) as e:
        run(tmp_path / "nothing")
    one_line(e, "nothing")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(driving_data / "episodes.h5", lonely / "episodes.h5")
    with pytest.raises(DataError) as e:
        run(lonely)
    one_line(e, "lonely", "trajectories")
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        run(driving_data, "no-such-driver")
    one_line(e, "no-such-driver")
    with pytest.raises(ValueError) as e:
        make_driver("bot", speed=3)
    one_line(e, "speed")
    with pytest.raises(ValueError) as e:
        run(driving_data, split="dev")
    one_line(e, "dev")
    with pytest.raises(DataError) as e:
        render_rollout("bot", driving_data, 123456, tmp_path / "r.mp4")
    one_line(e, "trajectories-0.h5", "123456")


def test_render_rollout_writes_one_frame_per_step(driving_data, tmp_path):
    _, chosen, _ = select_episodes(driving_data, "test")
    vehicle = chosen[-1].vehicle
    out = tmp_path / "videos" / "rollout.mp4"
    result = render_rollout("bot", driving_data, vehicle, out, max_steps=25)
    frames = imageio.mimread(out, memtest=False)
    assert len(frames) == result["frames"] == result["steps"] + 1 <= 26
    assert frames[0].shape[:2] == tuple(result["size"]) and result["vehicle"] == vehicle
    # the driven car (blue) and its recording (yellow outline) are in the picture
    env = open_replay_env(driving_data / f"trajectories-{chosen[-1].file}.h5", ReplayEnvConfig(return_context=False),
                          render_mode="rgb_array")  # fmt: skip
    env.reset(options={"vehicle": chosen[-1].recorded_id})
    top = env.render()
    assert ((top == (40, 90, 255)).all(-1)).any() and ((top == (255, 215, 0)).all(-1)).any()
    frame = compose_frame(top, "header", {"proximity": [0.1, 0.5], "uncertainty": [2.0, 4.0]})
    assert frame.shape[1] >= top.shape[1] and frame.dtype == np.uint8


def test_cli_eval_policy_end_to_end(driving_data, tmp_path, capsys):
    out = tmp_path / "cli" / "eval.json"
    rc = main(["eval", "policy", "--driver", "expert", "--data", str(driving_data), "--split", "test", "--episodes",
               "3", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 3 and summary["success_rate"] == 1.0 and not math.isnan(summary["wall_s"])
    assert json.loads(out.read_text())["protocol"]["episodes"] == 3 and out.with_suffix(".csv").exists()
    rc = main(["eval", "policy", "--driver", "bot", "--option", "speed=3", "--data", str(driving_data), "--out",
               str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and err.startswith("worldmodel eval: error:") and "speed" in err
    rc = main(["render", "rollout", "--driver", "bot", "--data", str(tmp_path / "missing"), "--vehicle", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "missing" in err
    rc = main(["eval", "policy", "--driver", "expert", "--data", str(driving_data), "--split", "test", "--episodes",
               "3", "--stuck-factor", "0.5", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0 and json.loads(capsys.readouterr().out)["stuck_rate"] > 0  # the expert needs its steps (none above)


# ------------------------------------------------------------------------------------------ stuck, not at fault
def write_one_lane(path, cars: dict[int, tuple[float, np.ndarray]]) -> Path:
    """A hand-written 1-lane recording (1 km road, evaluated zone 10-290 m): car ``id`` starts at ``x0`` [m]
    and drives at ``speeds`` [m/s] (one per 0.1 s frame; cars may overlap, nobody checks)."""
    road = Road(RoadConfig(lanes=1, lane_width_m=3.7, length_m=1000.0, section_m=(0.0, 1000.0),
                           evaluated_m=(10.0, 290.0), speed_limit_mps=20.0, ramps=()))  # fmt: skip
    with TrajectoryWriter(path, road.to_dict(), "test one lane", ["car"]) as w:
        for vid, (x0, speeds) in cars.items():
            frames = len(speeds)
            travelled = np.concatenate([[0.0], np.cumsum(speeds[:-1] * 0.1)])
            w.add_vehicle(vid, 4.5, 1.8, 0, {
                "frame": np.arange(frames), "x": x0 + travelled, "y": np.full(frames, 1.85), "vx": speeds,
                "vy": np.zeros(frames), "lane": np.zeros(frames, np.int16),
            })  # fmt: skip
    return path


class BrakingDriver:
    """Brakes as hard as the action space allows, from the hand-over on, then stands still."""

    name = "brake"
    needs_context = False

    def reset(self, env, obs, info):
        pass

    def act(self, obs, info):
        return np.array([ACTION_LOW[0], 0.0])

    def diagnostics(self):
        return {}


def drive_one(path, driver, vehicle: int, **config) -> dict:
    """The record of one episode of ``vehicle`` in the recording ``path``, driven by the harness."""
    runner = EpisodeRunner(EvalPolicyConfig(**({"out": None, "progress": False} | config)), [path], driver=driver)
    try:
        return runner.run(Episode(vehicle, 0, vehicle))
    finally:
        runner.close()


def test_a_car_standing_still_gets_stuck_at_the_cap(tmp_path):
    # at 20 m/s from x = 200 m: the hand-over (frame 19) at 238 m, the zone end (290 m) 26 frames later
    path = write_one_lane(tmp_path / "alone.h5", {1: (200.0, np.full(200, 20.0))})
    record = drive_one(path, BrakingDriver(), 1)
    assert record["recorded_steps"] == 26
    assert record["event"] == "stuck" and record["stuck"] and record["steps"] == 52  # 2 x 26
    assert (
        not record["success"] and not record["success_not_at_fault"] and record["distance_m"] < 290 - 200
    )  # short of the zone end
    assert drive_one(path, BrakingDriver(), 1, stuck_factor=1.5)["steps"] == 39
    record = drive_one(path, BrakingDriver(), 1, stuck_factor=None)
    assert record["event"] == "end_of_data" and not record["stuck"] and record["steps"] == 199 - 19
    record = drive_one(path, BrakingDriver(), 1, max_steps=30)  # the timeout still comes first when shorter
    assert record["event"] == "timeout" and record["steps"] == 30
    record = drive_one(path, make_driver("no-action"), 1)  # keeps the recorded 20 m/s: arrives in time
    assert record["success"] and not record["stuck"] and record["steps"] <= 27


@pytest.fixture(scope="module")
def tailgated(tmp_path_factory):
    """Car 1 at 10 m/s from x = 60 m, slowing at ``recorded_decel_mps2`` (1.0, or 0.0 in the other file)
    from 2.5 s to 8 m/s; car 2 starts 20 m behind it at 14 m/s and drives through it: whoever drives car 1
    gets rear-ended."""
    t = np.arange(200) * 0.1
    paths = {}
    for decel in (0.0, 1.0):
        car1 = np.clip(10.0 - decel * np.maximum(t - 2.5, 0.0), 8.0, None)
        paths[decel] = write_one_lane(tmp_path_factory.mktemp("tailgated") / f"decel{decel:g}.h5",
                                      {1: (60.0, car1), 2: (40.0, np.full(200, 14.0))})  # fmt: skip
    return paths


@pytest.mark.parametrize("recorded_decel_mps2", [0.0, 1.0])
def test_rear_ended_at_or_above_the_recorded_speed_is_not_at_fault(tailgated, recorded_decel_mps2):
    record = drive_one(tailgated[recorded_decel_mps2], make_driver("no-action"), 1)  # keeps 10 m/s
    assert record["event"] == "collision_behind" and not record["success"]
    assert record["rear_ended_not_at_fault"] and record["success_not_at_fault"]
    record = drive_one(tailgated[recorded_decel_mps2], BrakingDriver(), 1)  # slower than its recording
    assert record["event"] == "collision_behind"
    assert not record["rear_ended_not_at_fault"] and not record["success_not_at_fault"]


def test_summary_counts_not_at_fault_successes_and_stuck_episodes():
    def record(vehicle, event, not_at_fault=False):
        return {"vehicle": vehicle, "event": event, "success": event == "arrived",
                "rear_ended_not_at_fault": not_at_fault, "success_not_at_fault": event == "arrived" or not_at_fault,
                "stuck": event == "stuck", "distance_m": 100.0, "steps": 10, "recorded_steps": 8,
                "collision_ahead": event == "collision_ahead", "collision_behind": event == "collision_behind",
                "offroad": event == "offroad"}  # fmt: skip

    events = ["arrived", "arrived", "collision_behind", "collision_behind", "stuck", "collision_ahead",
              "end_of_data", "stuck"]  # fmt: skip
    records = [record(i, e, not_at_fault=i == 2) for i, e in enumerate(events)]
    s = summarise(records)
    assert s["success_rate"] == 2 / 8 and s["success_not_at_fault_rate"] == 3 / 8
    assert s["success_not_at_fault_rate_ci95"] == pytest.approx(list(wilson_interval(3, 8)))
    assert s["rear_ended_not_at_fault_rate"] == 1 / 8 and s["stuck_rate"] == 2 / 8
    assert list(s["events"])[: len(EVENTS)] == list(EVENTS) and s["events"]["stuck"] == 2
    assert s["events"]["offroad"] == 0 and sum(s["events"].values()) == 8
    assert s["diagnostics"] == {}  # the new record keys are not mistaken for driver diagnostics


def test_records_and_summary_have_the_new_fields(no_action_train):
    r = no_action_train
    assert r["protocol"]["stuck_factor"] == 2.0 and "stuck" in r["events"]
    assert r["success_rate"] <= r["success_not_at_fault_rate"] <= 1.0
    lo, hi = r["success_not_at_fault_rate_ci95"]
    assert lo <= r["success_not_at_fault_rate"] <= hi and 0.0 <= r["stuck_rate"] <= 1.0
    for record in r["per_episode"]:
        assert record["stuck"] == (record["event"] == "stuck") and record["recorded_steps"] >= 1
        assert record["success_not_at_fault"] == (record["success"] or record["rear_ended_not_at_fault"])
        assert not record["rear_ended_not_at_fault"] or record["event"] == "collision_behind"
        if record["stuck"]:
            assert record["steps"] == int(2.0 * record["recorded_steps"])


def test_bad_stuck_factor_is_a_one_line_error(driving_data):
    with pytest.raises(ValueError, match="stuck_factor"):
        run(driving_data, stuck_factor=0.0)
