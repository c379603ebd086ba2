"""NGSIM import: units, smoothing, streaming, road inference, and every kind of bad row."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import assert_one_line_error

from worldmodel.data.hdf5 import DataError
from worldmodel.data.ngsim import FT_M, import_ngsim, smooth_centred
from worldmodel.data.trajectories import TrajectoryReader

LENGTH_FT, WIDTH_FT = 15.0, 6.0


def ngsim_rows(vehicle, first, n, lane_id, speed_fps, y0_ft=100.0, length_ft=LENGTH_FT, width_ft=WIDTH_FT, cls=2):
    """[n, 18] rows of a car driving straight at constant speed in the middle of lane ``lane_id``."""
    rows = np.zeros((n, 18))
    rows[:, 0], rows[:, 1], rows[:, 2] = vehicle, first + np.arange(n), n
    rows[:, 4] = 12.0 * (lane_id - 0.5)  # Local_X: 12 ft lanes
    rows[:, 5] = y0_ft + speed_fps * 0.1 * np.arange(n)  # Local_Y: the front
    rows[:, 8], rows[:, 9], rows[:, 10], rows[:, 11], rows[:, 13] = (
        length_ft,
        width_ft,
        cls,
        speed_fps,
        lane_id,
    )
    return rows


def write_ngsim(path, rows, header=False, extra_lines=()):
    lines = ["Vehicle_ID Frame_ID Total_Frames ..."] if header else []
    lines += [" ".join(f"{v:.6g}" if k not in (4, 5) else f"{v:.3f}" for k, v in enumerate(r)) for r in rows]
    for index, text in extra_lines:  # (position, raw line) inserted in order
        lines.insert(index, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_rows():
    return np.concatenate(
        [
            ngsim_rows(3, 10, 40, lane_id=1, speed_fps=30.0),
            ngsim_rows(1, 0, 50, lane_id=2, speed_fps=20.0, y0_ft=10.0),
            ngsim_rows(2, 5, 45, lane_id=3, speed_fps=25.0, y0_ft=50.0, cls=3, length_ft=40.0),
            ngsim_rows(7, 20, 12, lane_id=4, speed_fps=10.0, y0_ft=200.0, cls=1),  # a short on-ramp lane
        ]
    )


def test_smooth_centred_keeps_lines_and_ends():
    line = 3.0 + 0.5 * np.arange(30)
    np.testing.assert_allclose(smooth_centred(line, 7), line, atol=1e-12)
    step = np.r_[np.zeros(15), np.ones(15)]
    smooth = smooth_centred(step, 7)
    assert smooth[0] == 0 and smooth[-1] == 1 and 0 < smooth[14] < 1 and np.all(np.diff(smooth) >= 0)


@pytest.mark.parametrize("block_lines", [7, 100_000])
def test_clean_import_converts_units(tmp_path, block_lines):
    rows = clean_rows()
    shuffled = rows[np.random.default_rng(0).permutation(len(rows))]  # interleaved vehicles
    src = write_ngsim(tmp_path / "trajectories.txt", shuffled, header=True)
    summary = import_ngsim(src, tmp_path / "t.h5", block_lines=block_lines)
    assert summary["rows_read"] == len(rows) and summary["vehicles"] == 4 and summary["rows_written"] == len(rows)
    assert summary["header_lines"] == 1
    assert sum(summary["repairs"].values()) == 0 and sum(summary["dropped_rows"].values()) == 0
    road = summary["road"]
    assert road["lanes"] == 3 and [r["lane"] for r in road["ramps"]] == [3]
    assert road["lane_width_m"] == pytest.approx(12 * FT_M, rel=1e-3)
    with TrajectoryReader(tmp_path / "t.h5") as r:
        assert r.kinds[r.vehicles["kind"][list(r.vehicles["id"]).index(2)]] == "truck"
        assert r.vehicles["length"][0] == pytest.approx(LENGTH_FT * FT_M)
        t = r.track(1)
        np.testing.assert_array_equal(t["frame"], np.arange(50))
        np.testing.assert_allclose(t["x"], (10.0 + 2.0 * np.arange(50) - LENGTH_FT / 2) * FT_M, atol=1e-4)
        np.testing.assert_allclose(t["y"], 18.0 * FT_M, atol=1e-5)
        np.testing.assert_allclose(t["vx"], 20.0 * FT_M, atol=1e-3)
        np.testing.assert_allclose(t["vy"], 0.0, atol=1e-4)
        assert np.all(t["lane"] == 1) and np.allclose(t["heading"], 0.0)
        assert np.all(r.track(7)["lane"] == 3)


def test_repairs_are_counted(tmp_path):
    base = ngsim_rows(1, 0, 60, lane_id=2, speed_fps=20.0)
    gap = np.delete(ngsim_rows(2, 0, 60, lane_id=1, speed_fps=30.0), [20, 21, 22, 23, 24], axis=0)
    nan_row = ngsim_rows(3, 0, 40, lane_id=3, speed_fps=25.0)
    nan_row[10, 5] = np.nan
    bad_speed = ngsim_rows(4, 0, 40, lane_id=1, speed_fps=25.0)
    bad_speed[30, 11] = -3.0
    too_wide = ngsim_rows(5, 0, 30, lane_id=2, speed_fps=20.0, width_ft=20.0)
    single = ngsim_rows(6, 0, 1, lane_id=2, speed_fps=20.0)
    jump = ngsim_rows(8, 0, 30, lane_id=2, speed_fps=20.0)
    jump[15:, 5] += 400.0  # a 120 m jump: smoothed speed > 60 m/s
    rows = np.concatenate([base, base[[5, 17]], gap, nan_row, bad_speed, too_wide, single, jump])
    src = write_ngsim(tmp_path / "bad.txt", rows, extra_lines=[(3, ""), (50, "   ")])
    s = import_ngsim(src, tmp_path / "t.h5")
    assert s["repairs"] == {"duplicate_rows": 2, "gap_frames_filled": 5 + 1 + 1, "lane_outside_road": 0}
    assert s["dropped_rows"] == {"nan": 1, "speed": 1}
    assert s["dropped_vehicles"] == {"size": 1, "speed": 1, "too_short": 1}
    assert s["rows_read"] == len(rows) and s["vehicles"] == 4
    with TrajectoryReader(tmp_path / "t.h5") as r:
        assert list(r.vehicles["id"]) == [1, 2, 3, 4]
        t = r.track(2)  # the gap is filled by straight-line interpolation
        np.testing.assert_array_equal(t["frame"], np.arange(60))
        np.testing.assert_allclose(t["x"], (100.0 + 3.0 * np.arange(60) - LENGTH_FT / 2) * FT_M, atol=1e-4)


def _with_line(tmp_path, index, text):
    return write_ngsim(tmp_path / "in.txt", clean_rows(), extra_lines=[(index, text)])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: _with_line(p, 4, "1 2 3"), ["line 5", "18 fields", "found 3"]),
        (lambda p: _with_line(p, 9, " ".join(["7"] * 10 + ["x1"] + ["2"] * 7)), ["line 10", "v_Class", "x1"]),
        (lambda p: _with_line(p, 0, " ".join(["1"] * 17 + ["1.5 2"])), ["line 1", "found 19"]),
    ],
)
def test_malformed_lines_name_the_line(tmp_path, make, words):
    src = make(tmp_path)
    with pytest.raises(DataError) as info:
        import_ngsim(src, tmp_path / "t.h5")
    assert_one_line_error(info, src, *words)
    assert not (tmp_path / "t.h5").exists()


def test_unrepairable_rows_name_the_line(tmp_path):
    rows = clean_rows()
    conflict = rows[[3]].copy()
    conflict[0, 5] += 1.0  # same vehicle and frame, another position
    src = write_ngsim(tmp_path / "a.txt", np.concatenate([rows, conflict]))
    with pytest.raises(DataError) as info:
        import_ngsim(src, tmp_path / "t.h5")
    assert_one_line_error(info, src, f"line {len(rows) + 1}", "line 4", "different values")

    long_gap = np.delete(rows, np.arange(5, 25), axis=0)  # vehicle 3 loses 20 frames (2 s)
    src = write_ngsim(tmp_path / "b.txt", long_gap)
    with pytest.raises(DataError) as info:
        import_ngsim(src, tmp_path / "t.h5")
    assert_one_line_error(info, src, "line 6", "vehicle 3", "20 missing frames")

    bad_class = rows.copy()
    bad_class[8, 10] = 4
    src = write_ngsim(tmp_path / "c.txt", bad_class)
    with pytest.raises(DataError) as info:
        import_ngsim(src, tmp_path / "t.h5")
    assert_one_line_error(info, src, "line 9", "v_Class")

    with pytest.raises(DataError) as info:
        import_ngsim(tmp_path / "absent.txt", tmp_path / "t.h5")
    assert_one_line_error(info, tmp_path / "absent.txt", "cannot open")
    assert not (tmp_path / "t.h5").exists()


def test_given_road_marks_unknown_lanes(tmp_path):
    road = {
        "lanes": 3,
        "lane_width_m": 3.66,
        "length_m": 300.0,
        "section_m": [0.0, 300.0],
        "evaluated_m": [0.0, 300.0],
        "speed_limit_mps": 29.0,
        "ramps": [],
    }
    src = write_ngsim(tmp_path / "in.txt", clean_rows())
    s = import_ngsim(src, tmp_path / "t.h5", road=road)
    assert s["repairs"]["lane_outside_road"] == 12 and s["road"]["lane_width_m"] == 3.66
    with TrajectoryReader(tmp_path / "t.h5") as r:
        assert np.all(r.track(7)["lane"] == -1)


def test_stopped_cars_keep_their_heading(tmp_path):
    rows = ngsim_rows(1, 0, 60, lane_id=2, speed_fps=10.0)
    moving = np.arange(60) < 30
    rows[:, 5] = 100.0 + np.where(moving, np.arange(60), 29) * 1.0  # 10 ft/s forward, then stopped
    rows[:, 4] = 18.0 + np.where(moving, np.arange(60), 29) * 0.1  # drifting right at 1 ft/s
    rows[~moving, 11] = 0.0
    src = write_ngsim(tmp_path / "in.txt", rows)
    import_ngsim(src, tmp_path / "t.h5")
    with TrajectoryReader(tmp_path / "t.h5") as r:
        t = r.track(1)
    assert np.all(np.hypot(t["vx"], t["vy"])[-10:] < 1e-3)  # stopped at the end
    np.testing.assert_allclose(t["heading"], np.arctan2(0.1, 1.0), atol=1e-3)
