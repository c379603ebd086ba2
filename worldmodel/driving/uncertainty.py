"""The epistemic uncertainty cost at the ego's pose: how much the model's dropout replicas disagree on the cost
of where the ego would be (SPEC §2's uncertainty cost, moved to SPEC §9's pose costs).

A model world with R dropout replicas per draw of z gives K = samples x R futures. For a plan, the pose part
of the objective (proximity, lane, off-road: the terms read from the frames) is computed in each future; its
variance across the replicas of a draw (unbiased), averaged over the draws, is the disagreement ``u``. It
depends on where the ego goes (the masks move with it), so the planner can steer toward where the model is
sure. Normalised with the mean and std of ``u`` measured on training windows (the recorded car's own pose
and actions, ``calibrate``) and hinged: ``relu((u - mean) / std - hinge)``, weighted by the objective's
``uncertainty``.
Shapes: K futures with replicas consecutive (sample-major), as ``model_world`` makes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from worldmodel.data.hdf5 import DataError
from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving.objective import evaluate
from worldmodel.driving.pose_costs import pixel_set
from worldmodel.driving.window_worlds import RenderedWindows
from worldmodel.nn.forward_model_config import view_text

#: The objective's terms read from the world's frames (the rest depend on the ego alone).
POSE_TERMS = ("proximity_ahead", "proximity_behind", "proximity", "lane", "offroad", "offroad_ahead")


def pose_cost(terms: dict[str, Tensor]) -> Tensor:
    """The sum of the weighted, discounted ``POSE_TERMS`` of ``objective.evaluate``'s terms: ``[...]``."""
    return sum(terms[name] for name in POSE_TERMS)


def replica_variance(values: Tensor, replicas: int) -> Tensor:
    """``[..., K] -> [...]``: the unbiased variance across each draw's ``replicas`` (consecutive along K),
    averaged over the draws."""
    if replicas < 2 or values.shape[-1] % replicas:
        raise ValueError(f"replica_variance: K = {values.shape[-1]} is not draws x replicas with replicas >= 2")
    return values.unflatten(-1, (-1, replicas)).var(-1, unbiased=True).mean(-1)


@dataclass(frozen=True)
class PoseUncertaintyStats:
    """Mean and std of the replica variance of the pose cost on ``windows`` training windows."""

    mean: float
    std: float
    windows: int

    def penalty(self, variance: Tensor, hinge: float) -> Tensor:
        """``relu((variance - mean) / std - hinge)``, shape of ``variance``."""
        return torch.relu((variance - self.mean) / self.std - hinge)


@torch.no_grad()
def calibrate(world, data: str, windows: int, steps: list[int], horizon: int, lane_rows_m: float | None = 15.0,
              seed: int = 0, batch_size: int = 16) -> PoseUncertaintyStats:  # fmt: skip
    """The statistics of the replica variance of ``world``'s pose cost (its objective) on ``windows`` random
    training windows of ``data`` (an episodes file): the model rolled out from each window's context with the
    recorded actions over ``horizon`` steps, frames at ``steps``, the ego at the frames' own poses (zero
    offset) with the recorded speeds. Draws its own random numbers (z, dropout masks) from ``seed``, leaving
    the caller's generators where they were."""
    model = world.model
    dataset = WindowDataset(data, WindowConfig(context_frames=model.config.backbone.context_frames,
                                               predict_frames=horizon, split="train"))  # fmt: skip
    if dataset.view != model.config.view_spec:
        raise DataError(data, f"its views are {view_text(dataset.view)}, the forward model's "
                        f"{view_text(model.config.view_spec)}; calibrate on data of the model's view")  # fmt: skip
    if len(dataset) < 2:
        raise ValueError(f"{data}: fewer than 2 training windows to calibrate the uncertainty cost")
    items = RenderedWindows(dataset, data) if model.config.base == "cv" else dataset  # + the frames it corrects
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(dataset), generator=generator)[:windows].tolist()
    saved = world.generator.get_state()
    variances = []
    with torch.random.fork_rng(devices=[world.device] if world.device.type == "cuda" else []):
        torch.manual_seed(seed)
        world.generator.manual_seed(seed)
        for start in range(0, len(chosen), batch_size):
            batch = [items[i] for i in chosen[start : start + batch_size]]
            batch = {key: torch.stack([item[key] for item in batch]) for key in batch[0]}
            variances.append(_pose_variance(world, dataset, batch, steps, lane_rows_m))
    world.generator.set_state(saved)
    v = torch.cat(variances).double()
    return PoseUncertaintyStats(float(v.mean()), max(float(v.std()), 1e-12), len(v))


def _pose_variance(world, dataset: WindowDataset, batch: dict, steps: list[int], lane_rows_m: float | None) -> Tensor:
    """``[B]``: the replica variance of the pose cost of a batch of windows at zero offset."""
    model, every = world.model, steps[0]
    device = world.device
    context = model.normalise_states(dataset.denormalise_states(batch["context_states"]).to(device))
    actions = model.normalise_actions(dataset.denormalise_actions(batch["actions"]).to(device))
    base = batch.get("base_images")
    frames = world.rollout(
        batch["context_images"].to(device), context, actions, steps, None if base is None else base.to(device)
    )  # [B, K, F, 3, H, W]
    b, k, f = frames.shape[:3]
    future = dataset.denormalise_states(batch["future_states"])  # [B, T, 4] SI: x, y, vx, vy
    t = future.shape[1]
    states = torch.zeros(b, k, t, 4)
    states[..., 3] = torch.linalg.vector_norm(future[..., 2:4], dim=-1)[:, None]
    pixels = pixel_set(frames, model.config.view_spec, lane_rows_m, world.objective.road_ahead_m)  # the model's view
    terms = evaluate(world.objective, pixels, torch.zeros(b, k, f, 3), states,
                     torch.zeros(b, k, t, 2), torch.zeros(b, k, 2), torch.zeros(b, k),
                     batch["car_size"][:, None].expand(b, k, 2), every)  # fmt: skip
    return replica_variance(pose_cost(terms), world.config.replicas)


__all__ = ["POSE_TERMS", "PoseUncertaintyStats", "calibrate", "pose_cost", "replica_variance"]
