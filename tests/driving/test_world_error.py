"""Offline comparison of the world providers (``eval worlds``) on micro driving datasets."""

import json
import math
from pathlib import Path

import pytest
import torch
from evaluation import driving_helpers  # tests/evaluation/driving_helpers.py

from worldmodel.cli import main
from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving.world_error import WorldErrorConfig, compare_worlds
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.saving import save_checkpoint

HORIZON = 10


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """Two 20 s recordings of the tiny scenario and their episodes (6 test cars)."""
    return driving_helpers.make_driving_dataset(tmp_path_factory.mktemp("worlds") / "micro", seconds=20.0)


@pytest.fixture(scope="module")
def cruising(tmp_path_factory):
    """A hand-written recording of two cars 25 m apart in one lane at a constant 10 m/s, and its episodes."""
    folder = tmp_path_factory.mktemp("cruising")
    path = driving_helpers.write_braking_leader(folder / "trajectories-0.h5", brake_at_s=1e6, frames=80)
    extract([path], folder / "episodes.h5", ExtractConfig(progress=False))
    return folder


@pytest.fixture(scope="module")
def fm_checkpoint(traffic, tmp_path_factory):
    """An untrained tiny forward model (4 context frames) with the dataset's statistics."""
    torch.manual_seed(0)
    model = ForwardModel(ForwardModelConfig.tiny("vae"))
    model.set_normalisation(WindowDataset(traffic / "episodes.h5", WindowConfig(4, HORIZON)).stats)
    path = tmp_path_factory.mktemp("fm") / "fm.pt"
    return save_checkpoint(model.checkpoint_dict(0, train_config={"ego_relative": True}), path)


def compare(data, **kw):
    config = WorldErrorConfig(**({"data": str(data), "windows": 24, "horizon": HORIZON, "context_frames": 4,
                                  "progress": False} | kw))  # fmt: skip
    return compare_worlds(config)


@pytest.fixture(scope="module")
def result(traffic):
    return compare(traffic)


def test_the_rendered_oracle_reproduces_the_stored_views(result):
    check = result["render_check"]
    assert check["vehicles_mse"] < 1e-4  # a few edge pixels beside the ego (see the module docstring)
    assert check["vehicles_mse"] < 0.05 * result["summary"]["cv"]["vehicles_mse"]
    assert check["proximity_abs_error"] < 0.01
    assert len(check["per_step"]["vehicles_mse"]) == HORIZON


def test_cv_errors_grow_with_the_horizon_and_beat_copying_the_last_frame(result):
    cv = result["per_step"]["cv"]["vehicles_mse"]
    assert len(cv) == HORIZON and cv[0] < cv[-1]
    assert result["summary"]["cv"]["vehicles_mse"] < result["summary"]["copy_last"]["vehicles_mse"]
    assert result["summary"]["cv"]["vehicles_mse"] == pytest.approx(sum(cv) / HORIZON)
    assert result["per_step"]["copy_last"]["vehicles_mse"][0] > 0
    assert "model" not in result["per_step"]
    assert result["protocol"]["windows_evaluated"] == 24 and result["oracle_proximity_mean"] > 0


def test_cv_is_the_oracle_when_every_car_keeps_its_speed(cruising):
    out = compare(cruising, split=_split_with_windows(cruising), windows=10)
    cv, oracle = out["per_step"]["cv"], out["render_check"]["per_step"]
    for metric in ("vehicles_mse", "proximity_abs_error"):
        assert cv[metric] == pytest.approx(oracle[metric], abs=1e-7)  # the same rendering, the same error
    assert out["summary"]["cv"]["vehicles_mse"] < 1e-9  # one lane: the stored views are rendered exactly
    assert out["summary"]["copy_last"]["vehicles_mse"] > 1e-6  # same gap, but the sub-pixel phase moves


def _split_with_windows(data: Path) -> str:
    for split in ("test", "val", "train"):
        if len(WindowDataset(data / "episodes.h5", WindowConfig(4, HORIZON, False, split))):
            return split
    raise AssertionError("no split with windows")


def test_the_model_world_is_scored_on_the_same_windows(traffic, fm_checkpoint):
    out = compare(traffic, fm=str(fm_checkpoint), context_frames=None, windows=6)
    model = out["per_step"]["model"]
    for metric in ("vehicles_mse", "proximity_abs_error"):
        assert len(model[metric]) == HORIZON and all(math.isfinite(e) for e in model[metric])
    assert out["protocol"]["context_frames"] == 4 and out["protocol"]["checkpoint_step"] == 0
    without = compare(traffic, windows=6)
    for metric, errors in without["per_step"]["cv"].items():  # the same windows as without a model
        assert out["per_step"]["cv"][metric] == pytest.approx(errors)
    with pytest.raises(ValueError, match="takes 4"):
        compare(traffic, fm=str(fm_checkpoint), context_frames=5)


def test_cli_writes_the_json(traffic, tmp_path, capsys):
    out = tmp_path / "runs" / "worlds.json"
    rc = main(["eval", "worlds", "--data", str(traffic), "--windows", "5", "--horizon", "3", "--context-frames",
               "4", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    assert printed["summary"] == written["summary"] and set(written["per_step"]) == {"cv", "copy_last"}
    assert len(written["per_step"]["cv"]["vehicles_mse"]) == 3


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["eval", "worlds", "--data", str(tmp_path / "missing"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such dataset directory" in err[0]
