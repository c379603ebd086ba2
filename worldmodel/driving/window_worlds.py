"""Rendered worlds of dataset windows: the recordings behind a window, and its constant-velocity future.

A window of ``episodes.h5`` (``data.windows.WindowDataset``) is a stretch of one car's recorded frames. The
trajectories files it was extracted from (next to episodes.h5, ``episode_selection.dataset_files``) hold every
other car around it, so a rendered world (``worlds.RenderedWorld``) can give the window's future as that world
predicts it, at the car's recorded poses:

- ``Recordings.handover(vehicle, row)``: a replay of episode ``vehicle``'s car with its recorded frames 0..row as
  context (the recording of each file loaded once per process); ``Recordings.at``: the same car at a row where a
  driver took it;
- ``recorded_poses``: the car's recorded poses and speeds after the current frame;
- ``RenderedWindows``: a window dataset whose items also carry a rendered world's frames of the predicted steps
  at the recorded poses: by default ``base_images``, the constant-velocity world's (what a ``base="cv"`` forward
  model corrects; ``nn.forward_model``); policy training's ``cv`` and ``traffic`` worlds as ``world_images``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from worldmodel.data.hdf5 import DataError
from worldmodel.data.replay import ReplaySimulation
from worldmodel.data.windows import WindowDataset
from worldmodel.driving.episode_selection import dataset_files, locate_vehicle
from worldmodel.driving.worlds import RenderedWorld

#: Largest tolerated difference [m/s] between an episode's speed and its recording's at the same frame.
SPEED_TOLERANCE_MPS = 1e-2


class Recordings:
    """The recordings of a dataset, each loaded once per process: where an episode's car is at one of its frames."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._loaded: dict[int, ReplaySimulation] = {}

    def __getstate__(self) -> dict:
        return {"files": self.files, "_loaded": {}}  # a worker process loads its own

    def handover(self, vehicle: int, row: int) -> ReplaySimulation:
        """A simulation (sharing the loaded recording) of episode ``vehicle``'s car at the hand-over after its
        recorded frames 0..``row`` as context: its current frame is the episode's ``row``, its state the recorded
        one there; the car's own recording is excluded from the others (``worlds.recorded_others``)."""
        where = locate_vehicle(self.files, vehicle)
        recording = self._loaded.get(where.file)
        if recording is None:
            recording = self._loaded[where.file] = ReplaySimulation(self.files[where.file])
        sim = ReplaySimulation(recording, context_frames=row + 1)
        try:
            sim.start(where.recorded_id)
        except (KeyError, ValueError) as e:
            raise DataError(self.files[where.file], f"episode vehicle {vehicle}, row {row}: {e}") from e
        sim.frame = sim.handover_frame  # where row steps of step() would take it, one collision check a frame
        sim._follow_recording()
        return sim

    def at(self, vehicle: int, row: int, state: np.ndarray) -> ReplaySimulation:
        """A simulation of episode ``vehicle``'s car ``row`` frames after its first recorded one, the car where a
        driver took it: ``state`` (x, y, psi, v) instead of its recording (which may have ended by then)."""
        sim = self.handover(vehicle, 0)
        sim.frame = sim.start_frame + int(row)
        sim.x, sim.y, sim.psi, sim.v = (float(s) for s in state)
        return sim

    def check_speeds(self, vehicle: int, recorded: np.ndarray, episode: np.ndarray) -> None:
        """Raise ``DataError`` unless the recording's speeds ``recorded`` are the episode's ``episode`` (the same
        frames; they differ when episodes.h5 was not extracted from these files)."""
        if np.abs(recorded - episode).max() > SPEED_TOLERANCE_MPS:
            raise DataError(self.files[0].parent, f"episode vehicle {vehicle}: its recording's speeds differ "
                            "from the episode's (not the files it was extracted from?)")  # fmt: skip


def recorded_poses(sim: ReplaySimulation, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The controlled car's recorded poses ``[horizon, 3]`` (x, y [m], psi [rad]) and speeds ``[horizon]``
    [m/s] at the ``horizon`` frames after the current one (its recording must reach that far)."""
    rows = sim._row0 + sim.frame - sim.start_frame + np.arange(1, horizon + 1)
    if rows[-1] >= sim._row0 + sim._count:
        raise ValueError(f"vehicle {sim.ego_id}: its recording ends before frame {sim.frame + horizon}")
    tracks = sim._tracks
    return np.stack([tracks[name][rows] for name in ("x", "y", "psi")], axis=-1), tracks["v"][rows]


class RenderedWindows(Dataset):
    """``dataset``'s windows, each item with ``key`` ``[Tp, 3, H, W]`` (the dataset's image dtype): ``world``'s
    frames of the Tp predicted steps, rendered at the car's recorded poses from the window's last context frame
    (default: ``RenderedWorld("cv")`` in the dataset's view, the cars of that frame at constant velocity; or a
    ``TrafficWorld`` of that view). ``data``: the dataset directory or its episodes.h5 (the trajectories files
    are found next to it)."""

    def __init__(self, dataset: WindowDataset, data: str | Path, world=None, key: str = "base_images") -> None:
        self.dataset, self.key = dataset, key
        self.recordings = Recordings(dataset_files(data)[1])
        self.world = RenderedWorld("cv", dataset.view) if world is None else world
        c = dataset.config
        episode = dataset.window_episodes
        self._vehicles = dataset.episodes["vehicle"][episode]
        self._rows = dataset.window_starts - dataset.episodes["start"][episode] + c.context_frames - 1

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        vehicle, horizon = int(self._vehicles[index]), self.dataset.config.predict_frames
        sim = self.recordings.handover(vehicle, int(self._rows[index]))
        poses, speeds = recorded_poses(sim, horizon)
        episode_speeds = self.dataset.denormalise_states(item["future_states"])[:, 2:].norm(dim=-1).numpy()
        self.recordings.check_speeds(vehicle, speeds, episode_speeds)
        images = self.world.futures([sim], poses[None], list(range(1, horizon + 1))).images[0, 0]  # [Tp, 3, H, W]
        if item["future_images"].dtype == torch.uint8:
            images = images.mul(255.0).round_().to(torch.uint8)
        return item | {self.key: images}


__all__ = ["SPEED_TOLERANCE_MPS", "RenderedWindows", "Recordings", "recorded_poses"]
