"""DDP: one step of 2 gloo processes x B/2 windows equals one process on the B windows (torchrun, CPU)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from fm_helpers import train_config

from worldmodel.training.fm import train_fm

pytestmark = pytest.mark.slow  # minutes of CPU: deselect with -m "not slow"


def test_two_processes_take_the_same_step_as_one(micro_data, tmp_path):
    # deterministic model, no dropout: nothing random, so the two runs see the same batch and the same model
    args = ["--data", str(micro_data), "--preset", "tiny", "--mode", "deterministic", "--dropout", "0",
            "--steps", "1", "--batch-size", "8", "--predict-frames", "3", "--lr", "1e-3", "--val-every", "1",
            "--val-windows", "16", "--log-every", "1", "--workers", "0", "--device", "cpu", "--no-progress"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "worldmodel.cli", "train", "fm", "--out", str(tmp_path / "ddp"), *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["step"] == 1  # rank 0 alone prints the summary
    single = train_fm(train_config(micro_data, tmp_path / "one", mode="deterministic", model_overrides={"dropout": 0.0},
                                   steps=1, lr=1e-3, val_every=1, val_windows=16, log_every=1))  # fmt: skip
    ddp_lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [x["split"] for x in ddp_lines] == ["train", "val"]
    assert abs(ddp_lines[0]["loss"] - single["train"]["loss"]) < 1e-6 * single["train"]["loss"]  # mean over ranks
    assert abs(ddp_lines[0]["grad_norm"] - single["train"]["grad_norm"]) < 1e-5 * single["train"]["grad_norm"]
    assert abs(ddp_lines[1]["loss"] - single["val"]["loss"]) < 1e-6 * single["val"]["loss"]  # sharded validation
    a = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)
    assert a["data"]["world_size"] == 2 and len(a["rng"]) == 2
    for name, value in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][name], value, atol=1e-6, rtol=1e-5, msg=name)
    for i, state in b["optimizer"]["state"].items():  # the same gradients went into Adam
        torch.testing.assert_close(a["optimizer"]["state"][i]["exp_avg"], state["exp_avg"], atol=1e-9, rtol=1e-4)
    assert len(b["optimizer"]["state"]) == len(list(b["state_dict"])) - 4  # every parameter stepped (4 buffers)
