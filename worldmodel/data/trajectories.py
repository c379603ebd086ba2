"""trajectories.h5: recorded traffic, one row per vehicle per frame (DESIGN.md §5).

Layout (``format = "worldmodel.trajectories"``, ``version = 1``):

- ``/tracks/<column>``: 1-D column datasets of N rows, sorted by vehicle then frame, frames of a vehicle
  consecutive (no gaps): ``vehicle`` int32, ``frame`` int32, ``x``, ``y`` float32 [m] (centre, road frame),
  ``vx``, ``vy`` float32 [m/s], ``lane`` int16 (-1: not in a lane); optional float32 ``heading`` [rad from
  +x], ``accel`` [m/s^2], ``curvature`` [1/m] (the exact actions of simulated bots: the action of row t
  moves the car from frame t to t + 1). Chunked, gzip-compressed.
- ``/vehicles/<column>``: V rows sorted by id: ``id`` int32, ``start`` int64 (row of the first frame),
  ``count`` int32, ``length``, ``width`` float32 [m], ``kind`` int8 (index into the root attribute
  ``kinds``, a JSON list of names).
- root attributes: ``format``, ``version``, ``dt`` (always 0.1 s, ``hdf5.DT_S``), ``created``, ``source``,
  ``road``, ``kinds``.

A file holds at least one vehicle: the writer refuses to close an empty recording and the reader refuses to
open one. The reader also checks that the frames are ``dt`` apart: over the moving cars (faster than
``MIN_CHECK_SPEED_MPS``), the distance driven per frame must match the speed x ``dt`` within a factor
``FRAME_SPACING_TOLERANCE`` (a recording whose frames are 0.5 s apart but labelled 0.1 s moves 5x too far).

``TrajectoryWriter`` accepts vehicles in any id order. Rows go to the output in arrival order; if the ids
did not arrive ascending, ``close`` copies the rows into id order, one chunk-sized block at a time, so memory
stays bounded either way (the common case, ascending ids, costs no copy).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from worldmodel.data import hdf5
from worldmodel.data.hdf5 import DataError

log = logging.getLogger(__name__)

FORMAT = "worldmodel.trajectories"
#: Columns every track has (besides ``vehicle``), with their on-disk dtypes.
REQUIRED_COLUMNS = {
    "frame": np.int32,
    "x": np.float32,
    "y": np.float32,
    "vx": np.float32,
    "vy": np.float32,
    "lane": np.int16,
}
#: Columns a file may add; all vehicles of a file have the same ones.
OPTIONAL_COLUMNS = {"heading": np.float32, "accel": np.float32, "curvature": np.float32}
VEHICLE_COLUMNS = {
    "id": np.int32,
    "start": np.int64,
    "count": np.int32,
    "length": np.float32,
    "width": np.float32,
    "kind": np.int8,
}
_TRACK_DTYPES = {"vehicle": np.int32, **REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
#: Frame-spacing check: the distance driven per frame over speed x dt must lie within this factor of 1.
FRAME_SPACING_TOLERANCE = 1.3
#: Frame-spacing check: only consecutive frames of a car faster than this count [m/s].
MIN_CHECK_SPEED_MPS = 1.0
#: Frame-spacing check: fewer such frame pairs than this, no verdict.
MIN_CHECK_PAIRS = 10


def _create_columns(f: h5py.File, columns: list[str], chunk_rows: int) -> None:
    for name in ["vehicle", *columns]:
        f.create_dataset(
            f"tracks/{name}",
            shape=(0,),
            maxshape=(None,),
            dtype=_TRACK_DTYPES[name],
            chunks=(chunk_rows,),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )


def _append(f: h5py.File, block: dict[str, np.ndarray]) -> None:
    for name, values in block.items():
        ds = f[f"tracks/{name}"]
        n = ds.shape[0]
        ds.resize((n + len(values),))
        ds[n:] = values


class TrajectoryWriter:
    """Write trajectories.h5 vehicle by vehicle, atomically (``<path>.tmp`` renamed at close).

    Use as a context manager; an exception inside the ``with`` block leaves no output behind, and so does
    closing a writer that was given no vehicle (``DataError``: an empty recording is not a recording).
    ``dt`` must be 0.1 s (``hdf5.check_dt``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        road: dict,
        source: str,
        kinds: list[str],
        dt: float = hdf5.DT_S,
        chunk_rows: int = 1 << 16,
    ) -> None:
        self.path = Path(path)
        self.road = hdf5.check_road(road, self.path)
        self.source, self.kinds, self.dt = (
            str(source),
            [str(k) for k in kinds],
            hdf5.check_dt(float(dt), self.path, "recording"),
        )
        if not self.kinds or len(self.kinds) > 127:
            raise DataError(self.path, f"kinds must list 1 to 127 names, got {kinds!r}")
        self.chunk_rows = int(chunk_rows)
        self._atomic = hdf5.AtomicPath(self.path)
        self._file = h5py.File(self._atomic.tmp, "w")
        self._columns: list[str] | None = None  # fixed by the first vehicle
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._buffered = 0
        self._rows = 0
        self._vehicles: dict[str, list] = {name: [] for name in VEHICLE_COLUMNS}
        self._ids: set[int] = set()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add_vehicle(
        self, vehicle_id: int, length: float, width: float, kind: int, columns: dict[str, np.ndarray]
    ) -> None:
        """Add one vehicle's track.

        columns: ``frame`` [T] int (consecutive), ``x``, ``y`` [T] [m], ``vx``, ``vy`` [T] [m/s], ``lane``
        [T] int, and optionally ``heading`` [rad], ``accel`` [m/s^2], ``curvature`` [1/m] [T]; every vehicle
        of a file must give the same optional columns. length, width [m] > 0; kind indexes ``kinds``.
        """
        where = f"vehicle {vehicle_id}"
        names = sorted(columns)
        unknown = set(names) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS)
        missing = set(REQUIRED_COLUMNS) - set(names)
        if unknown or missing:
            raise DataError(self.path, f"{where}: unknown columns {sorted(unknown)}, missing {sorted(missing)}")
        ordered = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in columns]
        if self._columns is None:
            self._columns = ordered
            _create_columns(self._file, ordered, self.chunk_rows)
        elif ordered != self._columns:
            raise DataError(self.path, f"{where}: columns {ordered} differ from the first vehicle's {self._columns}")
        arrays = {name: np.asarray(columns[name]) for name in ordered}
        count = len(arrays["frame"])
        if count < 1 or any(a.shape != (count,) for a in arrays.values()):
            raise DataError(self.path, f"{where}: columns must be 1-D of one length >= 1")
        if np.any(np.diff(arrays["frame"]) != 1):
            raise DataError(self.path, f"{where}: frames must be consecutive")
        for name in ordered:
            if arrays[name].dtype.kind == "f":
                hdf5.check_finite(arrays[name], f"{where} column {name!r}", self.path)
        if not (0 < length < np.inf and 0 < width < np.inf and 0 <= kind < len(self.kinds)):
            raise DataError(self.path, f"{where}: bad size {length} x {width} m or kind {kind}")
        if int(vehicle_id) in self._ids:
            raise DataError(self.path, f"{where}: added twice")
        self._ids.add(int(vehicle_id))
        block = {"vehicle": np.full(count, vehicle_id, np.int32)}
        block.update({name: arrays[name].astype(_TRACK_DTYPES[name]) for name in ordered})
        for name, values in block.items():
            self._buffer.setdefault(name, []).append(values)
        for name, value in zip(VEHICLE_COLUMNS, (vehicle_id, self._rows, count, length, width, kind), strict=True):
            self._vehicles[name].append(value)
        self._rows += count
        self._buffered += count
        if self._buffered >= 4 * self.chunk_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write whole chunks of the buffer (all of it when ``final``), keep the rest."""
        if not self._buffered:
            return
        block = {name: np.concatenate(parts) for name, parts in self._buffer.items()}
        n = self._buffered if final else (self._buffered // self.chunk_rows) * self.chunk_rows
        _append(self._file, {name: values[:n] for name, values in block.items()})
        self._buffer = {name: [values[n:]] for name, values in block.items()}
        self._buffered -= n

    def close(self) -> None:
        """Finish the file and rename it into place."""
        if self._file is None:
            return
        try:
            if self._columns is None:
                raise DataError(self.path, "no vehicle to write: an empty recording")
            self._flush(final=True)
            table = {name: np.asarray(values, VEHICLE_COLUMNS[name]) for name, values in self._vehicles.items()}
            order = np.argsort(table["id"], kind="stable")
            if np.any(order != np.arange(len(order))):
                self._file.close()
                self._file = self._reorder(table, order)
                table = {name: values[order] for name, values in table.items()}
                table["start"] = np.concatenate([[0], np.cumsum(table["count"])[:-1]]).astype(np.int64)
            for name, values in table.items():
                self._file.create_dataset(f"vehicles/{name}", data=values)
            hdf5.write_root_attrs(self._file, FORMAT, self.source, self.road, self.dt)
            self._file.attrs["kinds"] = json.dumps(self.kinds)
            self._file.close()
            self._file = None
            self._atomic.commit()
            log.info("wrote %s: %d vehicles, %d rows", self.path, len(order), self._rows)
        except BaseException:
            self.abort()
            raise

    def _reorder(self, table: dict[str, np.ndarray], order: np.ndarray) -> h5py.File:
        """Copy the rows of the temporary file into vehicle-id order, into a fresh temporary file.

        Reads whole vehicles, writes blocks of about ``chunk_rows`` rows: memory stays bounded."""
        unsorted = self._atomic.tmp.with_name(self._atomic.tmp.name + ".unsorted")
        os.replace(self._atomic.tmp, unsorted)
        out = h5py.File(self._atomic.tmp, "w")
        try:
            _create_columns(out, self._columns, self.chunk_rows)
            with h5py.File(unsorted, "r", rdcc_nbytes=64 << 20) as src:
                tracks = {name: src[f"tracks/{name}"] for name in ["vehicle", *self._columns]}
                pending: list[slice] = []
                pending_rows = 0
                for k, vehicle in enumerate(order):
                    start, count = int(table["start"][vehicle]), int(table["count"][vehicle])
                    pending.append(slice(start, start + count))
                    pending_rows += count
                    if k + 1 == len(order) or pending_rows >= self.chunk_rows:
                        _append(
                            out,
                            {name: np.concatenate([ds[rows] for rows in pending]) for name, ds in tracks.items()},
                        )
                        pending, pending_rows = [], 0
        except BaseException:
            out.close()
            raise
        finally:
            unsorted.unlink(missing_ok=True)
        return out

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._atomic.abort()


@dataclass(frozen=True)
class FrameTable:
    """All rows of a recording sorted by frame (then vehicle), with per-frame offsets.

    The rows of frame ``f`` are ``offsets[f - first_frame] : offsets[f - first_frame + 1]`` of every array in
    ``columns``: ``vehicle`` [R] int32, ``length``, ``width`` [R] float32 [m], ``kind`` [R] int8, and the
    requested track columns (``x``, ``y``, ...).
    """

    first_frame: int
    offsets: np.ndarray
    columns: dict[str, np.ndarray]

    @property
    def num_frames(self) -> int:
        return len(self.offsets) - 1

    def at(self, frame: int) -> dict[str, np.ndarray]:
        """The vehicles present at ``frame``: a dict of [n] arrays (views), empty outside the recording."""
        k = frame - self.first_frame
        if not 0 <= k < self.num_frames:
            return {name: values[:0] for name, values in self.columns.items()}
        a, b = self.offsets[k], self.offsets[k + 1]
        return {name: values[a:b] for name, values in self.columns.items()}


class TrajectoryReader:
    """Read and validate trajectories.h5 (all checks happen on open; a bad file raises ``DataError``).

    Attributes: ``road`` (dict), ``dt`` [s], ``source``, ``created``, ``kinds`` (list of names), ``columns``
    (track columns present, besides ``vehicle``), ``vehicles`` (dict of [V] arrays: ``id``, ``start``,
    ``count``, ``length``, ``width``, ``kind``), ``num_rows``, ``frame_range`` (first, stop) half-open.
    """

    def __init__(self, path: str | os.PathLike, block_rows: int = 1 << 20) -> None:
        self.path = Path(path)
        self._file = hdf5.open_checked(self.path, FORMAT)
        try:
            self._open(block_rows)
        except BaseException:
            self.close()
            raise

    def _open(self, block_rows: int) -> None:
        f, path = self._file, self.path
        common = hdf5.read_common_attrs(f, path)
        self.road, self.dt = common["road"], hdf5.check_dt(common["dt"], path, "recording")
        self.source, self.created = common["source"], common["created"]
        self.kinds = hdf5.attr_json(f, "kinds", path)
        if not isinstance(self.kinds, list) or not self.kinds:
            raise DataError(path, "attribute 'kinds' must be a non-empty JSON list")
        self._tracks = {
            name: hdf5.require_dataset(f, f"tracks/{name}", _TRACK_DTYPES[name], path)
            for name in ["vehicle", *REQUIRED_COLUMNS]
        }
        self._tracks.update(
            {
                name: hdf5.require_dataset(f, f"tracks/{name}", dtype, path)
                for name, dtype in OPTIONAL_COLUMNS.items()
                if f"tracks/{name}" in f
            }
        )
        self.columns = tuple(name for name in self._tracks if name != "vehicle")
        self.num_rows = self._tracks["vehicle"].shape[0]
        for name, ds in self._tracks.items():
            if ds.shape[0] != self.num_rows:
                raise DataError(path, f"/tracks/{name} has {ds.shape[0]} rows, /tracks/vehicle {self.num_rows}")
        self.vehicles = {
            name: hdf5.read(hdf5.require_dataset(f, f"vehicles/{name}", dtype, path), (), path)
            for name, dtype in VEHICLE_COLUMNS.items()
        }
        v = self.vehicles
        if len({len(a) for a in v.values()}) != 1:
            raise DataError(path, "/vehicles columns differ in length")
        if not len(v["id"]):
            raise DataError(path, "no vehicles: an empty recording")
        if np.any(np.diff(v["id"]) <= 0):
            raise DataError(path, "/vehicles/id is not strictly ascending")
        if np.any(v["count"] < 1) or int(v["count"].sum()) != self.num_rows:
            raise DataError(path, f"/vehicles/count does not add up to the {self.num_rows} track rows")
        if np.any(v["start"] != np.cumsum(v["count"], dtype=np.int64) - v["count"]):
            raise DataError(path, "/vehicles/start does not match the counts")
        sizes = np.stack([v["length"], v["width"]])
        if not np.all(np.isfinite(sizes) & (sizes > 0)):
            raise DataError(path, "/vehicles length or width is not a positive number")
        if np.any((v["kind"] < 0) | (v["kind"] >= len(self.kinds))):
            raise DataError(path, "/vehicles/kind outside the 'kinds' list")
        self._index = {int(vid): k for k, vid in enumerate(v["id"])}
        self._validate_rows(block_rows)

    def _validate_rows(self, block_rows: int) -> None:
        """Blockwise: vehicle column vs table, consecutive frames, finite floats, frame spacing (module
        docstring); finds the frame range."""
        first, stop = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        driven_m = expected_m = 0.0  # over the frame pairs of moving cars: distance driven, speed x dt
        pairs = 0
        starts = self.vehicles["start"]
        for a in range(0, self.num_rows, block_rows):
            b = min(a + block_rows, self.num_rows)
            a = max(a - 1, 0)  # overlap one row, to check frames across the block boundary
            block = self.read_rows(a, b)
            owner = np.searchsorted(starts, np.arange(a, b), side="right") - 1
            if np.any(block["vehicle"] != self.vehicles["id"][owner]):
                raise DataError(self.path, f"/tracks/vehicle disagrees with /vehicles in rows {a}..{b - 1}")
            same = owner[1:] == owner[:-1]
            if np.any(np.diff(block["frame"].astype(np.int64))[same] != 1):
                raise DataError(self.path, f"frames of a vehicle are not consecutive in rows {a}..{b - 1}")
            for name in self.columns:
                if block[name].dtype.kind == "f":
                    hdf5.check_finite(block[name], f"/tracks/{name} rows {a}..{b - 1}", self.path)
            first, stop = min(first, int(block["frame"].min())), max(stop, int(block["frame"].max()) + 1)
            speed = np.hypot(block["vx"].astype(np.float64), block["vy"].astype(np.float64))
            step = np.hypot(np.diff(block["x"].astype(np.float64)), np.diff(block["y"].astype(np.float64)))
            moving = same & (np.minimum(speed[1:], speed[:-1]) > MIN_CHECK_SPEED_MPS)
            driven_m += float(step[moving].sum())
            expected_m += float((0.5 * (speed[1:] + speed[:-1]))[moving].sum()) * self.dt
            pairs += int(moving.sum())
        self.frame_range = (first, stop)
        ratio = driven_m / expected_m if pairs >= MIN_CHECK_PAIRS else 1.0
        if not 1 / FRAME_SPACING_TOLERANCE <= ratio <= FRAME_SPACING_TOLERANCE:
            raise DataError(
                self.path,
                f"frames are not dt = {self.dt:g} s apart: cars move {ratio:.2f} x speed x dt per frame, as if "
                f"frames were {ratio * self.dt:.2g} s apart (a recording labelled with the wrong dt?)",
            )

    def __enter__(self) -> TrajectoryReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def num_vehicles(self) -> int:
        return len(self.vehicles["id"])

    def read_rows(self, start: int, stop: int, columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of the given track columns (default: ``vehicle`` and all ``columns``)."""
        names = ("vehicle", *self.columns) if columns is None else columns
        return {name: hdf5.read(self._tracks[name], slice(start, stop), self.path) for name in names}

    def track(self, vehicle_id: int) -> dict[str, np.ndarray]:
        """The track of one vehicle: a dict of [T] arrays (``frame``, ``x``, ``y``, ...)."""
        k = self._index.get(int(vehicle_id))
        if k is None:
            raise KeyError(f"{self.path}: no vehicle {vehicle_id}")
        start, count = int(self.vehicles["start"][k]), int(self.vehicles["count"][k])
        return self.read_rows(start, start + count, self.columns)

    def iter_blocks(self, max_rows: int = 1 << 20, columns: tuple[str, ...] | None = None) -> Iterator[dict]:
        """Blocks of whole vehicles (one vehicle, or as many as fit in ``max_rows`` rows): dicts of arrays."""
        starts, ends = self.vehicles["start"], self.vehicles["start"] + self.vehicles["count"]
        k = 0
        while k < self.num_vehicles:
            last = max(k, int(np.searchsorted(ends, starts[k] + max_rows, side="right")) - 1)
            yield self.read_rows(int(starts[k]), int(ends[last]), columns)
            k = last + 1

    def __iter__(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(vehicle_id, track)`` for every vehicle, in id order, read in large blocks."""
        for block in self.iter_blocks(columns=("vehicle", *self.columns)):
            cuts = np.flatnonzero(np.diff(block["vehicle"])) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(block["vehicle"])], strict=True):
                yield int(block["vehicle"][lo]), {name: block[name][lo:hi] for name in self.columns}

    def frames_table(self, columns: tuple[str, ...] = ("x", "y", "vx", "vy")) -> FrameTable:
        """Every row sorted by frame then vehicle, with per-frame offsets (for replay: who is where when).

        Built with a stable argsort of the frame column (rows are already sorted by vehicle); memory is
        about 4 bytes x (3 + len(columns)) per row.
        """
        frame = hdf5.read(self._tracks["frame"], (), self.path).astype(np.int64)
        first = self.frame_range[0]
        order = np.argsort(frame, kind="stable")
        counts = np.bincount(frame - first, minlength=self.frame_range[1] - first) if len(frame) else np.zeros(0)
        owner = np.repeat(np.arange(self.num_vehicles), self.vehicles["count"])[order]
        out = {"vehicle": self.vehicles["id"][owner]}
        out.update({name: self.vehicles[name][owner] for name in ("length", "width", "kind")})
        for name in columns:
            out[name] = hdf5.read(self._tracks[name], (), self.path)[order]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return FrameTable(first_frame=first, offsets=offsets, columns=out)
