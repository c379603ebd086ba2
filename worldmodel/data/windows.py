"""Training windows over episodes.h5: (context, actions, future) as a torch ``Dataset``.

A window is ``context_frames + predict_frames`` consecutive rows of one episode starting at a window start
(every ``stride`` rows). With t the last context frame, ``actions[k]`` is the action of row t + k, which
moves the car from frame t + k to t + k + 1, so the first action is the one taken at the last context frame.

Windows are enumerated once from the episode table (numpy arrays of start rows and episode indices, no
Python object per window). States, actions, costs and ego masks are read whole at open and kept in memory
(36 bytes per frame and H x W bytes per episode: ~100 MB for 2.5 M frames; shared with forked DataLoader
workers); a window's images are read from the file with one HDF5 call into a reused buffer, so an item
costs the decoding of the 3-4 image chunks it spans and one uint8 -> float32 pass. The HDF5 file is opened
lazily in the process that reads (the first ``__getitem__`` of each DataLoader worker; a handle from
another pid is never reused), so the dataset works with ``num_workers > 0`` under fork or spawn, and under
``DistributedSampler``.

Normalisation: ``(value - mean) / std`` with ``dataset.stats`` (float32 tensors ``state_mean``,
``state_std`` [4], ``action_mean``, ``action_std`` [2]; models keep them as buffers). They come from the
file's ``/stats`` (train split). With ``ego_relative`` the state's position is relative to the ego position
at the last context frame (PPUU's absolute position lets a model memorise the map); the mean and std of
that relative position are computed once at open, exactly, over every window of the train split with this
config's context and prediction lengths (stride 1), whichever split is loaded, from the train episodes'
states. Velocities keep the file's statistics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from worldmodel.costs import CostConfig
from worldmodel.data import hdf5
from worldmodel.data.episodes import FORMAT, READ_VERSIONS, SPLITS, EpisodeReader
from worldmodel.data.hdf5 import DataError
from worldmodel.traffic.view import ViewSpec

log = logging.getLogger(__name__)

CHUNK_CACHE_BYTES = 8 << 20  # /images chunks kept decompressed (~60): reused when nearby windows follow
IMAGE_DTYPES = ("float32", "uint8")
IMAGE_KEYS = ("context_images", "future_images", "base_images")  # base: a forward model's base="cv" frames


def unit_images(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` with its uint8 images (``WindowConfig(image_dtype="uint8")``) as float32 in [0, 1], the values
    a float32 ``WindowDataset`` gives; float images and other entries are passed through."""
    out = dict(batch)
    for key in IMAGE_KEYS:
        if key in out and out[key].dtype == torch.uint8:
            out[key] = out[key].to(torch.float32).mul_(1.0 / 255.0)
    return out


@dataclass(frozen=True)
class WindowConfig:
    """Which windows a ``WindowDataset`` serves and how states are expressed."""

    context_frames: int = 20
    """Frames given to the model (Tc), ending at the last context frame t."""
    predict_frames: int = 20
    """Frames to predict (Tp), t + 1 .. t + Tp; also the number of actions."""
    ego_relative: bool = True
    """Positions relative to the ego position at frame t, instead of absolute road x, y [m]."""
    split: str = "train"
    """``train``, ``val`` or ``test`` (splits are by vehicle, see ``split_for_vehicle``)."""
    stride: int = 1
    """Rows between the starts of consecutive windows of an episode."""
    image_dtype: str = "float32"
    """``float32``: images in [0, 1]; ``uint8``: the stored bytes (0-255), a quarter of the memory between
    DataLoader workers and to the device, and no conversion pass per item: trainers convert batches on their
    device with ``unit_images``."""

    def __post_init__(self) -> None:
        if self.context_frames < 1 or self.predict_frames < 1 or self.stride < 1:
            raise ValueError(f"WindowConfig: frames and stride must be >= 1, got {self}")
        if self.split not in SPLITS:
            raise ValueError(f"WindowConfig: split must be one of {SPLITS}, got {self.split!r}")
        if self.image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"WindowConfig: image_dtype must be one of {IMAGE_DTYPES}, got {self.image_dtype!r}")

    @property
    def window_frames(self) -> int:
        return self.context_frames + self.predict_frames

    @classmethod
    def tiny(cls) -> WindowConfig:
        """Short windows for tests and quick runs."""
        return cls(context_frames=3, predict_frames=2)


def enumerate_windows(
    starts: np.ndarray, counts: np.ndarray, length: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``length`` rows, ``stride`` apart, in episodes (``starts``, ``counts`` [E]).

    Returns (first rows [W] int64, episode index [W] into the given arrays)."""
    per_episode = np.maximum((counts.astype(np.int64) - length) // stride + 1, 0)
    episode = np.repeat(np.arange(len(counts)), per_episode)
    first_window = np.cumsum(per_episode) - per_episode
    within = np.arange(int(per_episode.sum())) - first_window[episode]
    return starts.astype(np.int64)[episode] + stride * within, episode


def relative_position_moments(states: np.ndarray, anchors: np.ndarray, before: int, after: int) -> tuple:
    """Mean and std [2] of ``xy[a + k] - xy[a]`` over anchors a [W] and k in -before..after (inclusive).

    states: [N, 4] (x, y, vx, vy); every a + k must be a valid row.
    """
    xy = states[:, :2].astype(np.float64)
    total, squares, n = np.zeros(2), np.zeros(2), 0
    for k in range(-before, after + 1):
        d = xy[anchors + k] - xy[anchors]
        total += d.sum(axis=0)
        squares += (d**2).sum(axis=0)
        n += len(anchors)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(squares / max(n, 1) - mean**2, 0.0))
    return mean, np.where(std < 1e-6, 1.0, std)


def _settings(view: dict, costs: dict, path: Path) -> tuple[ViewSpec, CostConfig]:
    """An episodes file's ``view`` and ``costs`` attributes as a ``ViewSpec`` and a ``CostConfig``."""
    try:
        return ViewSpec(**view), CostConfig.from_dict(costs)
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"bad view or cost parameters ({exc})") from exc


class WindowDataset(Dataset):
    """Windows of one split of an episodes.h5 file; an item is a dict of float32 tensors:

    ``context_images`` [Tc, 3, H, W] in [0, 1] (uint8 0-255 with ``image_dtype="uint8"``), ``context_states`` [Tc, 4] normalised, ``actions`` [Tp, 2]
    normalised, ``future_images`` [Tp, 3, H, W] in [0, 1], ``future_states`` [Tp, 4] normalised,
    ``future_costs`` [Tp, 3], ``car_size`` [2] (length, width [m]), ``ego_mask`` [H, W] in [0, 1].

    The settings the file was made with: ``view`` (``ViewSpec``: H, W and resolution of its views) and
    ``cost_config`` (``CostConfig`` of its cost parameters; fields the file does not name are the defaults).
    """

    def __init__(self, path: str | os.PathLike, config: WindowConfig = WindowConfig()) -> None:
        self.path, self.config = Path(path), config
        with EpisodeReader(self.path) as reader:  # validates the file
            self.episodes = reader.episodes
            self.file_stats = reader.stats
            self.view, self.cost_config = _settings(reader.view, reader.costs, self.path)
            self._rows = reader.read(0, reader.num_frames, names=("states", "actions", "costs"))
            self._ego = reader.ego_masks()
        split = SPLITS.index(config.split)
        chosen = np.flatnonzero(self.episodes["split"] == split)
        starts, episode = enumerate_windows(
            self.episodes["start"][chosen],
            self.episodes["count"][chosen],
            config.window_frames,
            config.stride,
        )
        self.window_starts = starts
        self.window_episodes = chosen[episode]
        self.stats = self._stats(self._rows["states"] if config.ego_relative else None)
        self._np_stats = {name: values.numpy() for name, values in self.stats.items()}
        self._car_sizes = np.stack([self.episodes["length"], self.episodes["width"]], axis=1).astype(np.float32)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._images: hdf5.RowReader | None = None

    def _stats(self, states: np.ndarray | None) -> dict[str, torch.Tensor]:
        stats = {name: np.asarray(values, np.float64) for name, values in self.file_stats.items()}
        if states is not None:
            c = self.config
            anchors = np.zeros(0, np.int64)
            for splits in ((0,), (0, 1, 2)):  # train; every split if train has no window
                chosen = np.isin(self.episodes["split"], splits)
                starts, _ = enumerate_windows(
                    self.episodes["start"][chosen], self.episodes["count"][chosen], c.window_frames, 1
                )
                anchors = starts + c.context_frames - 1
                if len(anchors):
                    break
                log.warning("%s: no train window; ego-relative stats from every split", self.path)
            mean, std = relative_position_moments(states, anchors, c.context_frames - 1, c.predict_frames)
            stats["state_mean"][:2], stats["state_std"][:2] = mean, std
        return {name: torch.as_tensor(values, dtype=torch.float32) for name, values in stats.items()}

    def __len__(self) -> int:
        return len(self.window_starts)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"], state["_images"] = None, None, None  # never ship a handle to a process
        return state

    def _image_reader(self) -> hdf5.RowReader:
        """This process's reader of a window's images (opens the file in a new process)."""
        if self._file is None or self._pid != os.getpid():
            options = {"versions": READ_VERSIONS, "rdcc_nbytes": CHUNK_CACHE_BYTES}
            self._file = hdf5.open_checked(self.path, FORMAT, **options)
            self._pid = os.getpid()
            self._images = hdf5.RowReader(self._file["images"], self.config.window_frames, self.path)
        return self._images

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid, self._images = None, None, None

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        c = self.config
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range ({len(self)})")
        s, e = int(self.window_starts[index]), int(self.window_episodes[index])
        t = s + c.context_frames - 1  # row of the last context frame
        stats, rows = self._np_stats, self._rows  # float32 arithmetic, as torch's on the same values
        states = rows["states"][s : s + c.window_frames].copy()
        if c.ego_relative:
            states[:, :2] -= states[c.context_frames - 1, :2].copy()
        states = torch.from_numpy((states - stats["state_mean"]) / stats["state_std"])
        actions = (rows["actions"][t : t + c.predict_frames] - stats["action_mean"]) / stats["action_std"]
        costs = rows["costs"][t + 1 : t + 1 + c.predict_frames].copy()
        ego = torch.from_numpy(self._ego[e].astype(np.float32) / np.float32(255.0))
        car_size = torch.from_numpy(self._car_sizes[e].copy())
        # the images last: their float tensor (1.3 MB for 40 frames) allocated after the small ones costs
        # ~10x fewer page faults per item (measured; glibc then keeps its pages), a third of the time
        reader = self._image_reader()
        if c.image_dtype == "uint8":
            images = torch.from_numpy(reader.read(s, out=np.empty_like(reader.buffer)))  # [Tc + Tp, 3, H, W]
        else:
            images = torch.from_numpy(reader.read(s)).to(torch.float32).mul_(1.0 / 255.0)  # buffer reused
        return {
            "context_images": images[: c.context_frames],
            "context_states": states[: c.context_frames],
            "actions": torch.from_numpy(actions),
            "future_images": images[c.context_frames :],
            "future_states": states[c.context_frames :],
            "future_costs": torch.from_numpy(costs),
            "car_size": car_size,
            "ego_mask": ego,
        }

    def denormalise_states(self, states: torch.Tensor) -> torch.Tensor:
        """Normalised states [..., 4] -> metres and m/s (ego-relative positions stay relative)."""
        return states * self.stats["state_std"] + self.stats["state_mean"]

    def denormalise_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised actions [..., 2] -> (m/s^2, 1/m)."""
        return actions * self.stats["action_std"] + self.stats["action_mean"]
