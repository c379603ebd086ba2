"""The one training loop: ``TrainingLoop(task, LoopConfig, ctx).run() -> summary``, behind every ``train`` command.

A *task* (``Task``: the forward model, a policy, an SSL objective) owns its model(s), optimiser(s), the update
and the validation. The loop owns what every run shares, told in order:
1. start: the run directory (``config.json``; ``metrics.jsonl`` cut at the starting step, see ``RunDir``),
   then per-rank generators seeded ``seed + 7919 * (rank + 1)``; on resume ``checkpoints/last.pt`` (read by
   ``load_checkpoint``) gives back the task's weights and state, the step, the data position and every
   rank's RNG states (torch, CUDA, numpy, Python and the task's own ``generators()``);
2. each step: the next batch of this rank's shard (``ResumableSampler``; the global batch is split over the
   ranks), ``task.train_step(batch, step)`` -> (terms averaged over the ranks, finite?). A non-finite step
   was skipped by the task (no update); ``max_bad_steps`` of them in a row stop the run with one
   ``TrainingError`` line;
3. around it: a ``metrics.jsonl`` line every ``log_every`` steps (terms averaged over the interval's finite
   steps, ``lr``, ``skipped``, throughput), ``task.validate`` every ``val_every`` steps and at the last
   (``best.pt`` when ``task.improved``), ``last.pt`` every ``ckpt_every`` steps and at the last. Only rank 0
   writes files; every rank calls the collectives in the same order.

Checkpoints stay each kind's format (DESIGN.md §5): ``task.checkpoint(step, **extra)`` is ``{"format": 1,
"kind", "config", "state_dict", "step", ...}``; ``last.pt`` adds ``task.state_dict()`` (optimiser, ...),
``rng`` (one state per rank), ``data`` (epoch, batches consumed in it, batch size, world size), ``skipped``
and the task's generators (one state per rank). A checkpoint without the training state (a ``best.pt``
copied over ``last.pt``) resumes its weights at its step with a fresh optimiser and data order.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from worldmodel.nn.checkpointing import checkpoint_errors, load_checkpoint
from worldmodel.nn.distributed import (
    DistContext,
    ResumableSampler,
    all_reduce_mean,
    barrier,
    gather_objects,
)
from worldmodel.nn.saving import capture_rng_state, restore_rng_state, save_checkpoint, seed_everything
from worldmodel.training.run_dir import RunDir

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 7919
"""Rank r's generators are seeded ``seed + RANK_SEED_STRIDE * (r + 1)`` (dropout, latents, views)."""
POSITION_STATE = frozenset({"rng", "data"})
"""The keys of ``last.pt`` the loop itself reads back (beyond ``task.state_keys`` and the generators)."""


class TrainingError(ValueError):
    """The run cannot go on (e.g. too many non-finite steps in a row)."""


@dataclass(frozen=True)
class LoopConfig:
    """What the loop needs of a run's config (each trainer maps its own config onto it)."""

    out: str
    """Run directory: config.json, metrics.jsonl, checkpoints/last.pt and best.pt."""
    steps: int
    """Total optimiser steps of the run (a resumed run continues up to this)."""
    batch_size: int
    """Global batch size in windows, split evenly over the ranks."""
    seed: int = 0
    """Seed of the data order and (with the rank) of the per-rank generators."""
    log_every: int = 10
    """Steps between lines of ``metrics.jsonl``."""
    val_every: int = 0
    """Steps between validations (0: never; the last step is always validated when > 0)."""
    ckpt_every: int = 1000
    """Steps between writes of ``checkpoints/last.pt`` (and always at the last step)."""
    max_bad_steps: int = 10
    """Stop after this many consecutive steps with a non-finite loss or gradient (each one is skipped)."""
    workers: int = 0
    """DataLoader worker processes per rank (0: load in the training process)."""
    resume: bool = True
    """Continue from ``checkpoints/last.pt`` when it exists."""
    progress: bool = True
    """Show a progress bar (rank 0)."""
    stop_at: int = 0
    """Stop after this step with a checkpoint, as if interrupted (0: run to ``steps``)."""
    data: str = "the data"
    """What the training data is called in error messages (its path)."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.val_every < 0 or self.stop_at < 0:
            raise ValueError("LoopConfig: steps >= 0, batch_size >= 1, val_every >= 0 and stop_at >= 0")
        if min(self.log_every, self.ckpt_every, self.max_bad_steps) < 1:
            raise ValueError("LoopConfig: log_every, ckpt_every and max_bad_steps >= 1")

    @property
    def end(self) -> int:
        """The step this session stops at."""
        return min(self.steps, self.stop_at) if self.stop_at > 0 else self.steps

    def resuming(self) -> bool:
        """Whether the run will resume (``resume`` and ``checkpoints/last.pt`` exists)."""
        return self.resume and RunDir(self.out).last.exists()


class Task(ABC):
    """A trainer plugged into ``TrainingLoop``: its data, model(s), optimiser and the checkpoint contents.

    Attributes a task sets: ``kind`` (checkpoint kind), ``name`` (progress bar), ``config`` (the run
    config, with ``to_dict()``, saved as ``config.json``), ``train_set`` (a Dataset of dict batches),
    ``optimizer``; optionally ``state_keys`` (keys of ``last.pt`` that ``load_state_dict`` reads) and
    ``postfix`` (logged terms shown on the progress bar). It builds its ``TrainingLoop`` last, as
    ``self.loop``, after seeding the shared initialisation with ``seed_everything(seed)``.
    """

    kind: str
    name: str
    config: Any
    train_set: Dataset
    optimizer: torch.optim.Optimizer
    loop: TrainingLoop
    state_keys: frozenset[str] = frozenset({"optimizer"})
    postfix: tuple[str, ...] = ("loss",)

    @abstractmethod
    def train_step(self, batch: Mapping[str, Tensor], step: int) -> tuple[dict[str, float], bool]:
        """One update on this rank's part of a batch: (terms averaged over the ranks, with ``loss``, finite?).
        When not finite, the task has left the weights and the optimiser's state unchanged."""

    def validate(self, step: int) -> dict[str, float] | None:
        """Validation terms (every rank calls it), or None: nothing to validate."""
        return None

    def improved(self, val: Mapping[str, float]) -> bool:
        """Whether ``val`` is the best so far (then remembered, and written as ``best.pt``)."""
        return False

    @abstractmethod
    def checkpoint(self, step: int, **extra) -> dict:
        """The self-contained checkpoint of the trained weights at ``step`` (``best.pt``), with ``extra``."""

    @abstractmethod
    def load_weights(self, ckpt: Mapping, path: Path, advice: str) -> None:
        """Check that ``ckpt`` belongs to this run (config) and load its weights (``CheckpointError`` if not)."""

    def state_dict(self) -> dict:
        """The training state of ``last.pt`` beyond the weights (optimiser, scheduler, best score, ...)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, ckpt: Mapping) -> None:
        """Restore ``state_dict``'s entries from a ``last.pt``."""
        self.optimizer.load_state_dict(ckpt["optimizer"])

    def reset_state(self, ckpt: Mapping, step: int) -> None:
        """Resuming a checkpoint without training state (a ``best.pt``) at ``step``: a fresh optimiser;
        align schedules to ``step`` and take the best score from ``ckpt["val"]``."""
        del ckpt, step  # nothing to align by default

    def generators(self) -> dict[str, torch.Generator]:
        """The task's own per-rank generators, saved in ``last.pt`` under their names (one state per rank)."""
        return {}

    def summary(self, summary: dict) -> dict:
        """The run's returned summary from the loop's (``TrainingLoop.run``); the end of the run's work."""
        return summary

    def run(self) -> dict:
        """Train up to ``config.steps`` (or ``stop_at``). Returns ``summary``."""
        return self.loop.run()


class TrainingLoop:
    """One rank's position in a run of ``task``: step, epoch, batches, skipped steps, logs, checkpoints."""

    def __init__(self, task: Task, config: LoopConfig, ctx: DistContext) -> None:
        self.task, self.config, self.ctx = task, config, ctx
        self.run_dir = RunDir(config.out)
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch size {config.batch_size} is not divisible by the {ctx.world_size} processes")
        self.rank_batch = config.batch_size // ctx.world_size
        if len(task.train_set) < config.batch_size:
            raise ValueError(f"{config.data}: {len(task.train_set)} train windows, fewer than one batch of "
                             f"{config.batch_size}")  # fmt: skip
        self.sampler = ResumableSampler(task.train_set, ctx, seed=config.seed)
        self.step = self.epoch = self.batch_in_epoch = self.bad_steps = self.skipped = 0
        self.resumed_from: int | None = None
        self.last_train: dict | None = None
        self.last_val: dict | None = None
        self.rank_seed = config.seed + RANK_SEED_STRIDE * (ctx.rank + 1)
        seed_everything(self.rank_seed)
        self._reset_interval()
        if config.resuming():
            self.load(self.run_dir.last)

    # ------------------------------------------------------------------ checkpoints
    def load(self, path: Path) -> None:
        """Resume from ``path``: weights, then the task's training state, step and data position, or (no
        training state) a fresh optimiser and data order at its step. Problems are ``CheckpointError``s."""
        task = self.task
        advice = self.run_dir.resume_advice()
        ckpt = load_checkpoint(path, task.kind, advice=advice)
        task.load_weights(ckpt, path, advice)
        with checkpoint_errors(path, "damaged training state", advice):
            self.step, self.skipped = int(ckpt["step"]), int(ckpt.get("skipped", 0))
            if POSITION_STATE | task.state_keys | set(task.generators()) <= set(ckpt):
                task.load_state_dict(ckpt)
                self._restore_position(ckpt, path)
            else:
                log.warning("%s holds no training state (a best.pt?): resuming its weights at step %d with a "
                            "fresh optimiser and data order", path, self.step)  # fmt: skip
                task.reset_state(ckpt, self.step)
                self._restart_data_order(self.step * self.config.batch_size // len(task.train_set) + 1)
        self.resumed_from = self.step
        log.info("resumed from %s at step %d", path, self.step)

    def _restore_position(self, ckpt: Mapping, path: Path) -> None:
        c, ctx = self.config, self.ctx
        data = ckpt["data"]
        self.epoch, self.batch_in_epoch = int(data["epoch"]), int(data["batch"])
        rng = [ckpt["rng"]] if isinstance(ckpt["rng"], Mapping) else ckpt["rng"]  # one process's, before
        layout = (data["batch_size"], data.get("world_size", 1))
        if layout == (c.batch_size, ctx.world_size) and len(rng) == ctx.world_size:
            restore_rng_state(rng[ctx.rank])
            for name, generator in self.task.generators().items():
                generator.set_state(ckpt[name][ctx.rank])
        else:
            log.warning("%s: written with batch %d on %d processes; the data order restarts at epoch %d",
                        path, layout[0], layout[1], self.epoch + 1)  # fmt: skip
            self._restart_data_order(self.epoch + 1)

    def _restart_data_order(self, epoch: int) -> None:
        """Without the saved data position and generators: start ``epoch``, generators seeded by the step."""
        self.epoch, self.batch_in_epoch = epoch, 0
        seed_everything(self.rank_seed + self.step)

    def save_last(self) -> None:
        """Write ``last.pt`` (every rank must call: the generators' states are gathered)."""
        ctx, task = self.ctx, self.task
        rng = gather_objects(capture_rng_state(), ctx)
        generators = {name: gather_objects(g.get_state(), ctx) for name, g in task.generators().items()}
        if not ctx.is_main:
            return
        data = {"epoch": self.epoch, "batch": self.batch_in_epoch, "batch_size": self.config.batch_size,
                "world_size": ctx.world_size}  # fmt: skip
        checkpoint = task.checkpoint(self.step, **task.state_dict(), rng=rng, data=data, skipped=self.skipped,
                                     **generators)  # fmt: skip
        save_checkpoint(checkpoint, self.run_dir.last)

    # ------------------------------------------------------------------ steps, logs, validation
    def _reset_interval(self) -> None:
        self._sums: dict[str, float] = {}
        self._n_finite = self._n_steps = 0
        self._tick = time.perf_counter()

    def _count(self, terms: Mapping[str, float], finite: bool) -> None:
        """Add a step's terms to the interval, or count it as skipped (and stop after too many in a row)."""
        self._n_steps += 1
        if finite:
            self.bad_steps, self._n_finite = 0, self._n_finite + 1
            for k, v in terms.items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            return
        self.bad_steps, self.skipped = self.bad_steps + 1, self.skipped + 1
        log.warning("step %d: non-finite loss or gradient (loss %s, grad norm %s): update skipped", self.step,
                    terms.get("loss"), terms.get("grad_norm"))  # fmt: skip
        if self.bad_steps >= self.config.max_bad_steps:
            raise TrainingError(f"{self.bad_steps} steps in a row with a non-finite loss or gradient (last at "
                                f"step {self.step}); stopping")  # fmt: skip

    def _log_train(self, bar: tqdm) -> None:
        elapsed = max(time.perf_counter() - self._tick, 1e-9)
        means = {k: v / max(self._n_finite, 1) for k, v in self._sums.items()}
        self.last_train = {
            "step": self.step,
            "split": "train",
            "epoch": self.epoch,
            **means,
            "lr": self.task.optimizer.param_groups[0]["lr"],
            "skipped": self._n_steps - self._n_finite,
            "windows_per_s": self._n_steps * self.config.batch_size / elapsed,
            "updates_per_s": self._n_steps / elapsed,
        }
        if self.ctx.is_main:
            self.run_dir.log_metrics(self.last_train)
            bar.set_postfix({k: f"{means.get(k, math.nan):.4g}" for k in self.task.postfix})
        self._reset_interval()

    def _validate(self) -> None:
        val = self.task.validate(self.step)
        if val:
            self.last_val = {"step": self.step, "split": "val", **val}
            if self.ctx.is_main:
                self.run_dir.log_metrics(self.last_val)
            if self.task.improved(val) and self.ctx.is_main:  # every rank keeps the best score
                save_checkpoint(self.task.checkpoint(self.step, val=val), self.run_dir.best)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        """Train from the current step to ``config.end``. Returns ``task.summary`` of the loop's summary."""
        task, c, ctx = self.task, self.config, self.ctx
        if ctx.is_main:
            self.run_dir.start(task.config.to_dict(), self.step)
        barrier(ctx)
        # the loader has its own generator: creating its iterator never draws from the global RNG (resume)
        loader = DataLoader(task.train_set, batch_size=self.rank_batch, sampler=self.sampler, num_workers=c.workers,
                            drop_last=True, pin_memory=ctx.device.type == "cuda", persistent_workers=c.workers > 0,
                            generator=torch.Generator().manual_seed(c.seed))  # fmt: skip
        bar = tqdm(total=c.steps, initial=self.step, unit="step", disable=not (c.progress and ctx.is_main),
                   desc=f"train {task.name}")  # fmt: skip
        self._reset_interval()
        batches = None
        try:
            while self.step < c.end:
                if batches is None:
                    self.sampler.set_position(self.epoch, self.batch_in_epoch * self.rank_batch)
                    batches = iter(loader)
                try:
                    batch = next(batches)
                except StopIteration:
                    if self.batch_in_epoch == 0:
                        raise TrainingError(f"{c.data}: an epoch yields no batch of {self.rank_batch}") from None
                    self.epoch, self.batch_in_epoch, batches = self.epoch + 1, 0, None
                    continue
                self.batch_in_epoch += 1
                self.step += 1
                self._count(*task.train_step(batch, self.step))
                bar.update(1)
                final = self.step == c.end
                if self.step % c.log_every == 0 or final:
                    self._log_train(bar)
                if c.val_every > 0 and (self.step % c.val_every == 0 or final):
                    self._validate()
                    self._tick = time.perf_counter()
                if self.step % c.ckpt_every == 0 or final:
                    self.save_last()
                    self._tick = time.perf_counter()
        finally:
            bar.close()
        best = self.run_dir.best
        return task.summary({
            "out": str(self.run_dir.root),
            "step": self.step,
            "epoch": self.epoch,
            "resumed_from": self.resumed_from,
            "skipped_steps": self.skipped,
            "train": self.last_train,
            "val": self.last_val,
            "checkpoint": str(self.run_dir.last),
            "best_checkpoint": str(best) if best.exists() else None,
        })  # fmt: skip


# ---------------------------------------------------------------------- helpers of the tasks' steps
def wrap_ddp(module: nn.Module, ctx: DistContext) -> nn.Module:
    """``module`` under DistributedDataParallel when distributed (gradients averaged in backward), else itself."""
    if not ctx.distributed:
        return module
    return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def reduce_terms(terms: Mapping[str, Tensor], grad_norm: Tensor, ctx: DistContext) -> tuple[dict[str, float], bool]:
    """(the scalar terms averaged over the ranks + ``grad_norm``, loss and gradient norm finite?)."""
    names = sorted(terms)
    values = all_reduce_mean(torch.stack([terms[n].detach().float() for n in names]), ctx)
    out = dict(zip(names, values.tolist(), strict=True)) | {"grad_norm": float(grad_norm)}
    return out, math.isfinite(out["loss"]) and math.isfinite(out["grad_norm"])


def step_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Advance the schedule; a skipped update advances it too (without PyTorch's warning about the order)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        scheduler.step()


def warmup_schedule(warmup: int, total: int, cosine: bool = True) -> Callable[[int], float]:
    """The learning-rate multiplier of step s: linear warm-up from 0 over ``warmup`` steps, then constant or a
    cosine decay to 0 at ``total`` (a plain function, so the scheduler's state stays plain)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cosine:
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def evenly_spaced(n: int, size: int) -> np.ndarray:
    """``min(n, size)`` distinct indices spread evenly over ``range(size)`` (the same every time): [n] int64."""
    return np.unique(np.linspace(0, size - 1, min(n, size)).round().astype(np.int64))


__all__ = [
    "LoopConfig",
    "Task",
    "TrainingError",
    "TrainingLoop",
    "evenly_spaced",
    "reduce_terms",
    "step_scheduler",
    "warmup_schedule",
    "wrap_ddp",
]
