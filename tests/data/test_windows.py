"""Training windows: contents vs file rows, ego-relative stats, splits, workers, distributed sampling."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from data_helpers import write_episodes
from torch.utils.data import DataLoader, DistributedSampler

from worldmodel.data.episodes import EpisodeReader
from worldmodel.data.windows import WindowConfig, WindowDataset, unit_images

VEHICLES = range(1, 30)  # 22 train, 3 val (22, 28, 29), 4 test


@pytest.fixture(scope="module")
def episodes_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("windows") / "episodes.h5"
    write_episodes(path, vehicles=VEHICLES, count=10)
    return path


def test_windows_equal_file_rows(episodes_path):
    config = WindowConfig(context_frames=3, predict_frames=2, stride=2)
    ds = WindowDataset(episodes_path, config)
    with EpisodeReader(episodes_path) as r:
        train = np.flatnonzero(r.episodes["split"] == 0)
        expected = sum((r.episodes["count"][k] - 5) // 2 + 1 for k in train)
        assert len(ds) == expected
        for i in (0, 1, len(ds) // 2, len(ds) - 1):
            item = ds[i]
            s, e = int(ds.window_starts[i]), int(ds.window_episodes[i])
            start, count = r.episodes["start"][e], r.episodes["count"][e]
            assert start <= s and s + 5 <= start + count
            rows = r.read(s, s + 5)
            t = s + 2  # the last context frame
            np.testing.assert_allclose(item["context_images"].numpy(), rows["images"][:3] / 255, atol=1e-7)
            np.testing.assert_allclose(item["future_images"].numpy(), rows["images"][3:] / 255, atol=1e-7)
            relative = rows["states"].copy()
            relative[:, :2] -= rows["states"][2, :2]
            np.testing.assert_allclose(ds.denormalise_states(item["context_states"]).numpy(), relative[:3], atol=1e-4)
            np.testing.assert_allclose(ds.denormalise_states(item["future_states"]).numpy(), relative[3:], atol=1e-4)
            actions = r.read(t, t + 2, names=("actions",))["actions"]
            np.testing.assert_allclose(ds.denormalise_actions(item["actions"]).numpy(), actions, atol=1e-5)
            np.testing.assert_allclose(item["future_costs"].numpy(), rows["costs"][3:], atol=1e-7)
            np.testing.assert_allclose(item["ego_mask"].numpy(), r.ego_mask(e) / 255, atol=1e-7)
            np.testing.assert_allclose(item["car_size"].numpy(), [r.episodes["length"][e], r.episodes["width"][e]])
            assert all(v.dtype == torch.float32 for v in item.values())
            assert item["context_images"].shape == (3, 3, 12, 8) and item["actions"].shape == (2, 2)


def test_ego_relative_stats_match_a_loop_over_train_windows(episodes_path):
    config = WindowConfig(context_frames=3, predict_frames=2, split="val")
    ds = WindowDataset(episodes_path, config)
    offsets = []
    with EpisodeReader(episodes_path) as r:
        for k in np.flatnonzero(r.episodes["split"] == 0):
            states = r.episode(k)["states"]
            for s in range(len(states) - 4):
                offsets.append(states[s : s + 5, :2] - states[s + 2, :2])
        offsets = np.concatenate(offsets).astype(np.float64)
        np.testing.assert_allclose(ds.stats["state_mean"][:2].numpy(), offsets.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ds.stats["state_std"][:2].numpy(), offsets.std(0), rtol=1e-5)
        np.testing.assert_allclose(ds.stats["state_mean"][2:].numpy(), r.stats["state_mean"][2:])
        absolute = WindowDataset(episodes_path, WindowConfig(context_frames=3, predict_frames=2, ego_relative=False))
        for name, values in r.stats.items():
            np.testing.assert_allclose(absolute.stats[name].numpy(), values)


def test_splits_are_disjoint_by_vehicle(episodes_path):
    vehicles = {}
    for split in ("train", "val", "test"):
        ds = WindowDataset(episodes_path, WindowConfig(context_frames=3, predict_frames=2, split=split))
        assert len(ds) > 0
        vehicles[split] = set(ds.episodes["vehicle"][ds.window_episodes].tolist())
    assert vehicles["val"] == {22, 28, 29} and vehicles["test"] == {4, 13, 16, 20}
    assert not vehicles["train"] & (vehicles["val"] | vehicles["test"])
    assert vehicles["train"] | vehicles["val"] | vehicles["test"] == set(VEHICLES)


def test_dataloader_with_two_workers(episodes_path):
    ds = WindowDataset(episodes_path, WindowConfig(context_frames=3, predict_frames=2))
    ds[0]  # opens a handle in this process: workers must not reuse it
    pickle.dumps(ds)  # spawn-style workers receive the dataset pickled, without the handle
    loader = DataLoader(ds, batch_size=16, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(b["actions"]) for b in batches) == len(ds)
    np.testing.assert_array_equal(batches[-1]["future_states"][-1].numpy(), ds[len(ds) - 1]["future_states"].numpy())
    ds.close()


def test_distributed_sampler_partitions_windows(episodes_path):
    ds = WindowDataset(episodes_path, WindowConfig(context_frames=3, predict_frames=2))
    parts = [list(DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)) for rank in (0, 1)]
    assert len(parts[0]) == len(parts[1]) and set(parts[0]) | set(parts[1]) == set(range(len(ds)))


def test_uint8_windows_are_the_stored_bytes_and_unit_images_gives_the_float_items(episodes_path):
    config = WindowConfig(context_frames=3, predict_frames=2, stride=2)
    floats, raw = (
        WindowDataset(episodes_path, config),
        WindowDataset(episodes_path, replace(config, image_dtype="uint8")),
    )
    first, second = raw[0], raw[1]
    assert first["context_images"].dtype == torch.uint8 and first["future_images"].shape == (2, 3, 12, 8)
    with EpisodeReader(episodes_path) as r:
        s = int(raw.window_starts[0])
        np.testing.assert_array_equal(first["context_images"].numpy(), r.read(s, s + 3)["images"])
    assert not np.shares_memory(first["context_images"].numpy(), second["context_images"].numpy())  # not reused
    batch = next(iter(DataLoader(raw, batch_size=4)))
    expected = next(iter(DataLoader(floats, batch_size=4)))
    converted = unit_images(batch)
    for key, value in expected.items():
        assert converted[key].dtype == torch.float32
        assert torch.equal(converted[key], value), key  # bit for bit
    assert unit_images(expected)["context_images"] is expected["context_images"]  # float images pass through


def test_config_is_validated():
    with pytest.raises(ValueError, match="image_dtype"):
        WindowConfig(image_dtype="float16")
    with pytest.raises(ValueError, match="split"):
        WindowConfig(split="training")
    with pytest.raises(ValueError, match="stride"):
        WindowConfig(stride=0)
