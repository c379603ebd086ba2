"""Training the traffic model (``nn.traffic_model``) on a dataset's recordings: ``train_traffic(TrainTrafficConfig)``.

Examples come from the trajectories files next to episodes.h5: at every ``every``-th frame, each car recorded
for the next T frames (and one of the split's cars, by the episodes' split, so that the test cars' futures
are never trained on) is one example: its features in that frame (``car_features``, among every car present)
and its displacement from constant velocity over the next T frames, along and across its heading. Adam on
random minibatches; the val split's cars score the result against constant velocity (whose error is the
displacement itself), per horizon step. Writes ``<out>/traffic.pt`` (state dict + config, with the
statistics) and ``<out>/summary.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from worldmodel.data.episodes import SPLITS, EpisodeReader
from worldmodel.data.hdf5 import DataError, write_json
from worldmodel.data.replay import ReplaySimulation
from worldmodel.driving.episode_selection import dataset_files, locate_vehicle
from worldmodel.files import make_dir
from worldmodel.nn.saving import save_checkpoint, seed_everything
from worldmodel.nn.traffic_model import FEATURES, TrafficModel, TrafficModelConfig, car_features


@dataclass(frozen=True)
class TrainTrafficConfig:
    """A traffic-model training run (recorded in the checkpoint and the summary)."""

    data: str = "datasets/i80-sim"
    """Dataset directory (episodes.h5 + the trajectories files it was extracted from), or its episodes.h5."""
    out: str = "runs/traffic"
    """Run directory: traffic.pt and summary.json."""
    model: TrafficModelConfig = field(default_factory=TrafficModelConfig)
    """The model's sizes and horizon."""
    every: int = 5
    """Frames between the sampled frames of a recording."""
    steps: int = 3000
    """Adam steps."""
    batch_size: int = 1024
    """Examples per step."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to 0)."""
    seed: int = 0
    """Seed of the initialisation and the minibatches."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if min(self.every, self.steps, self.batch_size) < 1 or not self.lr > 0:
            raise ValueError("TrainTrafficConfig: every, steps, batch_size >= 1 and lr > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def split_cars(data: str) -> tuple[list, dict[str, list[set[int]]]]:
    """The trajectories files of a dataset and, per split, the recorded ids of its cars in each file."""
    episodes, files = dataset_files(data)
    with EpisodeReader(episodes) as reader:
        vehicles, splits = reader.episodes["vehicle"], reader.episodes["split"]
    cars = {name: [set() for _ in files] for name in SPLITS}
    for vehicle, split in zip(vehicles.tolist(), splits.tolist(), strict=True):
        where = locate_vehicle(files, vehicle)
        cars[SPLITS[split]][where.file].add(where.recorded_id)
    return files, cars


def traffic_examples(sim: ReplaySimulation, cars: set[int], config: TrafficModelConfig, every: int):
    """``(features [M, F], targets [M, T, 2])`` float32 of one recording (``sim``, loaded): the cars ``cars``
    (recorded ids) at every ``every``-th frame that have T more recorded frames."""
    t_len, dt = config.horizon, sim.dt
    table, tracks = sim.vehicle_table, sim._tracks
    first_frame = tracks["frame"][table["start"]]  # [V] each car's first recorded frame
    last_frame = first_frame + table["count"] - 1
    k = np.arange(1, t_len + 1)
    features, targets = [], []
    for frame in range(sim.frame_range[0] + config.history, sim.frame_range[1] - t_len, every):
        now = sim._frames.at(frame)
        if len(now["x"]) == 0:
            continue
        before = sim._frames.at(frame - config.history)
        index = np.array([sim._index[int(v)] for v in now["vehicle"]], dtype=np.int64)
        keep = np.isin(now["vehicle"], list(cars)) & (last_frame[index] >= frame + t_len)
        if not keep.any():
            continue
        f = car_features(now, before, sim.road, dt, config.history)[keep]
        rows = table["start"][index[keep]] + frame - first_frame[index[keep]]  # [m] each car's row now
        future = rows[:, None] + k  # [m, T]
        x0, y0, psi, v = (now[name][keep][:, None] for name in ("x", "y", "psi", "v"))
        dx = tracks["x"][future] - x0 - v * np.cos(psi) * k * dt
        dy = tracks["y"][future] - y0 - v * np.sin(psi) * k * dt
        along, across = dx * np.cos(psi) + dy * np.sin(psi), dy * np.cos(psi) - dx * np.sin(psi)
        features.append(f)
        targets.append(np.stack([along, across], -1).astype(np.float32))
    if not features:
        return np.zeros((0, len(FEATURES)), np.float32), np.zeros((0, t_len, 2), np.float32)
    return np.concatenate(features), np.concatenate(targets)


def examples_of(
    files, cars: list[set[int]], config: TrafficModelConfig, every: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every file's examples (``traffic_examples``) of the cars ``cars[file]``, concatenated."""
    out = [traffic_examples(ReplaySimulation(path), wanted, config, every) for path, wanted in zip(files, cars, strict=True)
           if wanted]  # fmt: skip
    if not out:
        return torch.zeros(0, len(FEATURES)), torch.zeros(0, config.horizon, 2)
    return torch.from_numpy(np.concatenate([f for f, _ in out])), torch.from_numpy(np.concatenate([t for _, t in out]))


@torch.no_grad()
def displacement_errors(model: TrafficModel, features: torch.Tensor, targets: torch.Tensor) -> dict:
    """Root mean squared position error [m] per step ``[T]`` of the model and of constant velocity (whose
    displacement is zero) on examples, dropout off."""
    model.eval()
    predicted = torch.cat([model(chunk) for chunk in features.split(65536)])
    model_rmse = (predicted - targets).pow(2).sum(-1).mean(0).sqrt()
    cv_rmse = targets.pow(2).sum(-1).mean(0).sqrt()
    return {"model_rmse_m": model_rmse.tolist(), "cv_rmse_m": cv_rmse.tolist()}


def train_traffic(config: TrainTrafficConfig) -> dict:
    """Train (see the module docstring); returns the summary (also written to ``<out>/summary.json``)."""
    t0 = time.perf_counter()
    files, cars = split_cars(config.data)
    train_x, train_y = examples_of(files, cars["train"], config.model, config.every)
    val_x, val_y = examples_of(files, cars["val"], config.model, config.every)
    if len(train_x) < config.batch_size:
        raise DataError(files[0].parent, f"{len(train_x)} training examples of the train split's cars, fewer than "
                        f"one batch of {config.batch_size}")  # fmt: skip
    out = make_dir(config.out, config.out)  # only once the data is known to be good: no empty run left behind
    seed_everything(config.seed)
    model = TrafficModel(config.model)
    model.set_normalisation(train_x, train_y)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / config.steps)))
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    losses = []
    for _ in tqdm(range(config.steps), desc="train traffic", disable=not config.progress):
        batch = torch.randint(len(train_x), (config.batch_size,), generator=generator)
        loss = model.loss(train_x[batch], train_y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    path = save_checkpoint(model.checkpoint_dict(config.steps, train_config=config.to_dict()), out / "traffic.pt")
    scored = (val_x, val_y) if len(val_x) else (train_x, train_y)
    errors = displacement_errors(model, *scored)
    summary = {"checkpoint": str(path), "config": config.to_dict(), "train_examples": len(train_x),
               "val_examples": len(val_x), "scored_on": "val" if len(val_x) else "train",
               "final_train_loss": float(np.mean(losses[-50:])), **errors,
               "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    write_json(summary, out / "summary.json")
    return summary


__all__ = ["TrainTrafficConfig", "displacement_errors", "split_cars", "traffic_examples", "train_traffic"]
