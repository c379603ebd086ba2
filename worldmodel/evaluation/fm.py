"""Forward-model evaluation: ``evaluate_fm(EvalFMConfig) -> dict`` (``worldmodel eval fm``).

On ``windows`` windows of a split (drawn with ``seed``, in random order), predicting ``horizon`` steps from
the model's context, per horizon step: image MSE, PSNR, SSIM and state RMSE (position [m], velocity [m/s],
unnormalised) of
- ``copy_last``: the last context frame and state, held;
- ``mean``: the model with z = the prior mean (zeros for ``vae``) and dropout off;
- K sampled futures (z ~ prior, dropout off): ``mean_of_k`` (a sample's expected error), ``best_of_k`` and
  ``worst_of_k`` (per window, the sample with the lowest / highest image MSE over the horizon; for states,
  the lowest / highest position error), and ``diversity`` (mean pairwise image MSE and position distance
  between the K samples);
plus the action sensitivity (errors of the mean prediction with each window's actions replaced by those of
another window of its batch, over the errors with the true actions: > 1 means the model listens to its
actions) and the MC-dropout uncertainty (K replicas with dropout on sharing z = the prior mean: per window,
the predictive variance against the squared error of the replicas' mean: Spearman's rho and the
spread-skill ratio sqrt(mean variance) / sqrt(mean squared error), 1 when calibrated).

States are compared in SI units. The dataset normalises with statistics of its own window lengths, so the
batch is converted to the model's normalisation (its buffers) before the model sees it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from worldmodel.driving.window_worlds import RenderedWindows
from worldmodel.evaluation.metrics import mean_pairwise, mse, psnr_from_mse, spearman, ssim
from worldmodel.files import make_dir, write_json
from worldmodel.nn.distributed import resolve_device
from worldmodel.nn.forward_model import ForwardModel
from worldmodel.nn.model_windows import load_model, predict, select_windows, to_model_units, window_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalFMConfig:
    """The evaluation protocol (recorded in the output JSON)."""

    checkpoint: str
    """A forward-model checkpoint (``last.pt``, ``best.pt``)."""
    data: str
    """episodes.h5 to evaluate on."""
    split: str = "test"
    """``train``, ``val`` or ``test``."""
    k: int = 10
    """Sampled futures per window, and MC-dropout replicas."""
    horizon: int = 20
    """Predicted steps per window."""
    windows: int = 200
    """Windows evaluated (all of the split if it has fewer)."""
    seed: int = 0
    """Seed of the window choice, the latents and the dropout masks."""
    batch_size: int = 16
    """Windows per batch (>= 2: actions are shuffled within a batch)."""
    device: str = "auto"
    """``"auto"``, ``"cpu"``, ``"cuda"``, ..."""
    workers: int = 0
    """DataLoader worker processes."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.k < 2 or self.horizon < 1 or self.windows < 2 or self.batch_size < 2:
            raise ValueError("EvalFMConfig: k >= 2, horizon >= 1, windows >= 2 and batch_size >= 2")


def _errors(
    model: ForwardModel, images: Tensor, states: Tensor, truth_images: Tensor, truth_states: Tensor, structure: bool
) -> dict:
    """Per image and step: image MSE, SSIM (if ``structure``), squared position [m^2] and velocity [(m/s)^2]
    errors, and the normalised state squared error. images [B, (K,) T, C, H, W]; truth [B, T, ...]."""
    if images.dim() == truth_images.dim() + 1:
        truth_images, truth_states = truth_images[:, None], truth_states[:, None]
    diff = model.unnormalise_states(states) - model.unnormalise_states(truth_states)
    out = {
        "mse": mse(images, truth_images.expand_as(images)),
        "pos_se": diff[..., :2].pow(2).sum(-1),
        "vel_se": diff[..., 2:].pow(2).sum(-1),
        "state_se": (states - truth_states).pow(2).mean(-1),
    }
    if structure:
        out["ssim"] = ssim(images, truth_images.expand_as(images))
    return out


def _batch_metrics(model: ForwardModel, batch: Mapping[str, Tensor], preds: Mapping) -> dict[str, Tensor]:
    truth_images, truth_states = batch["future_images"], batch["future_states"]
    tp = truth_images.shape[1]
    copy_images = batch["context_images"][:, -1:].expand(-1, tp, -1, -1, -1)
    copy_states = batch["context_states"][:, -1:].expand(-1, tp, -1)
    out = {}
    for name, (images, states) in {
        "copy_last": (copy_images, copy_states),
        "mean": (preds["mean"]["images"], preds["mean"]["states"]),
        "shuffled": (preds["shuffled"]["images"], preds["shuffled"]["states"]),
        "samples": (preds["samples"]["images"], preds["samples"]["states"]),
    }.items():
        errors = _errors(model, images, states, truth_images, truth_states, structure=name != "shuffled")
        for metric, value in errors.items():
            out[f"{name}.{metric}"] = value
    samples = preds["samples"]
    positions = model.unnormalise_states(samples["states"])[..., :2]  # B K T 2
    out["diversity.image_mse"] = mean_pairwise(samples["images"], lambda a, b: mse(a, b))
    out["diversity.position_m"] = mean_pairwise(positions, lambda a, b: (a - b).pow(2).sum(-1).sqrt())
    mc = preds["mc"]
    mc_mean_images, mc_mean_states = mc["images"].mean(1), mc["states"].mean(1)
    mc_si = model.unnormalise_states(mc["states"])
    out["mc.image_var"] = mc["images"].var(1, unbiased=False).mean((-3, -2, -1))  # B T
    out["mc.image_se"] = mse(mc_mean_images, truth_images)
    out["mc.position_var"] = mc_si[..., :2].var(1, unbiased=False).sum(-1)  # B T [m^2]
    diff = model.unnormalise_states(mc_mean_states) - model.unnormalise_states(truth_states)
    out["mc.position_se"] = diff[..., :2].pow(2).sum(-1)
    return {name: value.float().cpu() for name, value in out.items()}


def _curves(m: Mapping[str, Tensor]) -> dict[str, list[float]]:
    """Per-step means over windows: m holds [N, T] tensors mse, ssim, pos_se, vel_se."""
    return {
        "image_mse": m["mse"].mean(0).tolist(),
        "psnr_db": psnr_from_mse(m["mse"]).mean(0).tolist(),
        "ssim": m["ssim"].mean(0).tolist(),
        "position_rmse_m": m["pos_se"].mean(0).sqrt().tolist(),
        "velocity_rmse_mps": m["vel_se"].mean(0).sqrt().tolist(),
    }


def _pick(values: Tensor, score: Tensor, best: bool) -> Tensor:
    """values [N, K, T] -> [N, T]: per window, the sample with the lowest (highest) mean score over T."""
    mean = score.mean(-1)
    k = mean.argmin(1) if best else mean.argmax(1)
    return values[torch.arange(len(k)), k]


def _k_curves(m: Mapping[str, Tensor], best: bool) -> dict[str, list[float]]:
    images = {name: _pick(m[name], m["mse"], best) for name in ("mse", "ssim")}
    states = {name: _pick(m[name], m["pos_se"], best) for name in ("pos_se", "vel_se")}
    return _curves(images | states)


def summarise(metrics: Mapping[str, Tensor]) -> dict:
    """Per-step curves and summaries from the per-window metrics of every batch, concatenated."""
    group = {}
    for name, value in metrics.items():
        prefix, metric = name.split(".", 1)
        group.setdefault(prefix, {})[metric] = value
    samples = group["samples"]
    per_step = {
        "copy_last": _curves(group["copy_last"]),
        "mean": _curves(group["mean"]),
        "mean_of_k": _curves({name: v.flatten(0, 1) for name, v in samples.items()}),  # a sample's error
        "best_of_k": _k_curves(samples, best=True),
        "worst_of_k": _k_curves(samples, best=False),
        "diversity": {
            "image_mse": group["diversity"]["image_mse"].mean(0).tolist(),
            "position_m": group["diversity"]["position_m"].mean(0).tolist(),
        },
    }
    true, shuffled = group["mean"], group["shuffled"]

    def ratio(a: Tensor, b: Tensor, root: bool) -> float:
        r = float(a.mean()) / max(float(b.mean()), 1e-30)
        return math.sqrt(r) if root else r

    sensitivity = {
        "states": ratio(shuffled["state_se"], true["state_se"], root=True),
        "position": ratio(shuffled["pos_se"], true["pos_se"], root=True),
        "velocity": ratio(shuffled["vel_se"], true["vel_se"], root=True),
        "images": ratio(shuffled["mse"], true["mse"], root=False),
        "states_per_step": (shuffled["state_se"].mean(0) / true["state_se"].mean(0).clamp(min=1e-30)).sqrt().tolist(),
    }
    mc = group["mc"]

    def calibration(var: Tensor, se: Tensor) -> dict:
        v, e = var.mean(1), se.mean(1)  # per window, over the horizon
        return {
            "spearman_rho": spearman(v, e),
            "spread_skill": math.sqrt(float(v.mean()) / max(float(e.mean()), 1e-30)),
        }

    uncertainty = {
        "images": calibration(mc["image_var"], mc["image_se"]),
        "position": calibration(mc["position_var"], mc["position_se"]),
        "per_step": {
            "image_var": mc["image_var"].mean(0).tolist(),
            "position_var_m2": mc["position_var"].mean(0).tolist(),
        },
    }
    copy_mse, mean_mse = per_step["copy_last"]["image_mse"], per_step["mean"]["image_mse"]

    def horizon_mean(curves: Mapping[str, list[float]]) -> dict[str, float]:
        return {name: float(np.mean(values)) for name, values in curves.items()}

    summary = {name: horizon_mean(curves) for name, curves in per_step.items()}
    summary["mean_beats_copy_last_image_mse"] = [m < c for m, c in zip(mean_mse, copy_mse, strict=True)]
    return {"per_step": per_step, "summary": summary, "action_sensitivity": sensitivity, "uncertainty": uncertainty}


def evaluate_fm(config: EvalFMConfig, out: str | Path | None = None) -> dict:
    """Run the protocol; with ``out``, write the JSON there and a plot next to it (same name, ``.png``)."""
    if out is not None:
        make_dir(Path(out).parent, out)  # an output that cannot be written fails before the evaluation
    device = resolve_device(config.device)
    model, meta = load_model(config.checkpoint, device)
    dataset = window_dataset(config.data, model, meta, config.split, config.horizon)
    if len(dataset) < 2:
        raise ValueError(f"{config.data}: the {config.split} split has {len(dataset)} windows of "
                         f"{dataset.config.window_frames} frames; need at least 2")  # fmt: skip
    chosen = select_windows(len(dataset), config.windows, config.seed)
    batches = [chosen[i : i + config.batch_size] for i in range(0, len(chosen), config.batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:  # shuffling actions needs two windows in a batch
        batches[-2] = np.concatenate(batches[-2:])
        batches.pop()
    items = RenderedWindows(dataset, config.data) if model.config.base == "cv" else dataset  # + the frames it corrects
    loader = DataLoader(Subset(items, chosen.tolist()), batch_sampler=_offsets(batches), num_workers=config.workers)
    generator = torch.Generator(device).manual_seed(config.seed)
    collected: dict[str, list[Tensor]] = {}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(config.seed)  # dropout masks
        for batch in tqdm(loader, desc="eval fm", unit="batch", disable=not config.progress):
            batch = to_model_units(batch, dataset, model)
            preds = predict(model, batch, config.k, generator)
            for name, value in _batch_metrics(model, batch, preds).items():
                collected.setdefault(name, []).append(value)
    result = summarise({name: torch.cat(values) for name, values in collected.items()})
    result = {
        "protocol": asdict(config)
        | {
            "checkpoint_step": meta["step"],
            "mode": model.config.mode,
            "context_frames": model.config.backbone.context_frames,
            "windows_evaluated": len(chosen),
            "windows_available": len(dataset),
            "ego_relative": dataset.config.ego_relative,
            "dropout": model.config.dropout,
            "best_of_k": "per window, the sample with the lowest mean image MSE over the horizon "
            "(states: the lowest mean squared position error)",
            "action_shuffle": "each window gets the actions of the previous window of its (random) batch",
            "mc_dropout": "k replicas with dropout on, sharing z = the prior mean",
        },
        **result,
    }
    if out is not None:
        from worldmodel.viz.render import plot_fm_eval

        out = write_json(result, out)
        plot_fm_eval(result, out.with_suffix(".png"))
    return result


def _offsets(batches: list[np.ndarray]) -> list[list[int]]:
    """Batches of positions in the Subset (its i-th item is ``chosen[i]``)."""
    out, start = [], 0
    for b in batches:
        out.append(list(range(start, start + len(b))))
        start += len(b)
    return out


__all__ = ["EvalFMConfig", "evaluate_fm", "load_model", "predict", "select_windows", "summarise", "to_model_units"]
