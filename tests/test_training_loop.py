"""The one training loop (``worldmodel.training.loop``) on a task of seconds: the NaN guard, resume, metrics
cut on restart, best.pt, old checkpoint layouts; and the SSL task, which now stops on repeated NaNs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

import pytest
import torch
from torch import nn

from worldmodel.nn.checkpointing import load_weights
from worldmodel.nn.distributed import DistContext
from worldmodel.nn.saving import save_checkpoint, seed_everything
from worldmodel.training.loop import LoopConfig, Task, TrainingError, TrainingLoop, evenly_spaced, reduce_terms
from worldmodel.training.run_dir import RunDir


@dataclass(frozen=True)
class LineConfig:
    loop: LoopConfig

    def to_dict(self) -> dict:
        return asdict(self.loop)


class LineTask(Task):
    """Fit y = 1 x0 - 2 x1 + 0.5 with noise from the global RNG and from a generator of the task's own (so
    that an exact resume needs both restored); ``poison``: steps whose loss is NaN."""

    kind = "line"
    name = "line"

    def __init__(self, config: LoopConfig, poison: frozenset[int] = frozenset()) -> None:
        self.config, self.poison = LineConfig(config), poison
        x = torch.linspace(-1, 1, 48).reshape(24, 2)  # [24, 2]
        y = x @ torch.tensor([1.0, -2.0]) + 0.5  # [24]
        self.train_set = [{"x": x[i], "y": y[i]} for i in range(len(x))]
        seed_everything(config.seed)
        self.model = nn.Linear(2, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.noise = torch.Generator().manual_seed(123)
        self.best = math.inf
        self.loop = TrainingLoop(self, config, DistContext())

    def train_step(self, batch, step):
        pred = self.model(batch["x"]).squeeze(-1)  # [B]
        target = batch["y"] + 0.01 * torch.randn(len(pred)) + 0.01 * torch.randn(len(pred), generator=self.noise)
        loss = (pred - target).pow(2).mean()
        if step in self.poison:
            loss = loss * float("nan")
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), 1e6)
        out, finite = reduce_terms({"loss": loss}, grad_norm, DistContext())
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return out, finite

    def validate(self, step):
        with torch.no_grad():
            x = torch.stack([b["x"] for b in self.train_set])
            y = torch.stack([b["y"] for b in self.train_set])
            return {"loss": float((self.model(x).squeeze(-1) - y).pow(2).mean())}

    def improved(self, val):
        better = val["loss"] < self.best
        self.best = min(self.best, val["loss"])
        return better

    def checkpoint(self, step, **extra):
        return {"format": 1, "kind": "line", "config": self.config.to_dict(), "state_dict": self.model.state_dict(),
                "step": step, **extra}  # fmt: skip

    def load_weights(self, ckpt, path, advice):
        load_weights(self.model, ckpt["state_dict"], path, advice)

    def generators(self):
        return {"noise": self.noise}


def loop_config(out, **overrides) -> LoopConfig:
    kwargs = dict(out=str(out), steps=8, batch_size=5, log_every=2, ckpt_every=4, workers=0, progress=False)
    return LoopConfig(**(kwargs | overrides))


def logged(out) -> list[tuple[int, str]]:
    return [(line["step"], line["split"]) for line in RunDir(out).read_metrics()]


def weights(out) -> dict[str, torch.Tensor]:
    return torch.load(RunDir(out).last, weights_only=True)["state_dict"]


def test_a_nan_step_is_skipped_logged_and_counted(tmp_path):
    task = LineTask(loop_config(tmp_path / "run", steps=4, log_every=4), poison=frozenset({3}))
    seen = []
    step = task.train_step

    def spy(batch, s):
        before = [p.detach().clone() for p in task.model.parameters()]
        out, finite = step(batch, s)
        seen.append((s, finite, all(torch.equal(a, b) for a, b in zip(before, task.model.parameters(), strict=True))))
        return out, finite

    task.train_step = spy
    summary = task.run()
    assert [(s, finite) for s, finite, _ in seen] == [(1, True), (2, True), (3, False), (4, True)]
    assert seen[2][2] and not seen[3][2]  # the NaN step left the weights alone; the next one updated them
    assert summary["skipped_steps"] == 1 and summary["step"] == 4
    line = RunDir(tmp_path / "run").read_metrics()[0]
    assert line["skipped"] == 1 and math.isfinite(line["loss"])  # the mean of the 3 finite steps
    assert {"epoch", "lr", "grad_norm", "windows_per_s", "updates_per_s"} <= set(line)


def test_repeated_nan_steps_stop_the_run_with_one_error_line(tmp_path, caplog):
    task = LineTask(loop_config(tmp_path / "run", max_bad_steps=3), poison=frozenset(range(2, 100)))
    with pytest.raises(TrainingError) as info:
        task.run()
    message = str(info.value)
    assert message == "3 steps in a row with a non-finite loss or gradient (last at step 4); stopping"
    assert "\n" not in message and task.loop.step == 4 and task.loop.skipped == 3
    skipped = [r for r in caplog.records if "update skipped" in r.getMessage()]
    assert [r.levelname for r in skipped] == ["WARNING"] * 3


def test_resume_continues_exactly_and_cuts_the_metrics(tmp_path):
    straight = LineTask(loop_config(tmp_path / "straight")).run()
    first = LineTask(loop_config(tmp_path / "resumed", steps=4)).run()
    run = RunDir(tmp_path / "resumed")
    run.log_metrics({"step": 5, "split": "train"})  # logged after the checkpoint at 4, then killed
    run.log_metrics({"step": 6, "split": "train"})
    second = LineTask(loop_config(tmp_path / "resumed")).run()
    assert (first["resumed_from"], second["resumed_from"], second["step"]) == (None, 4, 8)
    assert logged(tmp_path / "resumed") == [(2, "train"), (4, "train"), (6, "train"), (8, "train")]
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)  # global RNG, generator, data position and Adam restored
    assert straight["train"]["loss"] == second["train"]["loss"] and straight["epoch"] == second["epoch"] == 1
    ckpt = torch.load(run.last, weights_only=True)
    assert ckpt["data"] == {"epoch": 1, "batch": 4, "batch_size": 5, "world_size": 1}
    assert len(ckpt["rng"]) == len(ckpt["noise"]) == 1 and ckpt["skipped"] == 0


def test_a_fresh_start_drops_the_lines_of_a_killed_run(tmp_path):
    run = RunDir(tmp_path / "run").make()
    for step in (1, 2, 3):
        run.log_metrics({"step": step, "split": "train"})
    LineTask(loop_config(tmp_path / "run", steps=2, log_every=1)).run()
    assert logged(tmp_path / "run") == [(1, "train"), (2, "train")]
    assert json.loads(run.config.read_text())["steps"] == 2


def test_an_old_one_process_checkpoint_resumes_exactly(tmp_path):
    """Before the one loop, the policy trainer wrote one RNG state (not a list) and no world size."""
    LineTask(loop_config(tmp_path / "straight")).run()
    LineTask(loop_config(tmp_path / "old", steps=4)).run()
    last = RunDir(tmp_path / "old").last
    ckpt = torch.load(last, weights_only=True)
    ckpt["rng"] = ckpt["rng"][0]
    del ckpt["data"]["world_size"], ckpt["skipped"]
    save_checkpoint(ckpt, last)
    assert LineTask(loop_config(tmp_path / "old")).run()["resumed_from"] == 4
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "old")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_best_pt_keeps_the_best_validation_and_resumes_as_last_pt(tmp_path):
    out = tmp_path / "run"
    summary = LineTask(loop_config(out, val_every=2)).run()
    run = RunDir(out)
    val = [line for line in run.read_metrics() if line["split"] == "val"]
    best = torch.load(run.best, weights_only=True)
    assert [line["step"] for line in val] == [2, 4, 6, 8] and summary["best_checkpoint"] == str(run.best)
    assert best["val"]["loss"] == min(line["loss"] for line in val) and "optimizer" not in best
    run.best.replace(run.last)  # a best.pt copied over last.pt: its weights and step, a fresh optimiser
    resumed = LineTask(loop_config(out, steps=best["step"] + 2, val_every=2)).run()
    assert resumed["resumed_from"] == best["step"] and resumed["step"] == best["step"] + 2


def test_the_loop_checks_the_batch_against_the_data_and_the_ranks(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch of 30"):
        LineTask(loop_config(tmp_path / "run", batch_size=30))
    with pytest.raises(ValueError, match="not divisible by the 2 processes"):
        TrainingLoop(LineTask(loop_config(tmp_path / "run")), loop_config(tmp_path / "run"), DistContext(0, 2))
    with pytest.raises(ValueError, match="max_bad_steps"):
        loop_config(tmp_path, max_bad_steps=0)
    assert evenly_spaced(3, 10).tolist() == [0, 4, 9] and evenly_spaced(5, 2).tolist() == [0, 1]


def test_ssl_stops_after_repeated_non_finite_steps(tmp_path, micro_data):
    from worldmodel.ssl.objectives import SSLConfig
    from worldmodel.ssl.train import SSLTrainer, TrainSSLConfig

    config = TrainSSLConfig.tiny("vicreg", data=str(micro_data), out=str(tmp_path / "ssl"), steps=10, batch_size=4,
                                 warmup_steps=1, workers=0, device="cpu", progress=False, max_bad_steps=2,
                                 ssl=SSLConfig(method="vicreg", projector=(32, 16)))  # fmt: skip
    trainer = SSLTrainer(config, DistContext())
    loss = trainer.objective.loss
    trainer.objective.loss = lambda outputs: (t := loss(outputs)) | {"loss": t["loss"] * float("nan")}
    before = [p.detach().clone() for p in trainer.objective.parameters()]
    with pytest.raises(TrainingError, match=r"^2 steps in a row .* \(last at step 2\); stopping$"):
        trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.objective.parameters(), strict=True))
    assert all(not s for s in trainer.optimizer.state.values())  # AdamW saw nothing
    old = {k: v for k, v in config.to_dict().items() if k != "max_bad_steps"}  # a config.json of before
    assert TrainSSLConfig.from_dict(old) == replace(config, max_bad_steps=10)
