"""``metrics.jsonl`` after an interrupted run: a fresh start (no checkpoint) rewrites it, a resume drops the
lines logged after the checkpoint's step; no step is ever logged twice."""

from __future__ import annotations

import json

from fm_helpers import train_config

from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.saving import save_checkpoint
from worldmodel.training.fm import train_fm
from worldmodel.training.policy import TrainPolicyConfig, train_policy
from worldmodel.training.run_dir import RunDir


def logged(run) -> list[tuple[int, str]]:
    return [(line["step"], line["split"]) for line in RunDir(run).read_metrics()]


def killed_before_first_checkpoint(run, steps=(1, 2, 3)) -> None:
    """What a run killed after logging ``steps`` but before writing ``last.pt`` leaves behind."""
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "split": "train"}) + "\n" for s in steps))


def test_truncating_to_step_0_drops_every_line(tmp_path):
    run = RunDir(tmp_path).make()
    for step in (1, 2):
        run.log_metrics({"step": step, "split": "train"})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('"not an object"\n{"step": "x"}\n')
    run.truncate_metrics(0)
    assert run.read_metrics() == [] and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "metrics.jsonl"]


def test_fm_fresh_start_after_a_killed_run_logs_each_step_once(tmp_path, micro_data):
    run = tmp_path / "run"
    killed_before_first_checkpoint(run)
    train_fm(train_config(micro_data, run, mode="deterministic", steps=2, val_every=0, ckpt_every=2, log_every=1))
    assert logged(run) == [(1, "train"), (2, "train")]


def test_fm_resume_drops_the_lines_after_the_checkpoint(tmp_path, micro_data):
    run = tmp_path / "run"
    kwargs = dict(mode="deterministic", val_every=0, ckpt_every=2, log_every=1)
    train_fm(train_config(micro_data, run, steps=2, **kwargs))
    RunDir(run).log_metrics({"step": 3, "split": "train"})  # logged, then killed before the next checkpoint
    summary = train_fm(train_config(micro_data, run, steps=3, **kwargs))
    assert summary["resumed_from"] == 2 and logged(run) == [(1, "train"), (2, "train"), (3, "train")]


def test_policy_fresh_start_after_a_killed_run_logs_each_step_once(tmp_path, micro_data):
    fm = ForwardModel(ForwardModelConfig.tiny("deterministic"))
    fm_path = save_checkpoint(fm.checkpoint_dict(step=0), tmp_path / "fm.pt")
    run = tmp_path / "policy"
    killed_before_first_checkpoint(run)
    config = TrainPolicyConfig(data=str(micro_data), fm=str(fm_path), out=str(run), method="il", steps=2,
                               batch_size=4, val_every=0, log_every=1, ckpt_every=2, workers=0, device="cpu",
                               progress=False)  # fmt: skip
    train_policy(config)
    assert logged(run) == [(1, "train"), (2, "train")]
