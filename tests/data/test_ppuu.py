"""PPUU dump import: SI conversion, the state shift, channels, and the restricted unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from data_helpers import assert_one_line_error

from worldmodel.data.episodes import EpisodeReader, split_for_vehicle
from worldmodel.data.hdf5 import DataError
from worldmodel.data.ppuu import M_PER_PX, import_ppuu, load_dump

T, H, W = 6, 12, 8


def ppuu_dump(seed: int, as_torch: bool) -> dict:
    """A PPUU-like dump: the ego rear at x = 100 + 10 t px, lane centre y = 60 px, 100 px/s forward."""
    rng = np.random.default_rng(seed)
    t = np.arange(T, dtype=np.float32)
    states = np.zeros((T, 7, 4), np.float32)
    states[:, :, 0], states[:, :, 1], states[:, :, 2] = (100 + 10 * t)[:, None], 60.0, 100.0
    ego = np.zeros((3, H, W), np.float32)
    ego[:, 4:8, 3:5] = 1.0  # 4 px long, 2 px wide
    dump = {
        "images": rng.integers(0, 256, (T, 3, H, W), dtype=np.uint8),
        "actions": np.column_stack([24.0 * t, 0.01 * t]).astype(np.float32),
        "lane_cost": (0.1 * t).astype(np.float32),
        "pixel_proximity_cost": np.zeros(T, np.float32),
        "proximity_cost": (0.2 * t).astype(np.float32),
        "states": states,
        "frames": np.arange(T) + 1000,
        "ego_car": ego,
    }
    if as_torch:
        dump = {k: torch.from_numpy(v) if k != "frames" else v for k, v in dump.items()}
    return dump


@pytest.mark.parametrize(("as_torch", "protocol"), [(True, 2), (False, 2), (False, pickle.HIGHEST_PROTOCOL)])
def test_round_trip_to_si(tmp_path, as_torch, protocol):
    folder = tmp_path / "dumps"
    folder.mkdir()
    dumps = {v: ppuu_dump(v, as_torch) for v in (4, 11, 2)}
    for v, dump in dumps.items():
        (folder / f"car{v}.pkl").write_bytes(pickle.dumps(dump, protocol=protocol))
    (folder / "notes.txt").write_text("ignored")
    summary = import_ppuu(folder, tmp_path / "e.h5", px_per_m=1.0)
    assert summary["episodes"] == 3 and summary["frames"] == 3 * (T - 1)
    assert summary["splits"]["test"] == sum(split_for_vehicle(v) == 2 for v in dumps)
    with EpisodeReader(tmp_path / "e.h5") as r:
        assert list(r.episodes["vehicle"]) == [2, 4, 11]
        assert r.view == {"height_px": H, "width_px": W, "px_per_m": 1.0}
        ep, raw = r.episode(1), dumps[4]
        raw = {k: np.asarray(v) for k, v in raw.items()}
        assert ep["length"] == pytest.approx(4.0) and ep["width"] == pytest.approx(2.0)
        # row j: image, action, cost of PPUU index j + 1 and PPUU state j (the one-step shift fixed)
        np.testing.assert_array_equal(ep["images"], raw["images"][1:])
        j = np.arange(T - 1)
        np.testing.assert_allclose(ep["states"][:, 0], (100 + 10 * j) * M_PER_PX + 2.0, rtol=1e-6)
        np.testing.assert_allclose(ep["states"][:, 1], 60 * M_PER_PX, rtol=1e-6)
        np.testing.assert_allclose(ep["states"][:, 2:], [[100 * M_PER_PX, 0.0]] * (T - 1), rtol=1e-6)
        np.testing.assert_allclose(ep["actions"][:, 0], 24.0 * (j + 1) * M_PER_PX, rtol=1e-6)
        np.testing.assert_allclose(ep["actions"][:, 1], 0.01 * (j + 1) / M_PER_PX, rtol=1e-5)
        np.testing.assert_allclose(ep["costs"], np.column_stack([0.2 * (j + 1), 0.1 * (j + 1), 0 * j]), atol=1e-6)
        assert ep["ego_mask"].max() == 255 and ep["ego_mask"].sum() == 8 * 255


def test_no_shift_and_old_channels(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    dump = ppuu_dump(0, as_torch=False)
    (folder / "car5.pkl").write_bytes(pickle.dumps(dump))
    import_ppuu(folder, tmp_path / "e.h5", state_shift=False, old_channels=True, px_per_m=1.0)
    with EpisodeReader(tmp_path / "e.h5") as r:
        ep = r.episode(0)
    assert len(ep["images"]) == T
    np.testing.assert_array_equal(ep["images"][:, :2], dump["images"][:, :2])
    assert not ep["images"][:, 2].any()  # PPUU's blue (the ego car) is not our off-road channel
    np.testing.assert_allclose(ep["actions"][:, 0], dump["actions"][:, 0] * M_PER_PX, rtol=1e-6)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "d"
    folder.mkdir()
    dump = ppuu_dump(0, as_torch=False)
    dump["frames"] = _Evil(marker)
    bad = folder / "car1.pkl"
    bad.write_bytes(pickle.dumps(dump))
    with pytest.raises(DataError) as info:
        import_ppuu(folder, tmp_path / "e.h5")
    assert_one_line_error(info, bad, "refused", f"{os.system.__module__}.system")
    assert not marker.exists() and not (tmp_path / "e.h5").exists()
    eval_pickle = tmp_path / "eval.pkl"
    eval_pickle.write_bytes(b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR.")
    with pytest.raises(DataError) as info:
        load_dump(eval_pickle)
    assert_one_line_error(info, eval_pickle, "builtins.eval")
    assert not marker.exists()


def test_bad_dumps(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    with pytest.raises(DataError) as info:
        import_ppuu(folder, tmp_path / "e.h5")
    assert_one_line_error(info, folder, "no car")
    dump = ppuu_dump(0, as_torch=False)
    del dump["proximity_cost"]
    (folder / "car3.pkl").write_bytes(pickle.dumps(dump))
    with pytest.raises(DataError) as info:
        import_ppuu(folder, tmp_path / "e.h5")
    assert_one_line_error(info, folder / "car3.pkl", "missing", "proximity_cost")
    (folder / "car3.pkl").write_bytes(pickle.dumps(ppuu_dump(0, False))[:100])
    with pytest.raises(DataError) as info:
        import_ppuu(folder, tmp_path / "e.h5")
    assert_one_line_error(info, folder / "car3.pkl", "not a readable PPUU dump")
    assert not (tmp_path / "e.h5").exists()
