"""Forward-model training: ``train_fm(TrainFMConfig) -> summary``, the task behind ``worldmodel train fm``.

``FMTrainer`` is a ``Task`` of the one training loop (``worldmodel.training.loop``: data position, NaN
guard, metrics, validation and checkpoint cadence, resume, per-rank RNG, DDP, progress bar). One step,
told in order (``FMTrainer.train_step``):
1. the next batch of this rank's shard (the loop's; the global batch is split over the ranks);
2. the named loss terms (``ForwardModel.loss``) under autocast (CUDA only), through DDP when distributed,
   so that the backward averages the gradients over the ranks;
3. backward (scaled for fp16), unscale, clip the global gradient norm (PPUU: 5);
4. NaN guard: the loss terms are averaged over the ranks (what is logged); if the loss or the gradient
   norm is not finite, the update is skipped (the loop stops the run after ``max_bad_steps`` in a row);
5. optimiser and scheduler steps.
Validation every ``val_every`` (``split: "val"``) keeps ``best.pt`` at each new best validation loss.

The data's settings travel with the model: the backbone takes the size of the training file's views, and
the file's view and cost parameters are recorded in the model's config (``ForwardModelConfig.for_data``;
a model config that asks for another view is refused, one line naming the file), so in every checkpoint.

Resume: ``last.pt`` holds the model, optimiser, scheduler and grad-scaler states, every rank's RNG states
and the data position, so that on CPU a run of N steps resumed for N more ends with the same parameters as
a run of 2N steps, bit for bit. Validation draws its latents from a generator of its own and runs without
dropout, so it never moves the training RNG. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from worldmodel.data.windows import WindowConfig, WindowDataset, unit_images
from worldmodel.driving.window_worlds import RenderedWindows
from worldmodel.nn.backbone_export import load_backbone
from worldmodel.nn.checkpointing import CheckpointError, checkpoint_errors, load_weights
from worldmodel.nn.distributed import DistContext, all_reduce_sum, process_group
from worldmodel.nn.forward_model import CHECKPOINT_KIND, ForwardModel, ForwardModelConfig
from worldmodel.nn.forward_model_config import view_text
from worldmodel.nn.saving import seed_everything
from worldmodel.training.loop import (
    LoopConfig,
    Task,
    TrainingError,
    TrainingLoop,
    evenly_spaced,
    reduce_terms,
    step_scheduler,
    warmup_schedule,
    wrap_ddp,
)

log = logging.getLogger(__name__)

AMP_MODES = ("off", "bf16", "fp16")
#: The keys of ``last.pt`` beyond the model's (absent from ``best.pt``).
TRAINING_STATE = frozenset({"optimizer", "scheduler", "scaler", "rng", "data", "best_val"})
LR_SCHEDULES = ("constant", "cosine")
BATCH_KEYS = ("context_images", "context_states", "actions", "future_images", "future_states")


@dataclass(frozen=True)
class TrainFMConfig:
    """A forward-model training run (saved resolved as ``<out>/config.json``)."""

    data: str = "datasets/i80-sim/episodes.h5"
    """episodes.h5 to train on (train split; validation on its val split)."""
    out: str = "runs/fm"
    """Run directory: config.json, metrics.jsonl, checkpoints/last.pt and best.pt."""
    model: ForwardModelConfig = field(default_factory=lambda: ForwardModelConfig.ppuu("vae"))
    """The model (its backbone's ``context_frames`` is the windows' context length; its input size, view and
    cost parameters are the data's, see ``ForwardModelConfig.for_data``)."""
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

    def loop_config(self) -> LoopConfig:
        """The training loop's part of this config."""
        return LoopConfig(out=self.out, steps=self.steps, batch_size=self.batch_size, seed=self.seed,
                          log_every=self.log_every, val_every=self.val_every, ckpt_every=self.ckpt_every,
                          max_bad_steps=self.max_bad_steps, workers=self.workers, resume=self.resume,
                          progress=self.progress, data=self.data)  # fmt: skip


class LossModule(nn.Module):
    """``forward(batch, step) = model.loss(batch, step)``: what DDP wraps (DDP syncs through ``forward``)."""

    def __init__(self, model: ForwardModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Mapping[str, Tensor], step: int | None = None) -> dict[str, Tensor]:
        return self.model.loss(batch, step=step)


def lr_factor(config: TrainFMConfig):
    """The learning-rate multiplier of step s (warm-up, then constant or cosine; ``warmup_schedule``)."""
    return warmup_schedule(config.lr_warmup_steps, config.steps, config.lr_schedule == "cosine")


class FMTrainer(Task):
    """The forward model as a task of the training loop (``self.loop``); ``run()`` trains up to ``config.steps``."""

    kind = CHECKPOINT_KIND
    state_keys = TRAINING_STATE - {"rng", "data"}

    def __init__(self, config: TrainFMConfig, ctx: DistContext) -> None:
        c, device = config, ctx.device
        self.name = f"fm ({c.model.mode})"
        # images as uint8 bytes from the workers, made float on the device (``_to_device``)
        windows = WindowConfig(c.model.backbone.context_frames, c.predict_frames, c.ego_relative, "train",
                               image_dtype="uint8")  # fmt: skip
        self.train_set = WindowDataset(c.data, windows)
        self.val_set = WindowDataset(c.data, replace(windows, split="val"))
        # the data's view sizes the backbone; view and cost parameters are recorded in the model's config
        c = replace(c, model=c.model.for_data(self.train_set.view, self.train_set.cost_config, c.data))
        self.config, self.ctx = c, ctx
        loop_config = c.loop_config()
        # model: the same initialisation on every rank (the loop then seeds per-rank dropout and latents)
        seed_everything(c.seed)
        model = ForwardModel(c.model)
        model.set_normalisation(self.train_set.stats)
        resuming = loop_config.resuming()
        if c.backbone and not resuming:
            model.backbone.load_state_dict(load_backbone(c.backbone, c.model.backbone).state_dict())
            log.info("backbone initialised from %s", c.backbone)
        if c.freeze_backbone:
            model.backbone.requires_grad_(False)
        if c.warm_start and not resuming:
            warm = ForwardModel.from_checkpoint(c.warm_start)  # checks the file whole: config and weights
            if warm.config.view_spec != c.model.view:
                raise CheckpointError(c.warm_start, f"trained on views of {view_text(warm.config.view_spec)}, "
                                      f"{c.data}'s are {view_text(c.model.view)}",
                                      "warm-start from a model of the data's view")  # fmt: skip
            report = model.load_deterministic(warm.state_dict())
            if not report["loaded"]:
                raise CheckpointError(c.warm_start, "no weight of it fits this model (another size of model?)",
                                      "pass a forward-model checkpoint of the same --preset")  # fmt: skip
            model.set_normalisation(self.train_set.stats)  # this dataset's statistics rule
            log.info("warm start from %s: %d tensors loaded, %d kept", c.warm_start, len(report["loaded"]),
                     len(report["kept"]))  # fmt: skip
        self.model = model.to(device)
        self.loss_module = wrap_ddp(LossModule(self.model), ctx)
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=c.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(c))
        self.amp = c.amp if device.type == "cuda" else "off"
        if c.amp != "off" and self.amp == "off":
            log.warning("mixed precision (%s) is for CUDA only: training in float32 on %s", c.amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.best_val = math.inf
        if c.model.base == "cv":  # each window with the cv world's frames of its predicted steps, rendered
            self.train_set, self.val_set = (RenderedWindows(d, c.data) for d in (self.train_set, self.val_set))
        self.loop = TrainingLoop(self, loop_config, ctx)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, step: int, **extra) -> dict:
        return self.model.checkpoint_dict(step, train_config=self.config.to_dict(), **extra)

    def load_weights(self, ckpt: Mapping, path, advice: str) -> None:
        with checkpoint_errors(path, "invalid config", advice):
            # a checkpoint from before views were recorded has PPUU's, as the model's config says when resolved
            same_model = ForwardModelConfig.from_dict(ckpt["config"]).resolved() == self.config.model.resolved()
        if not same_model:
            raise CheckpointError(path, "the checkpoint's model config differs from this run's",
                                  "use another --out or --no-resume")  # fmt: skip
        load_weights(self.model, ckpt["state_dict"], path, advice)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "best_val": self.best_val}  # fmt: skip

    def load_state_dict(self, ckpt: Mapping) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.best_val = ckpt["best_val"]

    def reset_state(self, ckpt: Mapping, step: int) -> None:
        self.best_val = float(ckpt.get("val", {}).get("loss", math.inf))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(self.config), last_epoch=step - 1)

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        if self.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def _to_device(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        keys = [*BATCH_KEYS, "base_images"] if "base_images" in batch else BATCH_KEYS
        return unit_images({k: batch[k].to(self.ctx.device, non_blocking=True) for k in keys})

    def train_step(self, batch: Mapping[str, Tensor], step: int | None = None) -> tuple[dict[str, float], bool]:
        """Update ``step`` (1-based; default: the loop's next) on this rank's part of a batch (windows
        ``[B, T, ...]``, ``BATCH_KEYS``). Returns (terms averaged over the ranks + ``grad_norm``, updated?)."""
        self.loss_module.train()
        with self._autocast():
            terms = self.loss_module(self._to_device(batch), self.loop.step + 1 if step is None else step)
        self.scaler.scale(terms["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        out, updated = reduce_terms(terms, grad_norm, self.ctx)
        if self.amp == "fp16":  # the scaler skips steps with overflowing gradients by itself
            updated = math.isfinite(out["loss"])
            if updated:
                self.scaler.step(self.optimizer)
        elif updated:
            self.optimizer.step()
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        step_scheduler(self.scheduler)
        return out, updated

    @torch.no_grad()
    def validate(self, step: int | None = None) -> dict[str, float] | None:
        """Mean loss terms over ``val_windows`` fixed windows of the val split (sharded over the ranks)."""
        c, ctx = self.config, self.ctx
        if len(self.val_set) == 0:
            return None
        chosen = evenly_spaced(c.val_windows, len(self.val_set))
        if len(chosen) < ctx.world_size:  # every rank gets a window (the reduction needs every rank's terms)
            chosen = np.resize(chosen, ctx.world_size)
        shard = Subset(self.val_set, chosen[ctx.rank :: ctx.world_size].tolist())
        loader = DataLoader(shard, batch_size=self.loop.rank_batch, num_workers=min(c.workers, 2),
                            generator=torch.Generator().manual_seed(c.seed))  # fmt: skip
        generator = torch.Generator(ctx.device).manual_seed(c.seed)
        self.model.eval()
        sums, names, count = None, None, 0
        for batch in loader:
            with self._autocast():
                terms = self.model.loss(self._to_device(batch), step=self.loop.step if step is None else step,
                                        generator=generator)  # fmt: skip
            names = names or sorted(terms)
            b = batch["actions"].shape[0]
            values = torch.stack([terms[k].float() for k in names]) * b
            sums = values if sums is None else sums + values
            count += b
        self.model.train()
        totals = all_reduce_sum(torch.cat([sums, torch.tensor([float(count)], device=ctx.device)]), ctx)
        return dict(zip(names, (totals[:-1] / totals[-1]).tolist(), strict=True))

    def improved(self, val: Mapping[str, float]) -> bool:
        if val["loss"] < self.best_val:
            self.best_val = val["loss"]
            return True
        return False

    def summary(self, summary: dict) -> dict:
        return summary | {"best_val_loss": self.best_val if math.isfinite(self.best_val) else None}


def train_fm(config: TrainFMConfig) -> dict:
    """Train (or resume) a forward model; under torchrun each process calls this. Returns a summary."""
    with process_group(config.device) as ctx:
        return FMTrainer(config, ctx).run()


__all__ = ["AMP_MODES", "FMTrainer", "LossModule", "TrainFMConfig", "TrainingError", "lr_factor", "train_fm"]
