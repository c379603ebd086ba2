"""inspect_file: figures of both formats against plain loops; invalid files raise DataError."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from data_helpers import assert_one_line_error, make_road, write_trajectories

from worldmodel.data.hdf5 import DataError
from worldmodel.data.inspect import inspect_file


def test_trajectories_summary_matches_loops(tmp_path):
    path = tmp_path / "t.h5"
    road = make_road(lanes=3, length_m=100.0)  # flow measured at x = 50 m
    tracks = write_trajectories(path, vehicles=(1, 2, 3, 5, 8, 9), count=80, road=road)
    s = inspect_file(path)
    assert s["format"] == "worldmodel.trajectories" and s["version"] == 1 and s["vehicles"] == 6
    first = min(int(t["frame"][0]) for t in tracks.values())
    stop = max(int(t["frame"][-1]) + 1 for t in tracks.values())
    assert s["frames"] == stop - first and s["duration_s"] == pytest.approx((stop - first) * 0.1)
    speeds = np.concatenate([np.hypot(t["vx"], t["vy"]) for t in tracks.values()])
    assert s["speed_mean_mps"] == pytest.approx(speeds.mean(), abs=1e-3)
    assert s["speed_std_mps"] == pytest.approx(speeds.std(), abs=1e-3)
    crossings, changes = np.zeros(3), []
    for t in tracks.values():
        changes.append(0)
        for k in range(len(t["x"]) - 1):
            if t["x"][k] < 50.0 <= t["x"][k + 1]:
                crossings[t["lane"][k + 1]] += 1
            changes[-1] += int(t["lane"][k + 1] != t["lane"][k])
    hours = (stop - first) * 0.1 / 3600
    assert crossings.sum() >= 3  # the test is about something
    assert s["flow_veh_per_h_per_lane"] == pytest.approx(crossings.sum() / hours / 3, rel=1e-3)
    assert s["flow_by_lane_veh_per_h"] == pytest.approx({str(k): c / hours for k, c in enumerate(crossings)}, rel=1e-3)
    assert s["lane_changes_total"] == sum(changes) == 4  # the odd ids change lane once
    assert s["lane_changes_per_vehicle"] == pytest.approx(np.mean(changes), abs=1e-4)
    assert s["units"]["flow"] == "veh/h/lane" and s["kinds"] == {"car": 2, "truck": 4}
    json.dumps(s)  # the CLI prints it as JSON


def test_episodes_summary(episodes_file):
    path, written = episodes_file
    s = inspect_file(path)
    assert s["format"] == "worldmodel.episodes" and s["episodes"] == len(written)
    frames = {k: sum(len(ep["images"]) for ep in written.values() if ep["split"] == k) for k in range(3)}
    assert [s["splits"][name]["frames"] for name in ("train", "val", "test")] == [
        frames[0],
        frames[1],
        frames[2],
    ]
    assert s["frames"] == sum(frames.values()) and s["duration_s"] == pytest.approx(s["frames"] * 0.1)
    speeds = np.concatenate([np.hypot(ep["states"][:, 2], ep["states"][:, 3]) for ep in written.values()])
    assert s["speed_mean_mps"] == pytest.approx(speeds.mean(), abs=1e-3)
    json.dumps(s)


def test_invalid_files_raise(tmp_path, trajectories_file):
    text = tmp_path / "x.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError) as info:
        inspect_file(text)
    assert_one_line_error(info, text, "HDF5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"], f.attrs["version"] = "something.else", 1
    with pytest.raises(DataError) as info:
        inspect_file(other)
    assert_one_line_error(info, other, "unknown format")
    path, _ = trajectories_file
    with h5py.File(path, "r+") as f:
        f["tracks/y"][3] = np.nan
    with pytest.raises(DataError) as info:
        inspect_file(path)
    assert_one_line_error(info, path, "/tracks/y", "NaN")
