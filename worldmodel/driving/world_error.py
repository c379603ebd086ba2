"""Offline comparison of the world providers on the same test windows: ``compare_worlds(WorldErrorConfig)``.

``worldmodel eval worlds``. On ``windows`` windows of a split (drawn with ``seed`` as ``eval fm`` draws them:
the model's context, then ``horizon`` future frames of the same car), each world predicts the car's future
views at its recorded poses, and is scored against ``oracle``, the recorded future views (the ``/images``
rows of episodes.h5: rendered at the car's own poses, image and state of a row being the same instant):

- ``cv``: the recorded vehicles of the last context frame moved at constant velocity
  (``worlds.constant_velocity``), rendered by ``worlds.RenderedWorld("cv")`` at the recorded future poses;
- ``copy_last``: the last context frame held (the trivial baseline);
- ``traffic`` (with ``traffic``): the cars of the last context frame moved by the traffic model, rendered at
  the recorded future poses (``worlds.TrafficWorld``);
- ``model`` (with ``fm``): the forward model rolled out from the context with the recorded actions, z = the
  prior mean, dropout off, images clamped to [0, 1] (``eval fm``'s mean prediction); a ``base="cv"`` model
  corrects the ``cv`` frames above.

Per horizon step t = 1..horizon, averaged over windows: the mean squared error of the vehicles channel
(``VEHICLES``, values in [0, 1]) and the mean absolute error of the proximity cost (``costs.pixel_costs`` on
the predicted and on the oracle frames, with the car's recorded speed at that step and its size); and their
means over the horizon. ``render_check`` renders the oracle itself with the same renderer
(``RenderedWorld("oracle")``) at the recorded poses and scores it against the stored views: what the renderer
alone contributes to the ``cv`` error. It is ~0 but not 0 (~1e-5 on the tiny scenario, a few % of ``cv``'s
error at one step): extraction renders every car of a frame in one call with the ego drawn at its size, then
blanks the ego's own layer over its footprint + 2 px, which clips the edge of a neighbour that shares that
layer; the providers draw the ego as nothing, and the layers (alternating along each lane among the cars
drawn together) differ, so a few edge pixels beside the ego and at the view's rear edge differ.

The recordings: the dataset directory holds the trajectories files next to episodes.h5
(``closed_loop.dataset_files``); an episode's vehicle id maps to its file and recorded id by
``locate_vehicle``, and episode row k is the car's k-th recorded frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from worldmodel.costs import CostConfig, pixel_costs
from worldmodel.data.episodes import SPLITS
from worldmodel.data.hdf5 import DataError, write_json
from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving.closed_loop import dataset_files
from worldmodel.driving.window_worlds import Recordings, recorded_poses
from worldmodel.driving.worlds import RenderedWorld, TrafficWorld
from worldmodel.nn.distributed import resolve_device
from worldmodel.nn.forward_model import ForwardModel
from worldmodel.nn.forward_model_config import view_text
from worldmodel.nn.model_windows import load_model, select_windows, to_model_units, window_dataset
from worldmodel.traffic.view import VEHICLES, ViewSpec

#: Windows read (and rolled out by the forward model) per batch.
BATCH_WINDOWS = 16


@dataclass(frozen=True)
class WorldErrorConfig:
    """The comparison protocol (recorded in the output JSON)."""

    data: str = "datasets/tiny"
    """Dataset directory (episodes.h5 + the trajectories-*.h5 it was extracted from), or its episodes.h5."""
    fm: str | None = None
    """Forward-model checkpoint for the ``model`` world; None: compare ``cv`` and ``copy_last`` only."""
    traffic: str | None = None
    """Traffic-model checkpoint (``train traffic``) for the ``traffic`` world; None: not compared."""
    split: str = "test"
    """Windows of this split (``train``, ``val``, ``test``)."""
    windows: int = 200
    """Windows compared (all of the split if it has fewer)."""
    horizon: int = 20
    """Predicted steps per window."""
    seed: int = 0
    """Seed of the window choice."""
    device: str = "cpu"
    """Torch device of the forward model (``"auto"``, ``"cpu"``, ``"cuda"``, ...)."""
    out: str | None = None
    """Output JSON (written atomically); None: write nothing."""
    context_frames: int | None = None
    """Context frames before the prediction; None: the forward model's (20 without one)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.windows < 1 or self.horizon < 1 or (self.context_frames is not None and self.context_frames < 1):
            raise ValueError("WorldErrorConfig: windows, horizon and context_frames must be >= 1")
        if self.split not in SPLITS:
            raise ValueError(f"WorldErrorConfig: split must be one of {SPLITS}, got {self.split!r}")


# ------------------------------------------------------------------------------------------ windows
def _open_windows(config: WorldErrorConfig, episodes: Path) -> tuple[WindowDataset, ForwardModel | None, dict]:
    """The split's windows (as the model was trained, with ``fm``), the model (or None) and its metadata."""
    if config.fm is None:
        context = config.context_frames or 20
        return WindowDataset(episodes, WindowConfig(context, config.horizon, False, config.split)), None, {}
    model, meta = load_model(config.fm, resolve_device(config.device))
    context = model.config.backbone.context_frames
    if config.context_frames not in (None, context):
        raise ValueError(f"context_frames {config.context_frames}: the forward model {config.fm} takes {context}")
    dataset = window_dataset(episodes, model, meta, config.split, config.horizon)
    if dataset.view != model.config.view_spec:
        raise DataError(episodes, f"its views are {view_text(dataset.view)}, but the forward model {config.fm} "
                        f"was trained on {view_text(model.config.view_spec)}; compare on data of the model's view")  # fmt: skip
    return dataset, model, meta


# ------------------------------------------------------------------------------------------ predictions
@torch.no_grad()
def model_prediction(model: ForwardModel, batch: dict[str, Tensor]) -> Tensor:
    """The model's mean prediction (z = the prior mean, dropout off) of a batch in model units
    (``to_model_units``): images ``[B, T, 3, H, W]`` in [0, 1], on the CPU."""
    model.eval().set_dropout(False)
    out = model.rollout(batch["context_images"], batch["context_states"], batch["actions"],
                        base_images=batch.get("base_images"))  # fmt: skip
    return out["images"].clamp(0, 1).float().cpu()


class _Comparison:
    """Scores the predictions of batches of windows against their stored futures."""

    def __init__(self, dataset: WindowDataset, model: ForwardModel | None, files: list[Path], spec: ViewSpec,
                 costs: CostConfig, traffic: str | None = None) -> None:  # fmt: skip
        self.dataset, self.model, self.spec, self.costs = dataset, model, spec, costs
        self.worlds = {"oracle": RenderedWorld("oracle", spec, reuse=None), "cv": RenderedWorld("cv", spec)}
        if traffic is not None:
            self.worlds["traffic"] = TrafficWorld(traffic, spec)
        self.recordings = Recordings(files)

    def rendered(self, vehicles: np.ndarray, rows: np.ndarray, speeds: Tensor) -> dict[str, Tensor]:
        """Each rendered world's views ``[B, T, 3, H, W]`` in [0, 1] of B windows (episode ``vehicles`` [B],
        last context ``rows`` [B]) at the recorded poses. Checks that the recordings are the episodes': their
        speeds must be the episodes' ``speeds`` [B, T] [m/s]."""
        steps = list(range(1, speeds.shape[1] + 1))
        out: dict[str, list[Tensor]] = {name: [] for name in self.worlds}
        for vehicle, row, speed in zip(vehicles, rows, speeds.numpy(), strict=True):
            sim = self.recordings.handover(int(vehicle), int(row))
            poses, recorded_speed = recorded_poses(sim, len(steps))
            self.recordings.check_speeds(int(vehicle), recorded_speed, speed)
            for name, world in self.worlds.items():
                out[name].append(world.futures([sim], poses[None], steps).images[:, 0])  # [1, T, 3, H, W]
        return {name: torch.cat(views) for name, views in out.items()}

    def score(self, batch: dict[str, Tensor], vehicles: np.ndarray, rows: np.ndarray) -> dict[str, dict[str, Tensor]]:
        """``{prediction: {metric: [B, T]}}`` of a dataset batch: ``oracle`` (the rendered oracle: the render
        check), ``cv``, ``copy_last``, ``model`` (with a model); and ``truth`` ``{"proximity": [B, T]}``."""
        speeds = self.dataset.denormalise_states(batch["future_states"])[..., 2:].norm(dim=-1)  # [B, T] [m/s]
        size = batch["car_size"]  # [B, 2] length, width [m]
        costs = {"speed_mps": speeds, "length_m": size[:, :1], "width_m": size[:, 1:], "spec": self.spec,
                 "config": self.costs}  # fmt: skip
        truth = batch["future_images"]  # [B, T, 3, H, W]
        predictions = self.rendered(vehicles, rows, speeds)
        predictions["copy_last"] = batch["context_images"][:, -1:].expand_as(truth)
        if self.model is not None:
            units = to_model_units(batch, self.dataset, self.model)
            if self.model.config.base == "cv":  # the model corrects the cv world's frames
                units["base_images"] = predictions["cv"].to(units["actions"].device)
            predictions["model"] = model_prediction(self.model, units)
        truth_proximity = pixel_costs(truth, **costs)["proximity"]
        out = {"truth": {"proximity": truth_proximity}}
        for name, images in predictions.items():
            out[name] = {
                "vehicles_mse": (images[:, :, VEHICLES] - truth[:, :, VEHICLES]).pow(2).mean((-2, -1)),
                "proximity_abs_error": (pixel_costs(images, **costs)["proximity"] - truth_proximity).abs(),
            }
        return out


# ------------------------------------------------------------------------------------------ summary
def summarise(scores: dict[str, dict[str, Tensor]]) -> dict:
    """``per_step`` (means over windows, ``[T]`` lists) and ``summary`` (means over windows and steps) of
    ``{prediction: {metric: [N, T]}}``."""
    per_step = {name: {m: v.mean(0).tolist() for m, v in metrics.items()} for name, metrics in scores.items()}
    summary = {name: {m: float(v.mean()) for m, v in metrics.items()} for name, metrics in scores.items()}
    return {"per_step": per_step, "summary": summary}


def _score_windows(comparison: _Comparison, chosen: np.ndarray, progress: bool) -> dict[str, dict[str, Tensor]]:
    """``{prediction: {metric: [N, T]}}`` of the ``chosen`` windows of the comparison's dataset, in order."""
    dataset, context = comparison.dataset, comparison.dataset.config.context_frames
    episode = dataset.window_episodes[chosen]
    vehicles = dataset.episodes["vehicle"][episode]
    rows = dataset.window_starts[chosen] - dataset.episodes["start"][episode] + context - 1  # last context rows
    loader = DataLoader(Subset(dataset, chosen.tolist()), batch_size=BATCH_WINDOWS)
    collected: dict[str, dict[str, list[Tensor]]] = {}
    for i, batch in enumerate(tqdm(loader, desc="eval worlds", unit="batch", disable=not progress)):
        window = slice(i * BATCH_WINDOWS, (i + 1) * BATCH_WINDOWS)
        for name, metrics in comparison.score(batch, vehicles[window], rows[window]).items():
            for metric, value in metrics.items():
                collected.setdefault(name, {}).setdefault(metric, []).append(value)
    return {name: {m: torch.cat(v) for m, v in metrics.items()} for name, metrics in collected.items()}


def compare_worlds(config: WorldErrorConfig) -> dict:
    """Run the comparison (module docstring). Returns (and with ``out``, writes) ``protocol``, ``per_step``
    ``{cv, copy_last[, model]: {vehicles_mse, proximity_abs_error: [horizon]}}``, ``summary`` (the same, means
    over the horizon), ``render_check`` (the rendered oracle against the stored views: the same metrics, means
    and ``per_step``) and ``oracle_proximity_mean`` (the scale of the proximity cost)."""
    episodes, files = dataset_files(config.data)
    dataset, model, meta = _open_windows(config, episodes)
    if len(dataset) == 0:
        raise ValueError(f"{config.data}: the {config.split} split has no window of "
                         f"{dataset.config.window_frames} frames")  # fmt: skip
    chosen = select_windows(len(dataset), config.windows, config.seed)
    comparison = _Comparison(
        dataset, model, files, dataset.view, dataset.cost_config, config.traffic
    )  # the episodes' settings
    scores = _score_windows(comparison, chosen, config.progress)
    check = summarise({"oracle": scores.pop("oracle")})
    result = {
        "protocol": asdict(config)
        | {
            "context_frames": dataset.config.context_frames,
            "windows_evaluated": len(chosen),
            "windows_available": len(dataset),
            "checkpoint_step": meta.get("step"),
            "channel": "vehicles",
            "oracle": "the stored /images rows of the recorded car's future frames",
            "model": "z = the prior mean, dropout off, the recorded actions, images clamped to [0, 1]",
        },
        **summarise({name: scores[name] for name in ("cv", "copy_last", "model", "traffic") if name in scores}),
        "render_check": check["summary"]["oracle"] | {"per_step": check["per_step"]["oracle"]},
        "oracle_proximity_mean": float(scores["truth"]["proximity"].mean()),
    }
    if config.out is not None:
        write_json(result, config.out)
    return result


__all__ = ["WorldErrorConfig", "compare_worlds", "model_prediction", "summarise"]
