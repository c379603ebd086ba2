"""The forward-model part of the ``worldmodel`` command: ``train fm`` and ``eval fm``.

Their flags are made from ``TrainFMConfig`` (with ``ForwardModelConfig`` and the backbone's
``context_frames`` as overrides of ``--preset``) and ``EvalFMConfig`` (``worldmodel.cli.config``). On a CPU,
``train fm`` first measures a few steps of its model and prints (stderr) how long the run would take.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

from worldmodel.cli.config import ConfigFlags, build

PRESETS = ("tiny", "ppuu")
#: Runs of at most this many windows (steps x batch) start without a time estimate (tests, smoke runs).
ESTIMATE_ABOVE_WINDOWS = 2_000


def preset(name: str):
    """The ``TrainFMConfig`` of ``--preset name`` before the flags: ``ForwardModelConfig.<name>()``."""
    from worldmodel.nn.forward_model import ForwardModelConfig
    from worldmodel.training.fm import TrainFMConfig

    return TrainFMConfig(model=getattr(ForwardModelConfig, name)())


@functools.cache
def train_flags() -> tuple[ConfigFlags, ...]:
    """The flags of ``train fm``: the run's, the model's and the backbone's context (over the preset)."""
    from worldmodel.nn.backbone import BackboneConfig
    from worldmodel.nn.forward_model import IMAGE_UPDATES, MODES, ForwardModelConfig
    from worldmodel.nn.forward_model_config import BASES
    from worldmodel.training.fm import AMP_MODES, LR_SCHEDULES, TrainFMConfig

    presets = {name: functools.partial(preset, name) for name in PRESETS}
    return (
        ConfigFlags(TrainFMConfig, required=("data",), rename={"lr_warmup_steps": "lr-warmup"},
                    choices={"amp": AMP_MODES, "lr_schedule": LR_SCHEDULES}),
        ConfigFlags(ForwardModelConfig, at="model", rename={"kl_anneal_steps": "kl-anneal"},
                    choices={"mode": MODES, "image_update": IMAGE_UPDATES, "base": BASES}, presets=presets),
        ConfigFlags(BackboneConfig, at="model.backbone", include=("context_frames",), presets=presets),
    )  # fmt: skip


def add_train_parser(tsub) -> argparse.ArgumentParser:
    p = tsub.add_parser("fm", help="train the forward model (runs under torchrun for DDP)")
    p.add_argument("--preset", choices=PRESETS, default="ppuu",
                   help="model size: tiny (CPU minutes) or ppuu (PPUU's, for a GPU) (default: ppuu)")  # fmt: skip
    run, model, backbone = train_flags()
    run.add_to(p)
    model.add_to(p, "the model (over --preset)")
    backbone.add_to(p, "the backbone (over --preset)")
    return p


def train_config(args: argparse.Namespace):
    """The ``TrainFMConfig`` of parsed ``train fm`` arguments."""
    return build(preset(args.preset), args, *train_flags())


def run_train(args: argparse.Namespace) -> dict:
    from worldmodel.training.fm import train_fm

    config = train_config(args)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        note = time_note(config, hint=None if args.preset == "tiny" else "--preset tiny --steps 500")
        if note:
            print(note, file=sys.stderr)
    return train_fm(config)


# ------------------------------------------------------------------------------------------ time estimate
def time_note(config, hint: str | None = None) -> str | None:
    """One line saying how long ``config`` would train on this machine's CPU (with ``hint``, the flags of a
    shorter run, when over an hour), or None when it runs elsewhere (CUDA), is small
    (``ESTIMATE_ABOVE_WINDOWS``) or has no data (``train_fm`` then says so)."""
    from worldmodel.nn.distributed import resolve_device

    try:
        on_cpu = resolve_device(config.device).type == "cpu"
    except (ValueError, RuntimeError):  # train_fm reports a bad device
        return None
    if not on_cpu or config.steps * config.batch_size <= ESTIMATE_ABOVE_WINDOWS or not Path(config.data).is_file():
        return None
    per_step = step_seconds(config)
    total = per_step * config.steps
    note = (f"worldmodel train fm: about {duration(total)} on the CPU for {config.steps} steps "
            f"({per_step:.3g} s per step at batch {config.batch_size}, measured; validation not included)")  # fmt: skip
    if (Path(config.out) / "checkpoints" / "last.pt").exists() and config.resume:
        note += "; a resumed run has fewer steps left"
    if total > 3600 and hint:
        note += f"; for a CPU run of minutes: {hint}"
    return note


def step_seconds(config, probe_batch: int = 2, rounds: int = 1) -> float:
    """Seconds per training step of ``config`` on the CPU: the fastest of ``rounds`` steps (forward, backward,
    Adam; after one warm-up step) of its model on ``probe_batch`` random windows, times batch / probe_batch.
    The caller's random state is left as it was."""
    import torch

    from worldmodel.bench.fm import synthetic_batch
    from worldmodel.nn.forward_model import ForwardModel

    b = config.model.backbone
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ForwardModel(config.model).train()
        batch = synthetic_batch(probe_batch, b.context_frames, config.predict_frames, b.height, b.width)
        if config.model.base == "cv":  # the frames it corrects (their rendering is not timed)
            batch["base_images"] = batch["future_images"].flip(1)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        times = []
        for _ in range(rounds + 1):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            model.loss(batch, step=0)["loss"].backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return min(times[1:]) * config.batch_size / probe_batch


def duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.5 h"``, ``"31 days"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


# ------------------------------------------------------------------------------------------ eval fm
@functools.cache
def eval_flags() -> ConfigFlags:
    from worldmodel.data.episodes import SPLITS
    from worldmodel.evaluation.fm import EvalFMConfig

    return ConfigFlags(EvalFMConfig, choices={"split": SPLITS})


def add_eval_parser(esub) -> argparse.ArgumentParser:
    p = esub.add_parser("fm", help="per-step prediction metrics of a forward model (JSON + plot)")
    eval_flags().add_to(p)
    p.add_argument("--out", default=None, help="output JSON (a .png plot is written next to it)")
    return p


def run_eval(args: argparse.Namespace) -> dict:
    """Evaluate; returns what the command prints."""
    from worldmodel.evaluation.fm import evaluate_fm

    result = evaluate_fm(eval_flags().config(args), out=args.out)
    return {"out": args.out, "plot": str(Path(args.out).with_suffix(".png")) if args.out else None,
            **{k: result[k] for k in ("protocol", "summary", "action_sensitivity", "uncertainty")}}  # fmt: skip


__all__ = ["add_eval_parser", "add_train_parser", "duration", "run_eval", "run_train", "step_seconds", "time_note",
           "train_config", "train_flags"]  # fmt: skip
