"""episodes.h5: per-car episodes of ego views, states, actions and costs, concatenated (DESIGN.md §5).

Layout (``format = "worldmodel.episodes"``, ``version = 2``); row i of every frame dataset is one instant:

- ``/images`` uint8 [N, 3, H, W] (channels: lanes, vehicles, off-road), chunks of 16 frames (a 40-frame
  training window decodes 3-4 of them), compressed with blosc's lz4hc level 5, no shuffle (``hdf5plugin``).
  Measured on a 1-minute i80 recording (117 x 24 px views), whole file per car-frame and training windows
  (20 + 20 frames) decoded per second, one core: gzip 1 ~1,800 bytes, ~600 windows/s; lz4hc 5 ~1,700
  bytes, ~3x faster; zstd 3 ~1,400 bytes, ~2x; lz4 ~2,350 bytes, ~3x (budget 1,750 bytes). Version 1 files
  (gzip images) read the same;
- ``/states`` float32 [N, 4] (x, y [m], vx, vy [m/s], road frame), ``/actions`` float32 [N, 2] (accel
  [m/s^2], curvature [1/m]; the action of row t moves the car from row t to t + 1), ``/costs`` float32
  [N, 3] (proximity, lane, off-road), chunks of 512 rows, gzip 1;
- ``/episodes/<column>`` [E]: ``vehicle`` int32, ``start`` int64, ``count`` int32, ``length``, ``width``
  float32 [m], ``split`` int8 (0 train, 1 val, 2 test); ``/ego`` uint8 [E, H, W]: each episode's ego mask;
- ``/stats``: ``state_mean``, ``state_std`` [4], ``action_mean``, ``action_std`` [2] float32 over the frames
  of the train split (all frames if no episode is in train; attribute ``split`` says which), accumulated
  while writing (Chan's parallel update of mean and sum of squared deviations, float64). A std below 1e-6
  is stored as 1 so that normalising never divides by zero.
- root attributes: ``format``, ``version``, ``dt`` (always 0.1 s, ``hdf5.DT_S``), ``created``, ``source``,
  ``road``, ``view`` (JSON: ``height_px``, ``width_px``, ``px_per_m``), ``costs`` (JSON: the cost parameters
  used).

A file holds at least one episode: the writer refuses to close an empty file and the reader to open one.

Splits are by vehicle (``split_for_vehicle``); the reader checks that no vehicle is in two splits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from worldmodel.data import hdf5
from worldmodel.data.hdf5 import DataError

log = logging.getLogger(__name__)

FORMAT = "worldmodel.episodes"
#: Written by ``EpisodeWriter``: 2 may hold blosc-compressed datasets (1: gzip only, same names and shapes).
VERSION = 2
#: Versions ``EpisodeReader`` reads.
READ_VERSIONS = (1, 2)
#: Compression of ``/images`` and ``/ego``: name -> default level (0-9).
COMPRESSIONS = {"lz4hc": 5, "gzip": 1}
SPLITS = ("train", "val", "test")
EPISODE_COLUMNS = {
    "vehicle": np.int32,
    "start": np.int64,
    "count": np.int32,
    "length": np.float32,
    "width": np.float32,
    "split": np.int8,
}
#: Frame datasets: name -> (dtype, trailing shape or None for the image shape).
FRAME_DATASETS = {
    "images": (np.uint8, None),
    "states": (np.float32, (4,)),
    "actions": (np.float32, (2,)),
    "costs": (np.float32, (3,)),
}
IMAGE_CHUNK_FRAMES = 16
ROW_CHUNK = 512  # rows per chunk of /states, /actions, /costs
STAT_NAMES = ("state_mean", "state_std", "action_mean", "action_std")


def split_for_vehicle(vehicle_id: int, seed: int = 0) -> int:
    """Split of a vehicle: 0 train (80 %), 1 val (10 %), 2 test (10 %), from a hash of (seed, id).

    The first 8 bytes of BLAKE2b of ``"worldmodel-split:<seed>:<id>"`` read as an integer u in [0, 2^64):
    the same on every run, machine and Python version (unlike ``hash``), and independent of which other
    vehicles exist, so adding recordings never moves a car between splits. Fractions are 80/10/10 in
    expectation, not exactly.
    """
    digest = hashlib.blake2b(f"worldmodel-split:{int(seed)}:{int(vehicle_id)}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    return 0 if u < 0.8 else 1 if u < 0.9 else 2


class RunningMoments:
    """Streaming mean and std of [n, D] batches (Chan et al.'s parallel update, float64)."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def add(self, x: np.ndarray) -> None:
        """x: [n, D]."""
        n = len(x)
        if n == 0:
            return
        x = np.asarray(x, np.float64)
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * n / total)
        self.count = total

    def std(self) -> np.ndarray:
        """Population std [D]; 1 where below 1e-6 (or no data)."""
        std = np.sqrt(self.m2 / max(self.count, 1))
        return np.where(std < 1e-6, 1.0, std)


def check_view(view: dict, path) -> dict:
    """Validate a view spec dict ``{"height_px", "width_px", "px_per_m"}``; return a normalised copy."""
    try:
        out = {
            "height_px": int(view["height_px"]),
            "width_px": int(view["width_px"]),
            "px_per_m": float(view["px_per_m"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(path, f"bad view spec {view!r}") from exc
    if out["height_px"] < 1 or out["width_px"] < 1 or not out["px_per_m"] > 0:
        raise DataError(path, f"bad view spec {view!r}")
    return out


def compression_options(path, compression: str, level: int | None = None) -> dict:
    """``h5py.create_dataset`` keywords of a compression named in ``COMPRESSIONS`` (``level`` None: its
    default). ``DataError`` naming ``path`` if it is unknown or needs ``hdf5plugin`` and that is missing."""
    if compression not in COMPRESSIONS:
        raise DataError(path, f"unknown compression {compression!r} (expected one of {sorted(COMPRESSIONS)})")
    level = COMPRESSIONS[compression] if level is None else int(level)
    if not 0 <= level <= 9:
        raise DataError(path, f"compression level must be in 0..9, got {level}")
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level}
    if not hdf5.register_filters():
        raise DataError(path, f"cannot write {compression}: {hdf5.PLUGIN_HINT}")
    import hdf5plugin

    return dict(hdf5plugin.Blosc(cname=compression, clevel=level, shuffle=hdf5plugin.Blosc.NOSHUFFLE))


def _append_whole_chunks(ds: h5py.Dataset, parts: list[np.ndarray], final: bool) -> list[np.ndarray]:
    """Append the whole chunks of ``parts`` (everything if ``final``) to ``ds``; return what is left."""
    block = np.concatenate(parts) if parts else np.zeros((0, *ds.shape[1:]), ds.dtype)
    chunk = ds.chunks[0]
    n = len(block) if final else (len(block) // chunk) * chunk
    if n:
        start = ds.shape[0]
        ds.resize((start + n, *ds.shape[1:]))
        ds[start:] = block[:n]
    return [block[n:]] if n < len(block) else []


class EpisodeWriter:
    """Write episodes.h5 episode by episode, atomically (``<path>.tmp`` renamed at close).

    Frames are buffered and appended in whole image chunks (memory: ``flush_frames`` frames plus one
    episode). Use as a context manager; an exception inside the ``with`` block leaves no output behind, and
    so does closing a writer that was given no episode (``DataError``). ``dt`` must be 0.1 s.
    ``compression`` (``COMPRESSIONS``) and ``compression_level`` (None: its default) apply to ``/images`` and
    ``/ego``; ``/states``, ``/actions`` and ``/costs`` are always gzip 1.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        road: dict,
        source: str,
        view: dict,
        costs: dict,
        dt: float = hdf5.DT_S,
        compression: str = "lz4hc",
        compression_level: int | None = None,
        flush_frames: int = 512,
    ) -> None:
        self.path = Path(path)
        self.road = hdf5.check_road(road, self.path)
        self.view = check_view(view, self.path)
        self.source, self.cost_params, self.dt = (
            str(source),
            dict(costs),
            hdf5.check_dt(float(dt), self.path, "dataset"),
        )
        self.flush_frames = max(int(flush_frames), IMAGE_CHUNK_FRAMES)
        opts = compression_options(self.path, compression, compression_level)
        row_opts = compression_options(self.path, "gzip")
        self._atomic = hdf5.AtomicPath(self.path)
        self._file = h5py.File(self._atomic.tmp, "w")
        h, w = self.view["height_px"], self.view["width_px"]
        for name, (dtype, tail) in FRAME_DATASETS.items():
            tail = (3, h, w) if tail is None else tail
            chunk, kw = (IMAGE_CHUNK_FRAMES, opts) if name == "images" else (ROW_CHUNK, row_opts)
            self._file.create_dataset(
                name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype, chunks=(chunk, *tail), **kw
            )
        self._file.create_dataset(
            "ego",
            shape=(0, h, w),
            maxshape=(None, h, w),
            dtype=np.uint8,
            chunks=(IMAGE_CHUNK_FRAMES, h, w),
            **opts,
        )
        self._buffer: dict[str, list[np.ndarray]] = {name: [] for name in FRAME_DATASETS}
        self._ego: list[np.ndarray] = []
        self._buffered = 0
        self._frames = 0
        self._table: dict[str, list] = {name: [] for name in EPISODE_COLUMNS}
        self._moments = {key: (RunningMoments(4), RunningMoments(2)) for key in ("train", "all")}

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def set_road(self, road: dict) -> None:
        """Replace the road description (e.g. once an importer has seen all the data)."""
        self.road = hdf5.check_road(road, self.path)

    def add_episode(
        self,
        vehicle: int,
        length: float,
        width: float,
        split: int,
        images: np.ndarray,
        states: np.ndarray,
        actions: np.ndarray,
        costs: np.ndarray,
        ego_mask: np.ndarray,
    ) -> None:
        """Append one episode of T frames.

        images: [T, 3, H, W] uint8; states: [T, 4] (x, y [m], vx, vy [m/s]); actions: [T, 2] (accel
        [m/s^2], curvature [1/m]); costs: [T, 3] (proximity, lane, off-road); ego_mask: [H, W] uint8;
        length, width [m] > 0; split 0/1/2 (train/val/test).
        """
        h, w = self.view["height_px"], self.view["width_px"]
        where = f"episode of vehicle {vehicle}"
        images = np.asarray(images)
        t = len(images)
        if t < 1 or images.dtype != np.uint8 or images.shape != (t, 3, h, w):
            raise DataError(
                self.path,
                f"{where}: images must be uint8 [T>=1, 3, {h}, {w}], got {images.dtype} {images.shape}",
            )
        arrays = {"images": images}
        for name, value in (("states", states), ("actions", actions), ("costs", costs)):
            tail = FRAME_DATASETS[name][1]
            value = np.asarray(value, np.float32)
            if value.shape != (t, *tail):
                raise DataError(self.path, f"{where}: {name} must be [{t}, {tail[0]}], got {value.shape}")
            hdf5.check_finite(value, f"{where}: {name}", self.path)
            arrays[name] = value
        ego_mask = np.asarray(ego_mask)
        if ego_mask.dtype != np.uint8 or ego_mask.shape != (h, w):
            raise DataError(
                self.path,
                f"{where}: ego_mask must be uint8 [{h}, {w}], got {ego_mask.dtype} {ego_mask.shape}",
            )
        if split not in (0, 1, 2) or not (0 < length < np.inf and 0 < width < np.inf):
            raise DataError(self.path, f"{where}: bad split {split} or size {length} x {width} m")
        for name, value in arrays.items():
            self._buffer[name].append(value)
        self._ego.append(ego_mask[None])
        if len(self._ego) >= IMAGE_CHUNK_FRAMES:
            self._ego = _append_whole_chunks(self._file["ego"], self._ego, final=False)
        for name, value in zip(EPISODE_COLUMNS, (vehicle, self._frames, t, length, width, split), strict=True):
            self._table[name].append(value)
        for key in ("train", "all") if split == 0 else ("all",):
            self._moments[key][0].add(arrays["states"])
            self._moments[key][1].add(arrays["actions"])
        self._frames += t
        self._buffered += t
        if self._buffered >= self.flush_frames:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        for name, parts in self._buffer.items():
            self._buffer[name] = _append_whole_chunks(self._file[name], parts, final)
        self._buffered = sum(len(part) for part in self._buffer["images"])

    def close(self) -> None:
        """Write the episode table, stats and attributes; rename the file into place."""
        if self._file is None:
            return
        try:
            if not self._table["vehicle"]:
                raise DataError(self.path, "no episode to write: an empty dataset")
            self._flush(final=True)
            self._ego = _append_whole_chunks(self._file["ego"], self._ego, final=True)
            f = self._file
            for name, values in self._table.items():
                f.create_dataset(f"episodes/{name}", data=np.asarray(values, EPISODE_COLUMNS[name]))
            key = "train" if self._moments["train"][0].count else "all"
            if key == "all" and self._frames:
                log.warning("%s: no train episodes; /stats computed over all splits", self.path)
            states, actions = self._moments[key]
            stats = {
                "state_mean": states.mean,
                "state_std": states.std(),
                "action_mean": actions.mean,
                "action_std": actions.std(),
            }
            for name, values in stats.items():
                f.create_dataset(f"stats/{name}", data=np.asarray(values, np.float32))
            f["stats"].attrs["split"] = key
            f["stats"].attrs["frames"] = np.int64(states.count)
            hdf5.write_root_attrs(f, FORMAT, self.source, self.road, self.dt, version=VERSION)
            f.attrs["view"] = json.dumps(self.view)
            f.attrs["costs"] = json.dumps(self.cost_params)
            f.close()
            self._file = None
            self._atomic.commit()
            log.info("wrote %s: %d episodes, %d frames", self.path, len(self._table["vehicle"]), self._frames)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._atomic.abort()


class EpisodeReader:
    """Read and validate episodes.h5 (checked on open; a bad file raises ``DataError``).

    Attributes: ``version``, ``road``, ``dt`` [s], ``source``, ``created``, ``view`` (dict), ``costs`` (cost
    parameters), ``episodes`` (dict of [E] arrays), ``stats`` (dict of float32 arrays), ``num_frames``,
    ``image_shape`` (3, H, W).
    """

    def __init__(self, path: str | os.PathLike, block_rows: int = 1 << 20) -> None:
        self.path = Path(path)
        self._file = hdf5.open_checked(self.path, FORMAT, versions=READ_VERSIONS)
        try:
            self._open(block_rows)
        except BaseException:
            self.close()
            raise

    def _open(self, block_rows: int) -> None:
        f, path = self._file, self.path
        self.version = int(f.attrs["version"])
        common = hdf5.read_common_attrs(f, path)
        self.road, self.dt = common["road"], hdf5.check_dt(common["dt"], path, "dataset")
        self.source, self.created = common["source"], common["created"]
        self.view = check_view(hdf5.attr_json(f, "view", path), path)
        self.costs = hdf5.attr_json(f, "costs", path)
        h, w = self.view["height_px"], self.view["width_px"]
        self.image_shape = (3, h, w)
        self._data = {}
        for name, (dtype, tail) in FRAME_DATASETS.items():
            tail = self.image_shape if tail is None else tail
            self._data[name] = hdf5.require_dataset(f, name, dtype, path, ndim=1 + len(tail), tail=tail)
        self.num_frames = self._data["images"].shape[0]
        for name, ds in self._data.items():
            if ds.shape[0] != self.num_frames:
                raise DataError(path, f"/{name} has {ds.shape[0]} rows, /images {self.num_frames}")
        self.episodes = {
            name: hdf5.read(hdf5.require_dataset(f, f"episodes/{name}", dtype, path), (), path)
            for name, dtype in EPISODE_COLUMNS.items()
        }
        e = self.episodes
        if len({len(v) for v in e.values()}) != 1:
            raise DataError(path, "/episodes columns differ in length")
        if not len(e["vehicle"]):
            raise DataError(path, "no episodes: an empty dataset")
        if np.any(e["count"] < 1) or int(e["count"].sum()) != self.num_frames:
            raise DataError(path, f"/episodes/count does not add up to the {self.num_frames} frames")
        if np.any(e["start"] != np.cumsum(e["count"], dtype=np.int64) - e["count"]):
            raise DataError(path, "/episodes/start does not match the counts")
        if np.any((e["split"] < 0) | (e["split"] > 2)):
            raise DataError(path, "/episodes/split outside 0/1/2")
        sizes = np.stack([e["length"], e["width"]])
        if not np.all(np.isfinite(sizes) & (sizes > 0)):
            raise DataError(path, "/episodes length or width is not a positive number")
        order = np.lexsort((e["split"], e["vehicle"]))
        same_vehicle = np.diff(e["vehicle"][order]) == 0
        if np.any(same_vehicle & (np.diff(e["split"][order]) != 0)):
            raise DataError(path, "a vehicle has episodes in two splits")
        self._ego = hdf5.require_dataset(f, "ego", np.uint8, path, ndim=3, tail=(h, w))
        if self._ego.shape[0] != self.num_episodes:
            raise DataError(path, f"/ego has {self._ego.shape[0]} masks for {self.num_episodes} episodes")
        self.stats = {}
        for name in STAT_NAMES:
            size = 4 if name.startswith("state") else 2
            ds = hdf5.require_dataset(f, f"stats/{name}", np.float32, path, ndim=1)
            self.stats[name] = hdf5.read(ds, (), path)
            if self.stats[name].shape != (size,):
                raise DataError(path, f"/stats/{name} has shape {ds.shape}, expected ({size},)")
            hdf5.check_finite(self.stats[name], f"/stats/{name}", path)
        if np.any(self.stats["state_std"] <= 0) or np.any(self.stats["action_std"] <= 0):
            raise DataError(path, "/stats holds a std <= 0")
        for a in range(0, self.num_frames, block_rows):
            b = min(a + block_rows, self.num_frames)
            for name in ("states", "actions", "costs"):
                hdf5.check_finite(hdf5.read(self._data[name], slice(a, b), path), f"/{name} rows {a}..{b - 1}", path)

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def num_episodes(self) -> int:
        return len(self.episodes["vehicle"])

    def read(self, start: int, stop: int, names: tuple[str, ...] = tuple(FRAME_DATASETS)) -> dict[str, np.ndarray]:
        """Frame rows ``start:stop``: ``images`` [T, 3, H, W] uint8, ``states`` [T, 4], ``actions`` [T, 2],
        ``costs`` [T, 3] float32 (or the subset ``names``)."""
        return {name: hdf5.read(self._data[name], slice(start, stop), self.path) for name in names}

    def ego_mask(self, episode: int) -> np.ndarray:
        """The ego mask of an episode: [H, W] uint8."""
        return hdf5.read(self._ego, episode, self.path)

    def ego_masks(self) -> np.ndarray:
        """The ego masks of all episodes: [E, H, W] uint8."""
        return hdf5.read(self._ego, (), self.path)

    def episode(self, k: int) -> dict:
        """Episode ``k``: its frame rows (see ``read``), ``ego_mask``, ``vehicle``, ``length``, ``width``,
        ``split``."""
        start, count = int(self.episodes["start"][k]), int(self.episodes["count"][k])
        out = self.read(start, start + count)
        out["ego_mask"] = self.ego_mask(k)
        out.update({name: self.episodes[name][k].item() for name in ("vehicle", "length", "width", "split")})
        return out
