"""Forward-model training: ``train_fm(TrainFMConfig) -> summary``, the loop behind ``worldmodel train fm``.

One step, told in order (``FMTrainer.train_step``):
1. the next batch of this rank's shard (``ResumableSampler``; the global batch is split over the ranks);
2. the named loss terms (``ForwardModel.loss``) under autocast (CUDA only), through DDP when distributed,
   so that the backward averages the gradients over the ranks;
3. backward (scaled for fp16), unscale, clip the global gradient norm (PPUU: 5);
4. NaN guard: the loss terms are averaged over the ranks (what is logged); if the loss or the gradient
   norm is not finite, the update is skipped and logged; ``max_bad_steps`` skips in a row stop the run;
5. optimiser and scheduler steps.
Around it: a log line every ``log_every`` steps, a validation pass every ``val_every`` (``split: "val"``),
``checkpoints/last.pt`` every ``ckpt_every`` and at the end, ``best.pt`` at each new best validation loss.

Resume: ``last.pt`` holds the model, optimiser, scheduler and grad-scaler states, every rank's RNG states
(torch, CUDA, numpy, Python) and the data position (epoch, batches consumed in it), so that on CPU a run
of N steps resumed for N more ends with the same parameters as a run of 2N steps, bit for bit. Validation
draws its latents from a generator of its own and runs without dropout, so it never moves the training
RNG. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.nn.checkpointing import CheckpointError, checkpoint_errors, load_checkpoint, load_weights
from worldmodel.nn.forward_model import CHECKPOINT_KIND, ForwardModel, ForwardModelConfig
from worldmodel.training.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint, seed_everything
from worldmodel.training.distributed import (
    DistContext,
    ResumableSampler,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    gather_objects,
    setup_distributed,
    teardown_distributed,
)
from worldmodel.training.run_dir import RunDir

log = logging.getLogger(__name__)

AMP_MODES = ("off", "bf16", "fp16")
#: The keys of ``last.pt`` beyond the model's (absent from ``best.pt``).
TRAINING_STATE = frozenset({"optimizer", "scheduler", "scaler", "rng", "data", "best_val"})
LR_SCHEDULES = ("constant", "cosine")
BATCH_KEYS = ("context_images", "context_states", "actions", "future_images", "future_states")


class TrainingError(ValueError):
    """The run cannot go on (e.g. too many non-finite steps in a row)."""


@dataclass(frozen=True)
class TrainFMConfig:
    """A forward-model training run (saved resolved as ``<out>/config.json``)."""

    data: str = "datasets/i80-sim/episodes.h5"
    """episodes.h5 to train on (train split; validation on its val split)."""
    out: str = "runs/fm"
    """Run directory: config.json, metrics.jsonl, checkpoints/last.pt and best.pt."""
    model: ForwardModelConfig = field(default_factory=lambda: ForwardModelConfig.ppuu("vae"))
    """The model (its backbone's ``context_frames`` is the windows' context length)."""
    predict_frames: int = 20
    """Frames predicted autoregressively per window (PPUU: 20)."""
    ego_relative: bool = True
    """Positions relative to the ego at the last context frame (see ``WindowConfig``)."""
    steps: int = 200_000
    """Total optimiser steps of the run (a resumed run continues up to this)."""
    batch_size: int = 64
    """Global batch size in windows, split evenly over the ranks (PPUU: 64)."""
    lr: float = 1e-4
    """Adam learning rate (PPUU: 1e-4)."""
    lr_warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps."""
    lr_schedule: str = "constant"
    """After the warm-up: ``"constant"`` (PPUU) or ``"cosine"`` decay to 0 at ``steps``."""
    grad_clip: float = 5.0
    """Maximum global gradient norm (PPUU: 5)."""
    max_bad_steps: int = 10
    """Stop after this many consecutive steps with a non-finite loss or gradient (each one is skipped)."""
    seed: int = 0
    """Seed of the model's initialisation, the data order, dropout and latent sampling."""
    device: str = "auto"
    """``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ..."""
    amp: str = "off"
    """Mixed precision on CUDA: ``"off"``, ``"bf16"`` or ``"fp16"`` (with a grad scaler); ignored on CPU."""
    val_every: int = 1000
    """Steps between validation passes (0: never; the last step is always validated when > 0)."""
    val_windows: int = 512
    """Windows of the val split used by a validation pass (evenly spaced, the same every time)."""
    ckpt_every: int = 1000
    """Steps between writes of ``checkpoints/last.pt`` (and always at the end)."""
    log_every: int = 10
    """Steps between lines of ``metrics.jsonl`` (terms averaged over those steps)."""
    workers: int = 2
    """DataLoader worker processes per rank (0: load in the training process)."""
    warm_start: str | None = None
    """A (deterministic) checkpoint whose matching weights initialise the model (a new run only)."""
    backbone: str | None = None
    """A ``backbone.pt`` exported by ``train ssl`` that initialises the model's backbone (a new run only)."""
    freeze_backbone: bool = False
    """Keep the backbone's weights fixed (no gradient, not in the optimiser)."""
    resume: bool = True
    """Continue from ``checkpoints/last.pt`` when it exists."""
    progress: bool = True
    """Show a progress bar (rank 0)."""

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"TrainFMConfig.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainFMConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):  # NaN fails every comparison
            raise ValueError(f"lr (--lr) must be a finite number > 0, got {self.lr}")
        if self.steps < 0 or self.batch_size < 1 or self.predict_frames < 1:
            raise ValueError("TrainFMConfig: steps >= 0, batch_size >= 1 and predict_frames >= 1")
        if min(self.log_every, self.ckpt_every, self.max_bad_steps) < 1 or self.val_every < 0:
            raise ValueError("TrainFMConfig: log_every, ckpt_every, max_bad_steps >= 1 and val_every >= 0")

    def to_dict(self) -> dict:
        return dict(self.__dict__) | {"model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainFMConfig:
        return cls(**(dict(d) | {"model": ForwardModelConfig.from_dict(d["model"])}))


class LossModule(nn.Module):
    """``forward(batch, step) = model.loss(batch, step)``: what DDP wraps (DDP syncs through ``forward``)."""

    def __init__(self, model: ForwardModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Mapping[str, Tensor], step: int | None = None) -> dict[str, Tensor]:
        return self.model.loss(batch, step=step)


def lr_factor(config: TrainFMConfig):
    """The learning-rate multiplier of step s (a plain function, so the scheduler's state stays plain)."""
    warmup, total, cosine = config.lr_warmup_steps, config.steps, config.lr_schedule == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cosine:
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


class FMTrainer:
    """The state of one rank's training run; ``run()`` trains up to ``config.steps``."""

    def __init__(self, config: TrainFMConfig, ctx: DistContext) -> None:
        self.config, self.ctx = config, ctx
        c, device = config, ctx.device
        self.run_dir = RunDir(c.out)
        # data
        windows = WindowConfig(c.model.backbone.context_frames, c.predict_frames, c.ego_relative, "train")
        self.train_set = WindowDataset(c.data, windows)
        self.val_set = WindowDataset(c.data, replace(windows, split="val"))
        if c.batch_size % ctx.world_size:
            raise ValueError(f"batch size {c.batch_size} is not divisible by the {ctx.world_size} processes")
        self.rank_batch = c.batch_size // ctx.world_size
        if len(self.train_set) < c.batch_size:
            raise ValueError(f"{c.data}: {len(self.train_set)} train windows, fewer than one batch of {c.batch_size}")
        self.sampler = ResumableSampler(self.train_set, ctx, seed=c.seed)
        # model: the same initialisation on every rank, then per-rank dropout and latent streams
        seed_everything(c.seed)
        model = ForwardModel(c.model)
        model.set_normalisation(self.train_set.stats)
        self.resuming = c.resume and self.run_dir.last.exists()
        if c.backbone and not self.resuming:
            from worldmodel.ssl.train import load_backbone

            model.backbone.load_state_dict(load_backbone(c.backbone, c.model.backbone).state_dict())
            log.info("backbone initialised from %s", c.backbone)
        if c.freeze_backbone:
            model.backbone.requires_grad_(False)
        if c.warm_start and not self.resuming:
            warm = ForwardModel.from_checkpoint(c.warm_start)  # checks the file whole: config and weights
            report = model.load_deterministic(warm.state_dict())
            if not report["loaded"]:
                raise CheckpointError(c.warm_start, "no weight of it fits this model (another size of model?)",
                                      "pass a forward-model checkpoint of the same --preset")  # fmt: skip
            model.set_normalisation(self.train_set.stats)  # this dataset's statistics rule
            log.info("warm start from %s: %d tensors loaded, %d kept", c.warm_start, len(report["loaded"]),
                     len(report["kept"]))  # fmt: skip
        self.model = model.to(device)
        self.loss_module: nn.Module = LossModule(self.model)
        if ctx.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=c.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(c))
        self.amp = c.amp if device.type == "cuda" else "off"
        if c.amp != "off" and self.amp == "off":
            log.warning("mixed precision (%s) is for CUDA only: training in float32 on %s", c.amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        seed_everything(c.seed + 7919 * (ctx.rank + 1))
        # position
        self.step = self.epoch = self.batch_in_epoch = self.bad_steps = self.skipped = 0
        self.best_val = math.inf
        self.resumed_from: int | None = None
        if self.resuming:
            self._load(self.run_dir.last)

    # ------------------------------------------------------------------ checkpoints
    def _load(self, path) -> None:
        """Resume from ``path``: a ``last.pt``, or a ``best.pt`` copied over it (weights and step only: the
        optimiser restarts). Any problem is a ``CheckpointError`` that says how to go on."""
        c = self.config
        advice = self.run_dir.resume_advice()
        ckpt = load_checkpoint(path, CHECKPOINT_KIND, advice=advice)
        with checkpoint_errors(path, "invalid config", advice):
            same_model = ForwardModelConfig.from_dict(ckpt["config"]) == c.model
        if not same_model:
            raise CheckpointError(path, "the checkpoint's model config differs from this run's",
                                  "use another --out or --no-resume")  # fmt: skip
        load_weights(self.model, ckpt["state_dict"], path, advice)
        self.step, self.skipped = ckpt["step"], ckpt.get("skipped", 0)
        with checkpoint_errors(path, "damaged training state", advice):
            if TRAINING_STATE <= set(ckpt):
                self._restore_training_state(ckpt, path)
            else:
                log.warning("%s holds no training state (a best.pt?): resuming its weights at step %d with a "
                            "fresh optimiser and data order", path, self.step)  # fmt: skip
                self.best_val = float(ckpt.get("val", {}).get("loss", math.inf))
                self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(c),
                                                                   last_epoch=self.step - 1)  # fmt: skip
                self._restart_data_order(self.step * c.batch_size // len(self.train_set) + 1)
        self.resumed_from = self.step
        log.info("resumed from %s at step %d", path, self.step)

    def _restore_training_state(self, ckpt: Mapping, path) -> None:
        c, ctx = self.config, self.ctx
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.best_val = ckpt["best_val"]
        data = ckpt["data"]
        self.epoch, self.batch_in_epoch = data["epoch"], data["batch"]
        same_layout = (data["batch_size"], data["world_size"]) == (c.batch_size, ctx.world_size)
        if same_layout and len(ckpt["rng"]) == ctx.world_size:
            restore_rng_state(ckpt["rng"][ctx.rank])
        else:
            log.warning("%s: written with batch %d on %d processes; the data order restarts at epoch %d",
                        path, data["batch_size"], data["world_size"], self.epoch + 1)  # fmt: skip
            self._restart_data_order(self.epoch + 1)

    def _restart_data_order(self, epoch: int) -> None:
        """Without the saved data position and generators: start ``epoch``, generators seeded by the step."""
        self.epoch, self.batch_in_epoch = epoch, 0
        seed_everything(self.config.seed + 7919 * (self.ctx.rank + 1) + self.step)

    def save_last(self) -> None:
        """Write ``last.pt`` (every rank must call: the RNG states are gathered)."""
        rng = gather_objects(capture_rng_state(), self.ctx)
        if not self.ctx.is_main:
            return
        c = self.config
        checkpoint = self.model.checkpoint_dict(
            self.step,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=rng,
            data={
                "epoch": self.epoch,
                "batch": self.batch_in_epoch,
                "batch_size": c.batch_size,
                "world_size": self.ctx.world_size,
            },  # fmt: skip
            best_val=self.best_val,
            skipped=self.skipped,
            train_config=c.to_dict(),
        )
        save_checkpoint(checkpoint, self.run_dir.last)

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        if self.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def _to_device(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: batch[k].to(self.ctx.device, non_blocking=True) for k in BATCH_KEYS}

    def train_step(self, batch: Mapping[str, Tensor]) -> tuple[dict[str, float], bool]:
        """One update on this rank's part of a batch. Returns (terms averaged over ranks, updated?)."""
        c = self.config
        self.loss_module.train()
        with self._autocast():
            terms = self.loss_module(self._to_device(batch), self.step)
        self.scaler.scale(terms["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        names = sorted(terms)
        values = all_reduce_mean(torch.stack([terms[n].detach().float() for n in names]), self.ctx)
        out = dict(zip(names, values.tolist(), strict=True)) | {"grad_norm": float(grad_norm)}
        loss_ok, grad_ok = math.isfinite(out["loss"]), math.isfinite(out["grad_norm"])
        if self.amp == "fp16":  # the scaler skips steps with overflowing gradients by itself
            updated = loss_ok
            if loss_ok:
                self.scaler.step(self.optimizer)
        else:
            updated = loss_ok and grad_ok
            if updated:
                self.optimizer.step()
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped update still advances the schedule
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        return out, updated

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Mean loss terms over ``val_windows`` fixed windows of the val split (sharded over the ranks)."""
        c, ctx = self.config, self.ctx
        if len(self.val_set) == 0:
            return None
        n = min(c.val_windows, len(self.val_set))
        chosen = np.unique(np.linspace(0, len(self.val_set) - 1, n).round().astype(np.int64))
        if len(chosen) < ctx.world_size:  # every rank gets a window (the reduction needs every rank's terms)
            chosen = np.resize(chosen, ctx.world_size)
        shard = Subset(self.val_set, chosen[ctx.rank :: ctx.world_size].tolist())
        loader = DataLoader(shard, batch_size=self.rank_batch, num_workers=min(c.workers, 2),
                            generator=torch.Generator().manual_seed(c.seed))  # fmt: skip
        generator = torch.Generator(ctx.device).manual_seed(c.seed)
        self.model.eval()
        sums, names, count = None, None, 0
        for batch in loader:
            with self._autocast():
                terms = self.model.loss(self._to_device(batch), step=self.step, generator=generator)
            names = names or sorted(terms)
            b = batch["actions"].shape[0]
            values = torch.stack([terms[k].float() for k in names]) * b
            sums = values if sums is None else sums + values
            count += b
        self.model.train()
        totals = all_reduce_sum(torch.cat([sums, torch.tensor([float(count)], device=ctx.device)]), ctx)
        return dict(zip(names, (totals[:-1] / totals[-1]).tolist(), strict=True))

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        c, ctx = self.config, self.ctx
        if ctx.is_main:
            self.run_dir.make()
            self.run_dir.write_config(c.to_dict())
            self.run_dir.truncate_metrics(self.step)  # a fresh run (step 0) starts an empty file
        barrier(ctx)
        loader = DataLoader(
            self.train_set,
            batch_size=self.rank_batch,
            sampler=self.sampler,
            num_workers=c.workers,
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
            persistent_workers=c.workers > 0,
            generator=torch.Generator().manual_seed(c.seed),
        )
        bar = tqdm(total=c.steps, initial=self.step, unit="step", disable=not (c.progress and ctx.is_main),
                   desc=f"train fm ({c.model.mode})")  # fmt: skip
        last_train: dict | None = None
        last_val: dict | None = None
        sums: dict[str, float] = {}
        n_ok = n_interval = 0
        tick = time.perf_counter()
        batches = None
        while self.step < c.steps:
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
            terms, updated = self.train_step(batch)
            n_interval += 1
            if updated:
                self.bad_steps, n_ok = 0, n_ok + 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
            else:
                self.bad_steps += 1
                self.skipped += 1
                log.warning("step %d: non-finite loss or gradient (loss %s, grad norm %s): update skipped",
                            self.step, terms["loss"], terms["grad_norm"])  # fmt: skip
                if self.bad_steps >= c.max_bad_steps:
                    raise TrainingError(f"{self.bad_steps} steps in a row with a non-finite loss or gradient "
                                        f"(last at step {self.step}); stopping")  # fmt: skip
            bar.update(1)
            final = self.step == c.steps
            if self.step % c.log_every == 0 or final:
                elapsed = time.perf_counter() - tick
                means = {k: v / max(n_ok, 1) for k, v in sums.items()}
                last_train = {"step": self.step, "split": "train", "epoch": self.epoch, **means,
                              "lr": self.scheduler.get_last_lr()[0], "skipped": n_interval - n_ok,
                              "windows_per_s": n_interval * c.batch_size / max(elapsed, 1e-9)}  # fmt: skip
                if ctx.is_main:
                    self.run_dir.log_metrics(last_train)
                    bar.set_postfix(loss=f"{means.get('loss', math.nan):.4g}")
                sums, n_ok, n_interval = {}, 0, 0
                tick = time.perf_counter()
            if c.val_every > 0 and (self.step % c.val_every == 0 or final):
                val = self.validate()
                if val is not None:
                    last_val = {"step": self.step, "split": "val", **val}
                    if ctx.is_main:
                        self.run_dir.log_metrics(last_val)
                    if val["loss"] < self.best_val:
                        self.best_val = val["loss"]
                        if ctx.is_main:
                            best = self.model.checkpoint_dict(self.step, val=val, train_config=c.to_dict())
                            save_checkpoint(best, self.run_dir.best)
                tick = time.perf_counter()
            if self.step % c.ckpt_every == 0 or final:
                self.save_last()
                tick = time.perf_counter()
        bar.close()
        return {
            "out": str(self.run_dir.root),
            "step": self.step,
            "epoch": self.epoch,
            "resumed_from": self.resumed_from,
            "skipped_steps": self.skipped,
            "train": last_train,
            "val": last_val,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "checkpoint": str(self.run_dir.last),
            "best_checkpoint": str(self.run_dir.best) if self.run_dir.best.exists() else None,
        }


def train_fm(config: TrainFMConfig) -> dict:
    """Train (or resume) a forward model; under torchrun each process calls this. Returns a summary."""
    ctx = setup_distributed(config.device)
    try:
        return FMTrainer(config, ctx).run()
    finally:
        teardown_distributed(ctx)


__all__ = ["AMP_MODES", "FMTrainer", "LossModule", "TrainFMConfig", "TrainingError", "lr_factor", "train_fm"]
