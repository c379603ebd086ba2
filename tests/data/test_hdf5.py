"""Shared HDF5 pieces: one-line errors, atomic output, road checks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from data_helpers import assert_one_line_error, make_road

from worldmodel.data.hdf5 import DataError, atomic_output, check_road
from worldmodel.data.trajectories import TrajectoryReader


def test_data_error_is_one_line_value_error(tmp_path):
    error = DataError(tmp_path / "f.h5", "bad\nthings  happen")
    assert isinstance(error, ValueError) and str(error) == f"{tmp_path / 'f.h5'}: bad things happen"


def test_atomic_output_renames_on_success_and_cleans_up_on_error(tmp_path):
    out = tmp_path / "out.h5"
    with atomic_output(out) as tmp:
        assert tmp.parent == tmp_path and tmp != out
        tmp.write_text("done")
        assert not out.exists()
    assert out.read_text() == "done"
    with pytest.raises(KeyError), atomic_output(out) as tmp:
        tmp.write_text("half")
        raise KeyError("interrupted")
    assert out.read_text() == "done" and sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
    with pytest.raises(DataError) as info, atomic_output(tmp_path / "missing" / "x.h5"):
        pass
    assert_one_line_error(info, tmp_path / "missing" / "x.h5", "does not exist")


def test_check_road():
    road = make_road(ramps=1)
    assert check_road(road) == road
    for bad in (
        {**road, "lanes": 0},
        {**road, "lane_width_m": "wide"},
        {k: v for k, v in road.items() if k != "length_m"},
        {**road, "ramps": [{**road["ramps"][0], "lane": 7}]},
        {**road, "section_m": [0.0, np.nan]},
    ):
        with pytest.raises(DataError, match="road"):
            check_road(bad, "f.h5")


def test_frame_gap_on_a_block_boundary_is_found(trajectories_file):
    path, _ = trajectories_file
    with h5py.File(path, "r+") as f:
        f["tracks/frame"][5:31] += 1  # vehicle 1 has rows 0..30: one jump, between rows 4 and 5
    for block_rows in (5, 1 << 20):
        with pytest.raises(DataError) as info:
            TrajectoryReader(path, block_rows=block_rows)
        assert_one_line_error(info, path, "consecutive")
