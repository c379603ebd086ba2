"""Record -> extract -> windows, end to end on the tiny scenario."""

import json
import subprocess
import sys

import numpy as np
import pytest

from worldmodel.costs import pixel_costs_numpy
from worldmodel.data.episodes import EpisodeReader, split_for_vehicle
from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.hdf5 import DataError
from worldmodel.data.recipes import build, load_recipe
from worldmodel.data.record import RecordConfig, record
from worldmodel.data.trajectories import TrajectoryReader
from worldmodel.traffic import kinematics
from worldmodel.traffic.raster import EgoRasterizer
from worldmodel.traffic.road import Road


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    traj = out / "trajectories.h5"
    summary = record(RecordConfig(scenario="tiny", minutes=0.5, warmup_s=20.0, seed=4, progress=False), traj)
    episodes = out / "episodes.h5"
    ex = extract([traj], episodes, ExtractConfig(progress=False))
    return traj, episodes, summary, ex


def test_record_writes_every_car_in_the_section(recorded):
    traj, _, summary, _ = recorded
    with TrajectoryReader(traj) as r:
        assert r.num_vehicles == summary["vehicles"] > 10
        x0, x1 = r.road["section_m"]
        rows = r.read_rows(0, r.num_rows, ("x", "accel", "curvature", "heading"))
        assert rows["x"].min() >= x0 and rows["x"].max() <= x1
        assert {"accel", "curvature", "heading"} <= set(r.columns)


def test_recorded_actions_replay_the_recorded_trajectories(recorded):
    traj, *_ = recorded
    worst = 0.0
    with TrajectoryReader(traj) as r:
        for _, t in r:
            x, y = np.float64(t["x"][0]), np.float64(t["y"][0])
            psi, v = np.float64(t["heading"][0]), np.float64(np.hypot(t["vx"][0], t["vy"][0]))
            for k in range(len(t["x"]) - 1):
                x, y, psi, v = kinematics.step(
                    x, y, psi, v, np.float64(t["accel"][k]), np.float64(t["curvature"][k]), r.dt
                )
                worst = max(worst, float(np.hypot(x - t["x"][k + 1], y - t["y"][k + 1])))
    assert worst <= 0.01  # 1 cm


def test_extraction_has_one_episode_per_car_and_every_frame(recorded):
    traj, episodes, _, ex = recorded
    with TrajectoryReader(traj) as r, EpisodeReader(episodes) as e:
        assert e.num_episodes == r.num_vehicles and e.num_frames == r.num_rows == ex["car_frames"]
        assert sorted(e.episodes["vehicle"].tolist()) == sorted(r.vehicles["id"].tolist())
        for k in range(e.num_episodes):
            assert e.episodes["split"][k] == split_for_vehicle(int(e.episodes["vehicle"][k]))
        # states and exact actions of the same instant as the recording
        k = int(np.argmax(e.episodes["count"]))
        ep = e.episode(k)
        track = r.track(int(ep["vehicle"]))
        np.testing.assert_array_equal(ep["states"][:, 0], track["x"])
        np.testing.assert_array_equal(ep["actions"][:, 0], track["accel"])


def test_extraction_costs_equal_costs_py_on_the_same_images(recorded):
    _, episodes, _, _ = recorded
    with EpisodeReader(episodes) as e:
        rows = e.read(0, e.num_frames)
        owner = np.repeat(np.arange(e.num_episodes), e.episodes["count"])
        speed = np.hypot(rows["states"][:, 2], rows["states"][:, 3])
        costs = pixel_costs_numpy(rows["images"], speed, e.episodes["length"][owner], e.episodes["width"][owner])
        np.testing.assert_allclose(rows["costs"], costs, atol=1e-6)
        assert rows["costs"][:, 0].max() > 0  # some proximity in traffic


def test_extracted_view_equals_the_rasteriser_on_that_frame(recorded):
    traj, episodes, _, _ = recorded
    with TrajectoryReader(traj) as r, EpisodeReader(episodes) as e:
        table = r.frames_table(("x", "y", "heading"))
        k = int(np.argmax(e.episodes["count"]))
        ep = e.episode(k)
        first = int(r.track(int(ep["vehicle"]))["frame"][0])
        frame = table.at(first + 5)
        cars = {"x": frame["x"].astype(np.float64), "y": frame["y"].astype(np.float64),
                "psi": frame["heading"].astype(np.float64), "length": frame["length"].astype(np.float64),
                "width": frame["width"].astype(np.float64)}  # fmt: skip
        road = Road.from_dict(r.road)
        cars["lane"] = road.lane_at(cars["x"], cars["y"])
        me = int(np.nonzero(frame["vehicle"] == ep["vehicle"])[0][0])
        view = EgoRasterizer(road).render(cars, np.array([me]))[0].astype(np.int64)
        # one car's canvas is smaller than a whole frame's; OpenCV's warp computes its sampling positions in
        # float32 from the canvas origin, so a few pixels may differ by one grey level
        extracted = ep["images"][5].astype(np.int64)
        assert np.abs(view - extracted).max() <= 1 and (view != extracted).mean() < 1e-3


def test_two_workers_write_the_same_file(recorded, tmp_path):
    traj, episodes, _, _ = recorded
    out = tmp_path / "e2.h5"
    extract([traj], out, ExtractConfig(workers=2, progress=False))
    with EpisodeReader(episodes) as a, EpisodeReader(out) as b:
        for name in a.episodes:
            np.testing.assert_array_equal(a.episodes[name], b.episodes[name])
        for name, values in a.read(0, a.num_frames).items():
            np.testing.assert_array_equal(values, b.read(0, b.num_frames)[name])


def test_extract_of_a_bad_file_fails_cleanly(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    out = tmp_path / "out.h5"
    with pytest.raises(DataError) as err:
        extract([bad], out, ExtractConfig(progress=False))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and not list(tmp_path.glob("out.h5*"))


def test_recipe_build_and_errors(tmp_path):
    recipe = tmp_path / "mini.toml"
    recipe.write_text('name = "mini"\nscenario = "tiny"\nwarmup_s = 10.0\n[[recordings]]\nseed = 3\nminutes = 0.2\n'
                      "[extract]\nworkers = 1\n")  # fmt: skip
    summary = build(recipe, progress=False)
    assert (tmp_path / "mini" / "episodes.h5").exists() and (tmp_path / "mini" / "trajectories-3.h5").exists()
    assert summary["extract"]["episodes"] > 0
    again = build(recipe, progress=False)  # recordings are kept, not re-simulated
    assert again["recordings"][0]["kept"]
    (tmp_path / "bad.toml").write_text('name = "x"\nscenario = "tiny"\n[[recordings]]\nsed = 1\n')
    with pytest.raises(DataError, match="sed"):
        load_recipe(tmp_path / "bad.toml")


def test_cli_inspect_valid_and_invalid(recorded, tmp_path):
    _, episodes, _, _ = recorded
    ok = subprocess.run([sys.executable, "-m", "worldmodel.cli", "data", "inspect", str(episodes)],
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0 and json.loads(ok.stdout)["format"] == "worldmodel.episodes"
    truncated = tmp_path / "half.h5"
    truncated.write_bytes(episodes.read_bytes()[: episodes.stat().st_size // 2])
    bad = subprocess.run([sys.executable, "-m", "worldmodel.cli", "data", "inspect", str(truncated)],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and str(truncated) in bad.stderr
