"""Every damaged checkpoint is one ``CheckpointError`` line (file, what is wrong, what to do), exit code 1 in
the CLI, wherever it is read: ``eval fm --checkpoint``, ``train fm --warm-start``, ``train policy --fm``,
``last.pt`` on resume. No pickled object of a file is ever run (``weights_only=True``)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from fm_helpers import train_config

from worldmodel.cli import main
from worldmodel.nn.checkpointing import CheckpointError, load_checkpoint
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.saving import save_checkpoint
from worldmodel.training.fm import train_fm


class Payload:
    """A pickle that would create the directory ``marker`` if it were ever unpickled unsafely."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _config(ckpt: dict, **changes) -> dict:
    config = {**ckpt["config"], **changes}
    return {**ckpt, "config": {k: v for k, v in config.items() if v is not None}}


def _weights(ckpt: dict, drop: int = 0, **changes) -> dict:
    state = dict(list(ckpt["state_dict"].items())[drop:]) | changes
    return {**ckpt, "state_dict": state}


#: name -> (write the bad file at path from a good checkpoint dict, words of the message)
CASES = {
    "truncated": (lambda p, c, good: p.write_bytes(good[: len(good) // 2]), ["truncated"]),
    "empty": (lambda p, c, good: p.write_bytes(b""), ["empty"]),
    "random bytes": (lambda p, c, good: p.write_bytes(np.random.default_rng(0).bytes(4096)), ["not a torch"]),
    "malicious torch file": (
        lambda p, c, good: torch.save({**c, "x": Payload(str(p) + ".pwned")}, p),
        ["refused", "posix.mkdir"],
    ),
    "malicious pickle": (lambda p, c, good: p.write_bytes(pickle.dumps(Payload(str(p) + ".pwned"))), ["not a torch"]),
    "not a dict": (lambda p, c, good: torch.save([1, 2], p), ["not a format-1"]),
    "no format": (lambda p, c, good: torch.save({"step": 3}, p), ["not a format-1"]),
    "wrong kind": (lambda p, c, good: torch.save({**c, "kind": "policy"}, p), ["kind"]),
    "no config": (lambda p, c, good: torch.save({k: v for k, v in c.items() if k != "config"}, p), ["config"]),
    "config missing key": (lambda p, c, good: torch.save(_config(c, backbone=None), p), ["'backbone'"]),
    "config invalid value": (lambda p, c, good: torch.save(_config(c, mode="bogus"), p), ["invalid config", "mode"]),
    "config unknown key": (lambda p, c, good: torch.save(_config(c, colour=1), p), ["invalid config", "colour"]),
    "weights of another config": (lambda p, c, good: torch.save(_config(c, mode="vae"), p), ["do not fit", "missing"]),
    "weights missing": (lambda p, c, good: torch.save(_weights(c, drop=1), p), ["do not fit", "1 missing"]),
    "weights of another shape": (
        lambda p, c, good: torch.save(_weights(c, state_mean=torch.zeros(7)), p),
        ["another shape", "state_mean"],
    ),
    "weights not tensors": (lambda p, c, good: torch.save(_weights(c, state_mean=[0.0]), p), ["state_dict"]),
    "missing file": (lambda p, c, good: None, ["no such"]),
    "directory": (lambda p, c, good: p.mkdir(), ["directory"]),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[dict, bytes]:
    """A tiny deterministic forward model's checkpoint: (dict, file bytes)."""
    ckpt = ForwardModel(ForwardModelConfig.tiny("deterministic")).checkpoint_dict(step=3)
    path = save_checkpoint(ckpt, tmp_path_factory.mktemp("good") / "good.pt")
    return ckpt, path.read_bytes()


def bad_file(path, case: str, good: tuple[dict, bytes]):
    CASES[case][0](path, *good)
    return path


def assert_one_line(message: str, path, *words: str) -> None:
    assert "\n" not in message.strip() and str(path) in message, message
    for word in words:
        assert word.lower() in message.lower(), message


@pytest.mark.parametrize("case", list(CASES))
def test_every_bad_checkpoint_is_one_checkpoint_error(tmp_path, case, good):
    path = bad_file(tmp_path / "bad.pt", case, good)
    with pytest.raises(CheckpointError) as info:
        ForwardModel.from_checkpoint(path)
    assert_one_line(str(info.value), path, *CASES[case][1], "worldmodel train fm")
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "bad.pt.pwned").exists()  # the payload never ran


def test_loading_never_runs_a_pickled_object(tmp_path, good):
    for case in ("malicious torch file", "malicious pickle"):
        path = bad_file(tmp_path / f"{case}.pt", case, good)
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
        with pytest.raises(CheckpointError):
            ForwardModel(ForwardModelConfig.tiny("deterministic")).load_deterministic(path)
        assert not os.path.exists(str(path) + ".pwned")


@pytest.mark.parametrize("case", list(CASES))
def test_eval_fm_prints_one_line_and_exits_1(tmp_path, case, good, capsys):
    path = bad_file(tmp_path / "bad.pt", case, good)
    rc = main(["eval", "fm", "--checkpoint", str(path), "--data", str(tmp_path / "x.h5"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert_one_line(err, path, *CASES[case][1])


FM_ARGS = ["--preset", "tiny", "--steps", "1", "--batch-size", "4", "--predict-frames", "2", "--workers", "0",
           "--val-every", "0", "--device", "cpu", "--no-progress"]  # fmt: skip
SOME = ["truncated", "malicious torch file", "config missing key", "weights of another config"]


@pytest.mark.parametrize("case", SOME)
def test_warm_start_and_policy_fm_print_one_line_and_exit_1(tmp_path, case, good, micro_data, capsys):
    path = bad_file(tmp_path / "bad.pt", case, good)
    for argv in (["train", "fm", "--data", str(micro_data), "--out", str(tmp_path / "run"), "--warm-start", str(path),
                  *FM_ARGS],
                 ["train", "policy", "--fm", str(path), "--data", str(micro_data), "--out", str(tmp_path / "p"),
                  "--steps", "1", "--device", "cpu", "--no-progress"]):  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert_one_line(err, path, *CASES[case][1], "worldmodel train fm")
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_a_damaged_last_pt_says_to_copy_best_pt_or_pass_no_resume(tmp_path, good, micro_data, capsys):
    run = tmp_path / "run"
    train_fm(train_config(micro_data, run, mode="deterministic", steps=2, val_every=2, ckpt_every=2, log_every=1))
    last, best = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    argv = ["train", "fm", "--data", str(micro_data), "--out", str(run), "--mode", "deterministic", *FM_ARGS]
    argv[argv.index("--steps") + 1] = "3"
    saved = torch.load(last, weights_only=True)
    damaged = {
        **{case: None for case in ("truncated", "random bytes", "empty", "malicious torch file", "config missing key")},
        "optimizer": {**saved, "optimizer": {"state": {}, "param_groups": []}},
        "data position": {**saved, "data": {"batch": 0}},
    }
    for case, ckpt in damaged.items():
        if ckpt is None:
            bad_file(last, case, good)
        else:
            torch.save(ckpt, last)
        assert main(argv) == 1, case
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert_one_line(err, last, f"copy {best} over it", "--no-resume")
    best.unlink()
    bad_file(last, "truncated", good)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "--no-resume" in err and "best.pt" not in err


def test_best_pt_copied_over_last_pt_resumes_its_weights_and_step(tmp_path, micro_data):
    run = tmp_path / "run"
    config = train_config(micro_data, run, mode="deterministic", steps=2, val_every=2, ckpt_every=2, log_every=1)
    train_fm(config)
    shutil.copy(run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt")
    summary = train_fm(train_config(micro_data, run, mode="deterministic", steps=3, val_every=2, log_every=1))
    assert summary["resumed_from"] == 2 and summary["step"] == 3
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2, 3, 3]  # train 1, 2, val 2, then train 3 and the final val 3
