"""Checkpoint files (atomic, weights-only) and RNG states; run directories."""

import random

import numpy as np
import pytest
import torch

from worldmodel.nn.checkpointing import load_checkpoint
from worldmodel.nn.saving import capture_rng_state, restore_rng_state, save_checkpoint
from worldmodel.training.run_dir import RunDir


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # a cached gaussian in numpy's state
    path = save_checkpoint({"format": 1, "rng": capture_rng_state()}, tmp_path / "c.pt")
    expected = draws()
    assert draws() != expected  # the generators moved on
    restore_rng_state(load_checkpoint(path)["rng"])
    assert draws() == expected


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = save_checkpoint({"format": 1, "step": 1, "w": torch.ones(2)}, tmp_path / "ck" / "last.pt")
    assert load_checkpoint(path)["step"] == 1

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": 1, "step": 2}, path)
    assert load_checkpoint(path)["step"] == 1  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_load_rejects_what_is_not_a_checkpoint(tmp_path):
    torch.save({"step": 3}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="format-1"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_metrics_are_truncated_to_the_checkpoint_step_on_resume(tmp_path):
    run = RunDir(tmp_path).make()
    for step in (5, 10, 15):
        run.log_metrics({"step": step, "loss": float(step), "bad": float("nan")})
    with run.metrics.open("a") as f:
        f.write('{"step": 20, "lo')  # a line cut by a crash
    run.truncate_metrics(10)
    lines = run.read_metrics()
    assert [line["step"] for line in lines] == [5, 10] and lines[0]["bad"] is None
