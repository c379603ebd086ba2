"""SSL pretraining of the shared backbone: ``train_ssl(TrainSSLConfig) -> summary`` (``worldmodel train ssl``).

``SSLTrainer`` is a ``Task`` of the one training loop (``worldmodel.training.loop``: data position, NaN
guard, metrics, checkpoint cadence, resume, per-rank RNG, progress bar). One step, told in order
(``SSLTrainer.train_step``):
1. the next batch of this rank's shard: windows of Tc + max_offset frames of one car (``WindowDataset``);
2. two views per window (``make_views``: temporal neighbours, small shifts, erasing; a per-rank generator);
3. the objective's embeddings of both views (through DDP when distributed), then ``gather_with_grad`` over
   the ranks, so that batch-wide losses (VICReg's variance and covariance, Barlow's cross-correlation,
   NT-Xent's negatives) see the global batch and the gradients equal one process's on the whole batch;
4. the named loss terms, backward, gradient clipping (optional), AdamW and learning-rate schedule steps; a
   step with a non-finite loss or gradient skips the AdamW step, and ``max_bad_steps`` in a row stop the run;
5. ``after_step`` (BYOL's EMA target), and the health metrics of the step's embeddings and representations.
Every step's terms and health metrics are one line of ``metrics.jsonl`` (every ``log_every`` steps).

Checkpoints ``checkpoints/last.pt``: ``{"format": 1, "kind": "ssl", "config", "state_dict" (encoder and
heads), "target" (BYOL's EMA target, or absent), "step", "optimizer", "scheduler", "rng", "views_rng",
"data", "skipped", "state_mean", "state_std"}``. At the end ``backbone.pt`` holds the backbone alone
(``worldmodel.nn.backbone_export``: ``export_backbone``; ``load_backbone`` rebuilds it for the forward
model).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from worldmodel.data.windows import WindowConfig, WindowDataset, unit_images
from worldmodel.nn.backbone import Backbone, BackboneConfig
from worldmodel.nn.backbone_export import export_backbone
from worldmodel.nn.checkpointing import (
    CheckpointError,
    advice_for,
    checkpoint_errors,
    load_checkpoint,
    load_weights,
)
from worldmodel.nn.distributed import DistContext, barrier, process_group
from worldmodel.nn.saving import seed_everything
from worldmodel.ssl.gather import gather_with_grad
from worldmodel.ssl.health import health_metrics
from worldmodel.ssl.objectives import JointEmbedding, SSLConfig, build_objective
from worldmodel.ssl.views import ViewConfig, make_views
from worldmodel.training.loop import (
    LoopConfig,
    Task,
    TrainingLoop,
    reduce_terms,
    step_scheduler,
    warmup_schedule,
    wrap_ddp,
)

log = logging.getLogger(__name__)

GATHERED = ("z_a", "z_b", "p_a", "p_b", "t_a", "t_b")
SSL_DROPOUT = 0.0
"""Backbone dropout while pretraining (as SimCLR, BYOL, VICReg, which use none). The two views get
independent Dropout2d masks, which blank whole channels of the fused map in one view and not the other;
the objectives then learn to do without any single channel, and the fine features carried by few channels
go first: on ``tiny`` (Barlow / VICReg, 300 steps) the lateral-offset probe R^2 rose from 0.18 / 0.28 with
dropout 0.1 to 0.30 / 0.34 without it, the other probes unchanged or better."""


@dataclass(frozen=True)
class TrainSSLConfig:
    """An SSL pretraining run (saved resolved as ``<out>/config.json``)."""

    data: str = "datasets/i80-sim/episodes.h5"
    """episodes.h5 to train on (its train split)."""
    out: str = "runs/ssl"
    """Run directory: config.json, metrics.jsonl, checkpoints/last.pt, backbone.pt."""
    ssl: SSLConfig = field(default_factory=SSLConfig)
    """The objective (method, heads, loss constants)."""
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig.ppuu(dropout=SSL_DROPOUT))
    """The shared backbone (its ``context_frames`` is the frames per view). Trained without dropout by
    default (``SSL_DROPOUT``); the dropout of a model that loads the exported backbone is its own."""
    views: ViewConfig = field(default_factory=ViewConfig)
    """How the two views are drawn."""
    steps: int = 10_000
    """Total optimiser steps (a resumed run continues up to this); the schedules (learning rate, BYOL's
    momentum) span them."""
    stop_at: int = 0
    """Stop after this step, with a checkpoint, as if interrupted (0: run to ``steps``): a run split into
    pieces (time-limited sessions) ends exactly as the run in one go."""
    batch_size: int = 256
    """Global batch size in windows (each gives two views), split evenly over the ranks."""
    lr: float = 1e-3
    """AdamW peak learning rate."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    predictor_lr_scale: float = 1.0
    """The predictor's (BYOL, SimSiam) learning rate as a multiple of ``lr``; same schedule."""
    warmup_steps: int = 100
    """Linear warm-up steps, then cosine decay to 0 at ``steps``."""
    grad_clip: float = 0.0
    """Maximum global gradient norm (0: no clipping)."""
    seed: int = 0
    """Seed of the initialisation, the data order, the views and dropout."""
    device: str = "auto"
    """``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ..."""
    workers: int = 1
    """DataLoader worker processes per rank (0: load in the training process)."""
    log_every: int = 1
    """Steps between lines of ``metrics.jsonl`` (terms and health averaged over those steps)."""
    ckpt_every: int = 500
    """Steps between writes of ``checkpoints/last.pt`` (and always at the end)."""
    max_bad_steps: int = 10
    """Stop after this many consecutive steps with a non-finite loss or gradient (each one is skipped)."""
    resume: bool = True
    """Continue from ``checkpoints/last.pt`` when it exists."""
    progress: bool = True
    """Show a progress bar (rank 0)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):  # NaN fails every comparison
            raise ValueError(f"lr (--lr) must be a finite number > 0, got {self.lr}")
        if self.steps < 0 or self.batch_size < 2 or self.lr <= 0 or self.grad_clip < 0 or self.predictor_lr_scale <= 0:
            raise ValueError(
                "TrainSSLConfig: steps >= 0, batch_size >= 2, lr > 0, predictor_lr_scale > 0, grad_clip >= 0"
            )
        if min(self.log_every, self.ckpt_every, self.max_bad_steps) < 1 or self.warmup_steps < 0:
            raise ValueError("TrainSSLConfig: log_every, ckpt_every, max_bad_steps >= 1 and warmup_steps >= 0")

    @classmethod
    def ppuu(cls, method: str = "vicreg", **overrides) -> TrainSSLConfig:
        """The full-size preset: ``BackboneConfig.ppuu()``, heads 512-512, batch 256, with the method's
        defaults (``method_defaults``)."""
        return cls(**(dict(ssl=SSLConfig(method=method)) | method_defaults(method) | overrides))

    @classmethod
    def tiny(cls, method: str = "vicreg", **overrides) -> TrainSSLConfig:
        """The CPU-minutes preset: ``BackboneConfig.tiny()`` (4 frames), heads 256-256, batch 128, with the
        method's defaults (``method_defaults``)."""
        kwargs = dict(
            ssl=SSLConfig(method=method, projector=(256, 256), predictor_hidden=64),
            backbone=BackboneConfig.tiny(dropout=SSL_DROPOUT),
            steps=300,
            batch_size=128,
            warmup_steps=30,
            ckpt_every=100,
        )
        return cls(**(kwargs | method_defaults(method) | overrides))

    def to_dict(self) -> dict:
        return dict(self.__dict__) | {
            "ssl": self.ssl.to_dict(),
            "backbone": self.backbone.to_dict(),
            "views": self.views.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainSSLConfig:
        return cls(**(dict(d) | {
            "ssl": SSLConfig.from_dict(d["ssl"]),
            "backbone": BackboneConfig.from_dict(d["backbone"]),
            "views": ViewConfig.from_dict(d["views"]),
        }))  # fmt: skip

    def loop_config(self) -> LoopConfig:
        """The training loop's part of this config (no validation: the probes are ``eval ssl``)."""
        return LoopConfig(out=self.out, steps=self.steps, batch_size=self.batch_size, seed=self.seed,
                          log_every=self.log_every, ckpt_every=self.ckpt_every, max_bad_steps=self.max_bad_steps,
                          workers=self.workers, resume=self.resume, progress=self.progress, stop_at=self.stop_at,
                          data=self.data)  # fmt: skip


def method_defaults(method: str) -> dict:
    """``TrainSSLConfig`` fields that differ by method (both presets).

    BYOL and SimSiam (no negatives, no variance or decorrelation term) **drop a view's states** with
    probability 0.25 (``ViewConfig.drop_states``, per view). The two views of one car share its speed and
    recent path, which the state alone tells, and these two objectives settled on it: on ``tiny`` (300 steps)
    their representations' effective rank fell to 6.3 (BYOL) and 3.8 (SimSiam), against 4.8 for a random
    backbone, and their headway and neighbour probes fell below the random backbone's. Dropping states per
    view raised the ranks to 19.9 and 15.2 and put every image probe above random. A higher probability
    taught them to ignore the states (per view 0.5: speed ridge R^2 0.9987 against 0.9994), dropping the
    states of both views together kept the shortcut (rank 6.1), and images only (probability 1) helped BYOL
    less (rank 7.5) and SimSiam not at all. VICReg, Barlow Twins and SimCLR spread their embeddings by
    themselves and keep the states (SimCLR with per-view dropout 0.5 lost speed: 0.9977).

    SimSiam also takes its paper's weight decay (1e-4) and a 10x predictor learning rate (a faster
    predictor keeps up with the representation, as DirectPred argues); at this budget these two were not
    ablated apart from the state dropout.
    """
    if method == "byol":
        return {"views": ViewConfig(drop_states=0.25)}
    if method == "simsiam":
        return {"views": ViewConfig(drop_states=0.25), "weight_decay": 1e-4, "predictor_lr_scale": 10.0}
    return {}


def lr_factor(warmup: int, total: int):
    """Linear warm-up then cosine decay to 0 (``warmup_schedule``; the scheduler's state stays plain)."""
    return warmup_schedule(warmup, total, cosine=True)


def load_objective(path: str | os.PathLike) -> tuple[JointEmbedding, TrainSSLConfig, dict]:
    """(objective with its trained weights, run config, {"state_mean", "state_std", "step"}) from last.pt."""
    advice = advice_for("ssl")
    checkpoint = load_checkpoint(path, "ssl", advice=advice)
    with checkpoint_errors(path, "damaged SSL checkpoint", advice):
        config = TrainSSLConfig.from_dict(checkpoint["config"])
        objective = build_objective(Backbone(config.backbone), config.ssl)
        load_weights(objective, checkpoint["state_dict"], path, advice, strict=False)
        if "target" in checkpoint and hasattr(objective, "target"):
            load_weights(objective.target, checkpoint["target"], path, advice)
        extra = {"state_mean": checkpoint["state_mean"], "state_std": checkpoint["state_std"],
                 "step": checkpoint["step"]}  # fmt: skip
    return objective, config, extra


# ---------------------------------------------------------------------- training
class SSLTrainer(Task):
    """One rank's SSL objective as a task of the training loop (``self.loop``); ``run()`` trains up to
    ``config.steps`` (or ``stop_at``)."""

    kind = "ssl"
    state_keys = frozenset({"optimizer", "scheduler"})
    postfix = ("loss", "emb_effective_rank")

    def __init__(self, config: TrainSSLConfig, ctx: DistContext) -> None:
        self.config, self.ctx = config, ctx
        c, device = config, ctx.device
        self.name = f"ssl ({c.ssl.method})"
        windows = WindowConfig(
            c.backbone.context_frames, c.views.max_offset, ego_relative=True, split="train", image_dtype="uint8"
        )  # bytes from the workers, made float in ``views``
        self.train_set = WindowDataset(c.data, windows)
        self.state_mean = self.train_set.stats["state_mean"]
        self.state_std = self.train_set.stats["state_std"]
        seed_everything(c.seed)  # the same initialisation on every rank
        self.objective = build_objective(Backbone(c.backbone), c.ssl).to(device)
        if ctx.distributed and device.type == "cuda":  # per-rank BatchNorm statistics on CPU (gloo)
            self.objective = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.objective)
        self.model = wrap_ddp(self.objective, ctx)
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=c.lr, weight_decay=c.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(c.warmup_steps, c.steps))
        self.views_rng = torch.Generator().manual_seed(c.seed + 104729 * (ctx.rank + 1))
        self.loop = TrainingLoop(self, c.loop_config(), ctx)

    def _param_groups(self) -> list[dict]:
        """The trainable parameters: the predictor's (if any) at ``lr * predictor_lr_scale``, the rest at lr."""
        c = self.config
        predictor = getattr(self.objective, "predictor", None)
        mine = {id(p) for p in predictor.parameters()} if predictor is not None else set()
        trainable = [p for p in self.objective.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in mine], "lr": c.lr}]
        if mine:
            groups.append({"params": [p for p in trainable if id(p) in mine], "lr": c.lr * c.predictor_lr_scale})
        return groups

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, step: int, **extra) -> dict:
        """``{"format": 1, "kind": "ssl", "config" (the run's), "state_dict" (encoder and heads), "step",
        "target" (BYOL's EMA target, if any), "state_mean", "state_std", ...}``."""
        checkpoint = {"format": 1, "kind": "ssl", "config": self.config.to_dict(),
                      "state_dict": self.objective.online_state_dict(), "step": step}  # fmt: skip
        if hasattr(self.objective, "target"):
            checkpoint["target"] = self.objective.target.state_dict()
        return checkpoint | {"state_mean": self.state_mean, "state_std": self.state_std, **extra}

    def load_weights(self, ckpt: Mapping, path: Path, advice: str) -> None:
        c = self.config
        with checkpoint_errors(path, "invalid config", advice):
            saved = TrainSSLConfig.from_dict(ckpt["config"])
        if saved.ssl != c.ssl:
            raise CheckpointError(path, "not an SSL run with this objective", "use another --out or --no-resume")
        if saved.backbone != c.backbone:
            raise CheckpointError(path, "the checkpoint's backbone differs from this run's",
                                  "use another --out or --no-resume")  # fmt: skip
        load_weights(self.objective, ckpt["state_dict"], path, advice, strict=False)
        if "target" in ckpt:
            load_weights(self.objective.target, ckpt["target"], path, advice)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, ckpt: Mapping) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])

    def reset_state(self, ckpt: Mapping, step: int) -> None:
        schedule = lr_factor(self.config.warmup_steps, self.config.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule, last_epoch=step - 1)

    def generators(self) -> dict[str, torch.Generator]:
        return {"views_rng": self.views_rng}

    # ------------------------------------------------------------------ steps
    def views(self, batch: Mapping[str, Tensor]):
        """Two views of the batch's windows, on the device."""
        batch = unit_images(batch)
        images = torch.cat([batch["context_images"], batch["future_images"]], dim=1)  # B (Tc + K) C H W
        states = torch.cat([batch["context_states"], batch["future_states"]], dim=1)  # B (Tc + K) S
        a, b = make_views(images, states, self.config.backbone.context_frames, self.state_mean, self.state_std,
                          self.config.views, self.views_rng)  # fmt: skip
        dev = self.ctx.device
        return tuple(x.to(dev, non_blocking=True) for x in a), tuple(x.to(dev, non_blocking=True) for x in b)

    def train_step(self, batch: Mapping[str, Tensor], step: int | None = None) -> tuple[dict[str, float], bool]:
        """Update ``step`` (1-based; default: the loop's next) on this rank's part of a batch. Returns (the loss
        terms averaged over the ranks, the gradient norm, and when finite the health metrics of the global
        batch's embeddings and this rank's representations; finite?)."""
        c = self.config
        step = self.loop.step + 1 if step is None else step
        self.model.train()
        view_a, view_b = self.views(batch)
        outputs = self.model(view_a, view_b)
        gathered = {k: gather_with_grad(v) if k in GATHERED else v for k, v in outputs.items()}
        terms = self.objective.loss(gathered)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        params = [p for p in self.objective.parameters() if p.requires_grad]
        if c.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
        else:
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        out, finite = reduce_terms(terms, grad_norm, self.ctx)
        if finite:
            self.optimizer.step()
        step_scheduler(self.scheduler)
        out |= self.objective.after_step(step - 1, c.steps)  # the schedules count from 0
        if finite:
            out |= health_metrics(gathered["z_a"].detach(), "emb_")
            out |= health_metrics(outputs["y_a"].detach(), "repr_")
        return out, finite

    def summary(self, summary: dict) -> dict:
        """At the last step, ``backbone.pt`` (rank 0); ``{"steps", "last", "checkpoint", "backbone"}``."""
        c, step = self.config, summary["step"]
        backbone_path = Path(c.out) / "backbone.pt"
        if self.ctx.is_main and step == c.steps:
            export_backbone(self.objective.backbone, backbone_path, step, method=c.ssl.method,
                            state_mean=self.state_mean, state_std=self.state_std)  # fmt: skip
        barrier(self.ctx)
        return {"steps": step, "last": summary["train"], "checkpoint": summary["checkpoint"],
                "backbone": str(backbone_path) if step == c.steps else None}  # fmt: skip


def train_ssl(config: TrainSSLConfig) -> dict:
    """Train (or resume) an SSL run; under torchrun every process calls this. Returns a summary."""
    with process_group(config.device) as ctx:
        return SSLTrainer(config, ctx).run()


__all__ = [
    "SSLTrainer",
    "TrainSSLConfig",
    "load_objective",
    "method_defaults",
    "train_ssl",
]
