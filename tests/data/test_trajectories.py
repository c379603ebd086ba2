"""trajectories.h5: round trip, ordering, frame table, and every bad-input case."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from data_helpers import assert_one_line_error, make_road, synthetic_track, truncated_copy, write_trajectories

from worldmodel.data.hdf5 import DataError
from worldmodel.data.trajectories import TrajectoryReader, TrajectoryWriter


def test_round_trip(trajectories_file):
    path, tracks = trajectories_file
    with TrajectoryReader(path) as r:
        assert r.road == make_road() and r.dt == pytest.approx(0.1) and r.kinds == ["car", "truck"]
        assert r.columns == ("frame", "x", "y", "vx", "vy", "lane", "heading", "accel", "curvature")
        assert list(r.vehicles["id"]) == sorted(tracks)
        assert r.num_rows == sum(len(t["frame"]) for t in tracks.values())
        assert r.frame_range == (3, max(3 * v + 30 + v for v in tracks))
        for v, track in tracks.items():
            got = r.track(v)
            for name, values in track.items():
                np.testing.assert_allclose(got[name], values, rtol=1e-6, atol=1e-6, err_msg=name)
        iterated = dict(iter(r))
        assert sorted(iterated) == sorted(tracks)
        np.testing.assert_array_equal(iterated[5]["frame"], tracks[5]["frame"])
        k = list(r.vehicles["id"]).index(8)
        assert r.vehicles["length"][k] == pytest.approx(5.3) and r.vehicles["kind"][k] == 0
        with h5py.File(path) as f:  # stored compressed and chunked
            assert f["tracks/x"].compression == "gzip" and f["tracks/x"].chunks == (16,)


def test_vehicles_in_any_order_are_written_sorted(tmp_path):
    path = tmp_path / "t.h5"
    rng = np.random.default_rng(0)
    order = [7, 2, 9, 1, 4]
    tracks = {v: synthetic_track(v, rng, first=v, count=10 + v) for v in order}
    with TrajectoryWriter(path, make_road(), "test", ["car"], chunk_rows=8) as w:
        for v in order:
            w.add_vehicle(v, 4.5, 1.8, 0, tracks[v])
    with TrajectoryReader(path) as r:  # the reader's checks fail if rows are not sorted
        assert list(r.vehicles["id"]) == sorted(order)
        for v in order:
            np.testing.assert_allclose(r.track(v)["x"], tracks[v]["x"], rtol=1e-6)
    assert not list(tmp_path.glob("*.tmp*"))


def test_frames_table_matches_a_loop(trajectories_file):
    path, tracks = trajectories_file
    with TrajectoryReader(path) as r:
        table = r.frames_table(columns=("x", "y"))
        assert table.num_frames == r.frame_range[1] - r.frame_range[0]
        for frame in range(r.frame_range[0] - 1, r.frame_range[1] + 1):
            present = [(v, t["x"][t["frame"] == frame][0]) for v, t in sorted(tracks.items()) if frame in t["frame"]]
            got = table.at(frame)
            assert list(got["vehicle"]) == [v for v, _ in present]
            np.testing.assert_allclose(got["x"], [x for _, x in present], rtol=1e-6)
            assert np.all(got["width"] == np.float32(1.8))


def test_writer_exception_leaves_no_file(tmp_path):
    path = tmp_path / "t.h5"
    with pytest.raises(RuntimeError), TrajectoryWriter(path, make_road(), "test", ["car"]) as w:
        w.add_vehicle(1, 4.5, 1.8, 0, synthetic_track(1, np.random.default_rng(0), 0, 5))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            lambda t: t.update(frame=t["frame"][[0, 2, 3, 4, 5]], **{k: t[k][:5] for k in t if k != "frame"}),
            ["consecutive"],
        ),
        (lambda t: t["x"].__setitem__(2, np.nan), ["NaN"]),
        (lambda t: t.pop("lane"), ["missing", "lane"]),
    ],
)
def test_writer_refuses_bad_tracks(tmp_path, change, words):
    path = tmp_path / "t.h5"
    track = synthetic_track(1, np.random.default_rng(0), 0, 6)
    change(track)
    with pytest.raises(DataError) as info, TrajectoryWriter(path, make_road(), "test", ["car"]) as w:
        w.add_vehicle(1, 4.5, 1.8, 0, track)
    assert_one_line_error(info, path, *words)
    assert not path.exists() and not path.with_name("t.h5.tmp").exists()


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda f: f.attrs.__setitem__("version", 2), ["version 2"]),
        (lambda f: f.attrs.__setitem__("format", "worldmodel.episodes"), ["format"]),
        (lambda f: f.attrs.__delitem__("road"), ["road"]),
        (lambda f: f.__delitem__("tracks/vx"), ["missing dataset /tracks/vx"]),
        (lambda f: f["tracks/x"].__setitem__(4, np.nan), ["/tracks/x", "NaN"]),
        (lambda f: f["vehicles/count"].__setitem__(0, 3), ["count"]),
        (lambda f: f["tracks/frame"].__setitem__(5, 100), ["consecutive"]),
        (
            lambda f: (
                f.__delitem__("tracks/lane"),
                f.create_dataset("tracks/lane", data=np.zeros(5, np.float32)),
            ),
            ["/tracks/lane", "dtype"],
        ),
    ],
)
def test_reader_refuses_bad_files(trajectories_file, edit, words):
    path, _ = trajectories_file
    _edit(path, edit)
    with pytest.raises(DataError) as info:
        TrajectoryReader(path)
    assert_one_line_error(info, path, *words)


def test_reader_refuses_missing_non_hdf5_and_truncated(tmp_path):
    with pytest.raises(DataError) as info:
        TrajectoryReader(tmp_path / "absent.h5")
    assert_one_line_error(info, tmp_path / "absent.h5", "no such file")
    text = tmp_path / "text.h5"
    text.write_text("hello\n")
    with pytest.raises(DataError) as info:
        TrajectoryReader(text)
    assert_one_line_error(info, text, "HDF5")
    real = tmp_path / "real.h5"
    write_trajectories(real, vehicles=range(1, 40), count=60)
    cut = truncated_copy(real, tmp_path / "cut.h5")
    with pytest.raises(DataError) as info:
        TrajectoryReader(cut)
    assert_one_line_error(info, cut, "truncated")
