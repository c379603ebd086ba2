"""Trajectories -> episodes: every recorded car as the ego, every frame it was recorded.

For each car and frame: its ego view (``EgoRasterizer``), state (x, y, vx, vy), action (the exact one a
simulated bot took, else inferred by inverting the kinematics, |a| clipped to 6.2 m/s^2) and costs
(``worldmodel.costs`` on that view with the car's true speed), all of the same instant.

How (bounded memory, every frame drawn once): the recording is cut into shards of consecutive frames; a
shard renders the views of all cars present in its frames at once (one canvas per frame, one warp per
car). Shards run in worker processes, at most ``2 x workers`` in flight; the main process stitches each
car's pieces in shard order and writes the episode as soon as the car's last frame is in, so memory holds
the cars on the road at one time, never the whole file. A worker hands a shard's views (8.4 KB per
car-frame) over in a file of the system's temporary directory, read back once and deleted (through the
result pipe they cost the main process ~3x more CPU time, and it also compresses everything written).
Output is identical for any number of workers.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldmodel.costs import CostConfig, pixel_costs_numpy
from worldmodel.data.episodes import COMPRESSIONS, EpisodeWriter, split_for_vehicle
from worldmodel.data.hdf5 import DataError
from worldmodel.data.trajectories import TrajectoryReader
from worldmodel.traffic import kinematics
from worldmodel.traffic.raster import EgoRasterizer, ego_masks
from worldmodel.traffic.road import Road
from worldmodel.traffic.view import ViewSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    """How episodes are made from trajectories."""

    workers: int = 1
    """Worker processes that render shards (1 = in this process)."""
    shard_frames: int = 100
    """Consecutive frames per shard."""
    split_seed: int = 0
    """Seed of the deterministic 80/10/10 split by vehicle."""
    id_stride: int = 1_000_000
    """With several input files, vehicle ids of file k become ``k * id_stride + id``."""
    compression: str = "lz4hc"
    """Compression of the episodes file's images: ``lz4hc`` (blosc, fast to read) or ``gzip``."""
    compression_level: int = 5
    """Its level, 0-9 (lz4hc 5: ~1,700 bytes per car-frame; gzip 1: ~1,800, read 3x slower)."""
    view: ViewSpec = field(default_factory=ViewSpec)
    """Ego view geometry."""
    costs: CostConfig = field(default_factory=CostConfig)
    """Cost parameters."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name, flag, value, ok, what in (
            ("workers", "--workers", self.workers, self.workers >= 1, ">= 1"),
            ("shard_frames", None, self.shard_frames, self.shard_frames >= 1, ">= 1"),
            ("id_stride", None, self.id_stride, self.id_stride >= 1, ">= 1"),
            ("compression", None, repr(self.compression), self.compression in COMPRESSIONS, "lz4hc or gzip"),
            ("compression_level", None, self.compression_level, 0 <= self.compression_level <= 9, "in 0..9"),
        ):
            if not ok:
                raise ValueError(f"{name}{f' ({flag})' if flag else ''} must be {what}, got {value}")


def _vehicle_frames(reader: TrajectoryReader) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame of every vehicle ``[V]``."""
    frame = reader.read_rows(0, reader.num_rows, ("frame",))["frame"]
    first = frame[reader.vehicles["start"]].astype(np.int64)
    return first, first + reader.vehicles["count"].astype(np.int64) - 1


def _track_actions(track: dict, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Heading [T] and actions [T, 2] of one track: exact if recorded, else inferred from positions."""
    psi, _, accel, curvature, _ = kinematics.invert_actions(track["x"], track["y"], dt)
    if "heading" in track:
        psi = track["heading"].astype(np.float64)
    if "accel" in track and "curvature" in track:
        actions = np.stack([track["accel"], track["curvature"]], axis=1)
    else:
        actions = np.stack([accel, curvature], axis=1)
    return psi, actions.astype(np.float32)


def render_shard(
    path: str, lo: int, hi: int, first: np.ndarray, last: np.ndarray, config: ExtractConfig, spill: str | None = None
) -> dict:
    """Episode pieces of frames ``[lo, hi)`` of one trajectories file, vehicle-major (frames ascending):
    ``vehicles`` [P] (vehicle indices), ``cuts`` [P + 1] (rows of each piece: ``cuts[k]:cuts[k + 1]``),
    ``images`` [n, 3, H, W] uint8, ``states`` [n, 4], ``actions`` [n, 2], ``costs`` [n, 3]. With ``spill``
    (a folder), the images are written to a file there and ``images`` is its path (``read_images``)."""
    with TrajectoryReader(path) as reader:
        road = Road.from_dict(reader.road)
        veh = reader.vehicles
        present = np.nonzero((first < hi) & (last >= lo))[0]
        cols = ["frame", "x", "y", "vx", "vy"] + [c for c in ("heading", "accel", "curvature") if c in reader.columns]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("owner", "frame", "x", "y", "vx", "vy", "psi", "actions")}
        for v in present:
            start = int(veh["start"][v])
            track = reader.read_rows(start, start + int(veh["count"][v]), tuple(cols))
            psi, actions = _track_actions(track, reader.dt)
            a, b = max(lo, first[v]) - first[v], min(hi - 1, last[v]) - first[v] + 1
            for name in ("frame", "x", "y", "vx", "vy"):
                parts[name].append(track[name][a:b])
            parts["psi"].append(psi[a:b])
            parts["actions"].append(actions[a:b])
            parts["owner"].append(np.full(b - a, v))
    if not present.size:
        return {"vehicles": np.zeros(0, np.int64), "cuts": np.zeros(1, np.int64)}
    rows = {k: np.concatenate(p) for k, p in parts.items()}
    order = np.argsort(rows["frame"], kind="stable")  # frame-major, vehicles in index order within a frame
    rows = {k: p[order] for k, p in rows.items()}
    owner = rows["owner"]
    length = veh["length"][owner].astype(np.float64)
    width = veh["width"][owner].astype(np.float64)
    rasterizer = EgoRasterizer(road, config.view)
    images = np.empty((len(owner), 3, config.view.height_px, config.view.width_px), dtype=np.uint8)
    bounds = np.flatnonzero(np.diff(rows["frame"])) + 1
    for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(owner)], strict=True):
        cars = {"x": rows["x"][s:e].astype(np.float64), "y": rows["y"][s:e].astype(np.float64),
                "psi": rows["psi"][s:e], "length": length[s:e], "width": width[s:e],
                "lane": road.lane_at(rows["x"][s:e], rows["y"][s:e])}  # fmt: skip
        images[s:e] = rasterizer.render(cars)
    speed = np.hypot(rows["vx"], rows["vy"])
    costs = pixel_costs_numpy(images, speed, length, width, config.view, config.costs)
    states = np.stack([rows["x"], rows["y"], rows["vx"], rows["vy"]], axis=1).astype(np.float32)
    by_owner = np.argsort(owner, kind="stable")  # back to vehicle-major, frames ascending
    cuts = np.r_[0, np.flatnonzero(np.diff(owner[by_owner])) + 1, len(owner)]
    out = {"vehicles": owner[by_owner][cuts[:-1]], "cuts": cuts, "images": images[by_owner],
           "states": states[by_owner], "actions": rows["actions"][by_owner], "costs": costs[by_owner]}  # fmt: skip
    if spill is not None:
        file = os.path.join(spill, f"shard-{lo}.u8")
        try:
            out["images"].tofile(file)
            out["images"] = file
        except OSError:  # no room there: the pipe takes them
            log.debug("cannot spill shard %d to %s", lo, spill, exc_info=True)
    return out


def read_images(shard: dict, view: ViewSpec) -> np.ndarray:
    """A shard's images [n, 3, H, W] uint8 (read from its spill file, which is deleted, if there is one)."""
    images = shard["images"]
    if isinstance(images, str):
        file, images = images, np.fromfile(images, np.uint8)
        os.unlink(file)
    return images.reshape(int(shard["cuts"][-1]), 3, view.height_px, view.width_px)


def _shard_results(pool, args: list[tuple], window: int):
    """``(shard, hi)`` of each shard in order; with a pool, at most ``window`` shards in flight."""
    if pool is None:
        for a in args:
            yield render_shard(*a), a[2]
        return
    jobs: deque = deque()
    for i in range(len(args)):
        while len(jobs) < window and i + len(jobs) < len(args):
            a = args[i + len(jobs)]
            jobs.append((pool.apply_async(render_shard, a), a[2]))
        job, hi = jobs.popleft()
        yield job.get(), hi


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # (OpenCV's thread setting is inherited from the parent: changing it after a
    # fork can hang on the parent's thread pool)


def extract(trajectories: list[str | Path], out: str | Path, config: ExtractConfig = ExtractConfig()) -> dict:
    """Write ``out`` (episodes.h5) from one or more trajectories files. Returns a summary dict."""
    paths = [str(p) for p in trajectories]
    if not paths:
        raise DataError(out, "no trajectories files given")
    t0 = time.perf_counter()
    readers = [TrajectoryReader(p) for p in paths]
    road = readers[0].road
    total = sum(r.num_rows for r in readers)
    source = "extract of " + ", ".join(os.path.basename(p) for p in paths)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    pool = ctx.Pool(config.workers, initializer=_init_worker) if config.workers > 1 else None
    spill = tempfile.TemporaryDirectory(prefix="worldmodel-extract-") if pool is not None else None
    episodes = frames = 0
    splits = [0, 0, 0]
    bar = tqdm(total=total, desc="extract", unit="car-frame", disable=not config.progress)
    try:
        with EpisodeWriter(out, road, source, config.view.to_dict(), config.costs.to_dict(),
                           compression=config.compression, compression_level=config.compression_level) as writer:  # fmt: skip
            for k, reader in enumerate(readers):
                first, last = _vehicle_frames(reader)
                veh = {name: values.copy() for name, values in reader.vehicles.items()}
                masks = ego_masks(config.view, veh["length"], veh["width"])
                f0, f1 = reader.frame_range
                shards = [(lo, min(lo + config.shard_frames, f1)) for lo in range(f0, f1, config.shard_frames)]
                pending: dict[int, dict[str, list]] = {}
                args = [(paths[k], lo, hi, first, last, config, spill and spill.name) for lo, hi in shards]
                for shard, hi in _shard_results(pool, args, 2 * config.workers):
                    cuts = shard["cuts"].tolist()
                    images = read_images(shard, config.view) if len(cuts) > 1 else None
                    for v, a, b in zip(shard["vehicles"].tolist(), cuts[:-1], cuts[1:], strict=True):
                        store = pending.setdefault(v, {name: [] for name in ("images", "states", "actions", "costs")})
                        store["images"].append(np.array(images[a:b]))  # copies: the shard's arrays go
                        for name in ("states", "actions", "costs"):
                            store[name].append(shard[name][a:b].copy())
                    bar.update(cuts[-1])
                    del images
                    for v in sorted(v for v in pending if last[v] < hi):  # cars whose last frame is in
                        arrays = {name: np.concatenate(p) for name, p in pending.pop(v).items()}
                        vid = k * config.id_stride + int(veh["id"][v]) if len(readers) > 1 else int(veh["id"][v])
                        split = split_for_vehicle(vid, config.split_seed)
                        writer.add_episode(vehicle=vid, length=float(veh["length"][v]), width=float(veh["width"][v]),
                                           split=split, ego_mask=masks[v], **arrays)  # fmt: skip
                        episodes += 1
                        frames += len(arrays["states"])
                        splits[split] += 1
                if pending:
                    raise DataError(paths[k], f"{len(pending)} vehicles never reached their last frame")
                reader.close()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
        if spill is not None:
            spill.cleanup()
        for r in readers:
            r.close()
    seconds = time.perf_counter() - t0
    size = Path(out).stat().st_size
    return {"out": str(out), "episodes": episodes, "car_frames": frames, "seconds": round(seconds, 2),
            "car_frames_per_s": round(frames / max(seconds, 1e-9), 1), "bytes_per_car_frame": round(size / max(frames, 1), 1),
            "splits": {"train": splits[0], "val": splits[1], "test": splits[2]}, "workers": config.workers}  # fmt: skip
