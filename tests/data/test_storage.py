"""Storage of episodes.h5 (blosc lz4hc images, version 2; gzip version-1 files), and the fast window path:
windows equal a plain loop over h5py reads, bit for bit, whatever the compression."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from data_helpers import SMALL_VIEW, assert_one_line_error, make_road, write_episodes

from worldmodel.data import hdf5
from worldmodel.data.episodes import IMAGE_CHUNK_FRAMES, VERSION, EpisodeReader, EpisodeWriter
from worldmodel.data.extract import ExtractConfig, read_images, render_shard
from worldmodel.data.hdf5 import DataError
from worldmodel.data.inspect import inspect_file
from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.traffic.view import ViewSpec

VEHICLES = range(1, 16)
BLOSC, LZ4HC = 32001, 2  # HDF5 filter id of blosc; blosc's code of lz4hc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same episodes written as version 2 (lz4hc) and as a version-1 file (gzip)."""
    folder = tmp_path_factory.mktemp("storage")
    new, old = folder / "lz4hc.h5", folder / "gzip-v1.h5"
    write_episodes(new, vehicles=VEHICLES, count=30)
    write_episodes(old, vehicles=VEHICLES, count=30, compression="gzip", compression_level=1)
    with h5py.File(old, "r+") as f:
        f.attrs["version"] = np.int64(1)
    return new, old


def plain_item(path, ds: WindowDataset, index: int) -> dict[str, torch.Tensor]:
    """A window the plain way: an h5py read per dataset, torch arithmetic (the reference)."""
    c = ds.config
    s, e = int(ds.window_starts[index]), int(ds.window_episodes[index])
    t = s + c.context_frames - 1
    with h5py.File(path, "r") as f:
        images = torch.from_numpy(f["images"][s : s + c.window_frames]).to(torch.float32).mul_(1.0 / 255.0)
        states = torch.from_numpy(f["states"][s : s + c.window_frames])
        actions = torch.from_numpy(f["actions"][t : t + c.predict_frames])
        costs = torch.from_numpy(f["costs"][t + 1 : t + 1 + c.predict_frames])
        ego = torch.from_numpy(f["ego"][e]).float().div_(255.0)
    if c.ego_relative:
        states[:, :2] -= states[c.context_frames - 1, :2].clone()
    states = (states - ds.stats["state_mean"]) / ds.stats["state_std"]
    return {
        "context_images": images[: c.context_frames],
        "context_states": states[: c.context_frames],
        "actions": (actions - ds.stats["action_mean"]) / ds.stats["action_std"],
        "future_images": images[c.context_frames :],
        "future_states": states[c.context_frames :],
        "future_costs": costs,
        "car_size": torch.tensor([ds.episodes["length"][e], ds.episodes["width"][e]], dtype=torch.float32),
        "ego_mask": ego,
    }


def test_images_are_lz4hc_in_16_frame_chunks_and_read_back_exactly(files):
    new, old = files
    with h5py.File(new) as f:
        code, _, values, _ = f["images"].id.get_create_plist().get_filter(0)
        assert code == BLOSC and values[4:] == (5, 0, LZ4HC)  # level 5, no shuffle, lz4hc
        assert f["images"].chunks[0] == IMAGE_CHUNK_FRAMES and f.attrs["version"] == VERSION == 2
    with EpisodeReader(new) as a, EpisodeReader(old) as b:
        assert (a.version, b.version) == (2, 1)
        for name, values in a.read(0, a.num_frames).items():
            np.testing.assert_array_equal(values, b.read(0, b.num_frames)[name], err_msg=name)
    assert inspect_file(old)["version"] == 1 and inspect_file(new)["version"] == 2


@pytest.mark.parametrize(
    "config",
    [WindowConfig(context_frames=4, predict_frames=3), WindowConfig(3, 5, ego_relative=False, split="test", stride=2)],
)
def test_windows_are_bit_identical_to_a_plain_loop_in_both_versions(files, config):
    new, old = files
    datasets = [WindowDataset(new, config), WindowDataset(old, config)]
    assert len(datasets[0]) == len(datasets[1]) > 10
    for index in [0, 1, 7, len(datasets[0]) // 2, len(datasets[0]) - 1, 3]:
        want = plain_item(old, datasets[1], index)
        for ds in datasets:
            got = ds[index]
            assert list(got) == list(want)
            for key, value in want.items():
                assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
                assert torch.equal(got[key], value), key
    first = datasets[0][0]["context_images"].clone()
    datasets[0][len(datasets[0]) - 1]  # the next read reuses the uint8 buffer, never a returned tensor
    assert torch.equal(datasets[0][0]["context_images"], first)


def test_row_reader_reads_any_start_and_refuses_past_the_end(files):
    new, _ = files
    with h5py.File(new) as f, EpisodeReader(new) as r:
        rows = hdf5.RowReader(f["images"], 5, new)
        for start in (0, 13, r.num_frames - 5):
            np.testing.assert_array_equal(rows.read(start), r.read(start, start + 5)["images"])
        for start in (-1, r.num_frames - 4):
            with pytest.raises(DataError) as info:
                rows.read(start)
            assert_one_line_error(info, new, "/images", "do not exist")


def test_unknown_compression_missing_plugin_and_new_versions_are_one_line_errors(files, tmp_path, monkeypatch):
    new, _ = files
    out = tmp_path / "e.h5"
    with pytest.raises(DataError) as info:
        EpisodeWriter(out, make_road(), "t", SMALL_VIEW, {}, compression="zip")
    assert_one_line_error(info, out, "unknown compression 'zip'", "gzip", "lz4hc")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(hdf5, "register_filters", lambda: False)  # as without the hdf5plugin package
    with pytest.raises(DataError) as info:
        EpisodeWriter(out, make_road(), "t", SMALL_VIEW, {})
    assert_one_line_error(info, out, "lz4hc", "pip install hdf5plugin")
    with h5py.File(new) as f:
        error = hdf5.read_error(f["images"], new, OSError("required filter 'blosc' is not registered"))
    assert "\n" not in str(error) and str(new) in str(error) and "pip install hdf5plugin" in str(error)
    monkeypatch.undo()
    future = tmp_path / "v3.h5"
    future.write_bytes(new.read_bytes())
    with h5py.File(future, "r+") as f:
        f.attrs["version"] = np.int64(3)
    with pytest.raises(DataError) as info:
        WindowDataset(future, WindowConfig.tiny())
    assert_one_line_error(info, future, "version 3", "reads 1 and 2")


def test_render_shard_spills_images_to_a_file_or_keeps_them(recorded_tiny, tmp_path):
    traj, first, last, lo, hi = recorded_tiny
    config = ExtractConfig(view=ViewSpec(height_px=24, width_px=8), progress=False)
    kept = render_shard(str(traj), lo, hi, first, last, config)
    spilled = render_shard(str(traj), lo, hi, first, last, config, spill=str(tmp_path))
    unwritable = render_shard(str(traj), lo, hi, first, last, config, spill=str(tmp_path / "missing"))
    assert isinstance(spilled["images"], str) and isinstance(unwritable["images"], np.ndarray)
    np.testing.assert_array_equal(read_images(spilled, config.view), kept["images"])
    np.testing.assert_array_equal(unwritable["images"], kept["images"])
    assert list(tmp_path.iterdir()) == []  # read back once, then deleted
    for name in ("vehicles", "cuts", "states", "actions", "costs"):
        np.testing.assert_array_equal(spilled[name], kept[name], err_msg=name)
    assert kept["cuts"][-1] == len(kept["states"]) and len(kept["vehicles"]) == len(kept["cuts"]) - 1 > 1


@pytest.fixture(scope="module")
def recorded_tiny(tmp_path_factory):
    from worldmodel.data.extract import _vehicle_frames
    from worldmodel.data.record import RecordConfig, record
    from worldmodel.data.trajectories import TrajectoryReader

    traj = tmp_path_factory.mktemp("spill") / "trajectories.h5"
    record(RecordConfig(scenario="tiny", minutes=0.1, warmup_s=10.0, seed=1, progress=False), traj)
    with TrajectoryReader(traj) as r:
        first, last = _vehicle_frames(r)
        lo = r.frame_range[0]
    return traj, first, last, lo, lo + 20
