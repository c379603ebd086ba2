"""episodes.h5: round trip, streaming stats, splits, compression, and bad-input cases."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from data_helpers import VIEW, assert_one_line_error, make_road, sparse_views, truncated_copy, write_episodes

from worldmodel.data.episodes import (
    IMAGE_CHUNK_FRAMES,
    EpisodeReader,
    EpisodeWriter,
    RunningMoments,
    split_for_vehicle,
)
from worldmodel.data.hdf5 import DataError


def test_round_trip(episodes_file):
    path, written = episodes_file
    with EpisodeReader(path) as r:
        assert r.num_episodes == len(written)
        assert r.num_frames == sum(len(ep["images"]) for ep in written.values())
        assert r.view["height_px"] == 12 and r.costs == {"safe_time_s": 1.5} and r.road == make_road()
        for k, (v, ep) in enumerate(written.items()):
            got = r.episode(k)
            assert got["vehicle"] == v and got["split"] == ep["split"]
            assert got["length"] == pytest.approx(4.0 + 0.01 * v)
            np.testing.assert_array_equal(got["images"], ep["images"])
            np.testing.assert_array_equal(got["ego_mask"], ep["ego_mask"])
            for name in ("states", "actions", "costs"):
                np.testing.assert_allclose(got[name], ep[name], rtol=1e-6, err_msg=name)


def test_stats_are_train_split_moments(episodes_file):
    path, written = episodes_file
    train = [ep for ep in written.values() if ep["split"] == 0]
    assert train and len(train) < len(written)  # the fixture has episodes outside train
    states = np.concatenate([ep["states"] for ep in train])
    actions = np.concatenate([ep["actions"] for ep in train])
    with EpisodeReader(path) as r:
        np.testing.assert_allclose(r.stats["state_mean"], states.mean(0), rtol=1e-5)
        std = states.std(0)
        np.testing.assert_allclose(r.stats["state_std"], np.where(std < 1e-6, 1, std), rtol=1e-5)
        np.testing.assert_allclose(r.stats["action_std"], actions.std(0), rtol=1e-5)


def test_running_moments_merge_equals_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(1000.0, 3.0, (1000, 3))
    m = RunningMoments(3)
    for part in np.array_split(data, [1, 7, 300, 301]):
        m.add(part)
    np.testing.assert_allclose(m.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.std(), data.std(0), rtol=1e-9)


def test_split_for_vehicle_is_stable_and_80_10_10():
    splits = np.array([split_for_vehicle(v) for v in range(20000)])
    fractions = np.bincount(splits, minlength=3) / len(splits)
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.01)
    # golden values: the hash must never change, or datasets would silently change splits
    assert [split_for_vehicle(v) for v in range(12)] == [2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    assert [split_for_vehicle(v, seed=1) for v in range(12)] != [split_for_vehicle(v) for v in range(12)]


def test_sparse_views_compress_below_budget(tmp_path):
    """<= 1,750 bytes per car-frame on anti-aliased sparse traffic views (blosc lz4hc 5, 16-frame chunks)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "e.h5"
    n = 0
    with EpisodeWriter(path, make_road(), "test", VIEW, {}) as w:
        for v in range(6):
            images = sparse_views(int(rng.integers(100, 160)), rng)
            t = len(images)
            n += t
            states = np.column_stack([np.cumsum(rng.uniform(0, 1, t)), rng.normal(5, 1, t), rng.normal(8, 2, (t, 2))])
            w.add_episode(
                v,
                4.5,
                1.8,
                0,
                images,
                states,
                rng.normal(0, 1, (t, 2)),
                rng.uniform(0, 1, (t, 3)),
                images[0, 1],
            )
    per_frame = path.stat().st_size / n
    assert per_frame <= 1750, per_frame
    with h5py.File(path) as f:
        assert (
            f["images"].chunks[0] == IMAGE_CHUNK_FRAMES and f["images"].id.get_create_plist().get_filter(0)[0] == 32001
        )


def test_writer_refuses_bad_episodes_and_leaves_no_file(tmp_path):
    path = tmp_path / "e.h5"
    view = {"height_px": 4, "width_px": 3, "px_per_m": 1.0}
    good = {
        "images": np.zeros((5, 3, 4, 3), np.uint8),
        "states": np.zeros((5, 4)),
        "actions": np.zeros((5, 2)),
        "costs": np.zeros((5, 3)),
        "ego_mask": np.zeros((4, 3), np.uint8),
    }
    for bad, words in [
        ({"images": np.zeros((5, 3, 4, 3), np.float32)}, ["uint8"]),
        ({"states": np.full((5, 4), np.nan)}, ["states", "NaN"]),
        ({"actions": np.zeros((4, 2))}, ["actions"]),
    ]:
        with pytest.raises(DataError) as info, EpisodeWriter(path, make_road(), "t", view, {}) as w:
            w.add_episode(1, 4.0, 1.8, 0, **{**good, **bad})
        assert_one_line_error(info, path, *words)
        assert list(tmp_path.iterdir()) == []


def _rewrite(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda f: f.attrs.__setitem__("version", 7), ["version 7"]),
        (lambda f: f.attrs.__setitem__("format", "worldmodel.trajectories"), ["format"]),
        (lambda f: f.__delitem__("costs"), ["missing dataset /costs"]),
        (lambda f: f.__delitem__("stats/action_std"), ["/stats/action_std"]),
        (lambda f: f["states"].__setitem__(7, [np.nan, 0, 0, 0]), ["/states", "NaN"]),
        (lambda f: _rewrite(f, "actions", np.zeros((3, 2), np.float32)), ["/actions", "rows"]),
        (lambda f: _rewrite(f, "images", np.zeros((3, 3, 12, 8), np.float32)), ["/images", "dtype"]),
        (lambda f: f["episodes/split"].__setitem__(0, 5), ["split"]),
        (lambda f: f["episodes/vehicle"].__setitem__(slice(0, 2), [3, 3]), ["two splits"]),
    ],
)
def test_reader_refuses_bad_files(tmp_path, edit, words):
    path = tmp_path / "e.h5"
    written = write_episodes(path, vehicles=[1, 2, 3, 4, 5])  # 4 is in test, the others in train
    assert written[4]["split"] != written[1]["split"]
    if "two splits" in words:  # make the first two episodes the same vehicle in different splits
        with h5py.File(path, "r+") as f:
            f["episodes/split"][0:2] = [0, 2]
    with h5py.File(path, "r+") as f:
        edit(f)
    with pytest.raises(DataError) as info:
        EpisodeReader(path)
    assert_one_line_error(info, path, *words)


def test_reader_refuses_truncated_and_non_hdf5(tmp_path):
    real = tmp_path / "real.h5"
    write_episodes(real, vehicles=range(1, 30), count=40)
    cut = truncated_copy(real, tmp_path / "cut.h5")
    with pytest.raises(DataError) as info:
        EpisodeReader(cut)
    assert_one_line_error(info, cut, "truncated")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError) as info:
        EpisodeReader(junk)
    assert_one_line_error(info, junk, "HDF5")
