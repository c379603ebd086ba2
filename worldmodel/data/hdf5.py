"""Shared pieces of the HDF5 formats: errors, atomic output, root attributes, checked opening and reading.

Both formats (``trajectories.h5``, ``episodes.h5``; DESIGN.md §5) carry the root attributes ``format``
(str), ``version`` (int), ``dt`` [s], ``created`` (ISO 8601 time), ``source`` (str) and ``road`` (a JSON
dict, see ``check_road``). Every problem with an input file is reported as a ``DataError`` whose message is
one line that names the file and the problem; the CLI prints it and exits 1. Writers write to a temporary
file beside the output and rename it into place only when everything was written (``AtomicPath``, from
``worldmodel.files``, re-exported here with ``atomic_output`` and ``write_json``).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from worldmodel.files import AtomicPath as AtomicPath  # re-exported: the writers' atomic output
from worldmodel.files import FileError
from worldmodel.files import atomic_output as atomic_output
from worldmodel.files import write_json as write_json
from worldmodel.traffic.kinematics import DT_S

#: Version of the trajectories format, and the default of ``write_root_attrs`` and ``open_checked``
#: (episodes.h5 has its own, ``episodes.VERSION``).
FORMAT_VERSION = 1


def check_dt(dt: float, path, what: str = "file") -> float:
    """``dt`` [s] if it is the pipeline's ``DT_S`` (0.1 s), else ``DataError`` naming ``path``."""
    if not np.isclose(dt, DT_S, rtol=1e-6, atol=0.0):
        raise DataError(path, f"dt is {dt:g} s; every {what} must have {DT_S:g} s frames (DESIGN.md §4)")
    return float(dt)


_ROAD_NUMBERS = ("lane_width_m", "length_m", "speed_limit_mps")
_ROAD_SPANS = ("section_m", "evaluated_m")


#: A bad input file: the message is one line naming the file and the problem (``FileError``). Output
#: problems (``files.OutputError``) and unusable checkpoints (``nn.checkpointing.CheckpointError``) are
#: kinds of it, so one ``except DataError`` (or ``ValueError``) catches every bad file.
DataError = FileError


def check_road(road: dict, path: str | os.PathLike | None = None) -> dict:
    """Validate a road description and return a normalised copy (plain ints, floats, lists).

    ``{"lanes": int >= 1, "lane_width_m": float > 0, "length_m": float > 0, "section_m": [start, end],
    "evaluated_m": [start, end], "speed_limit_mps": float > 0, "ramps": [{"name": str, "kind": "on",
    "lane": int (lanes + k), "start_m": float, "end_m": float}]}``. Raises ``DataError`` otherwise.
    """
    if not isinstance(road, dict):
        raise DataError(path, f"road must be a JSON object, got {type(road).__name__}")
    try:
        out: dict = {"lanes": int(road["lanes"])}
        for key in _ROAD_NUMBERS:
            out[key] = float(road[key])
        for key in _ROAD_SPANS:
            start, end = (float(v) for v in road[key])
            out[key] = [start, end]
        ramps = []
        for k, ramp in enumerate(road.get("ramps", [])):
            ramps.append(
                {
                    "name": str(ramp["name"]),
                    "kind": str(ramp["kind"]),
                    "lane": int(ramp["lane"]),
                    "start_m": float(ramp["start_m"]),
                    "end_m": float(ramp["end_m"]),
                }
            )
            if ramps[-1]["lane"] != out["lanes"] + k or ramps[-1]["kind"] != "on":
                raise ValueError(f"ramp {k} must be kind 'on' with lane {out['lanes'] + k}")
        out["ramps"] = ramps
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(path, f"bad road description: {exc!r}") from exc
    numbers = [out["lane_width_m"], out["length_m"], out["speed_limit_mps"], *out["section_m"]]
    if out["lanes"] < 1 or not all(np.isfinite(numbers)) or min(numbers[:3]) <= 0:
        raise DataError(path, f"bad road description: {out}")
    return out


#: Told with a read error when a file needs a compression plugin that is not installed.
PLUGIN_HINT = "the hdf5plugin package reads blosc-compressed files: pip install hdf5plugin (scripts/setup.sh does)"


def register_filters() -> bool:
    """Make HDF5's compression plugins (blosc, lz4, zstd, ...) available to h5py by importing ``hdf5plugin``,
    which registers them with the HDF5 library (once per process; later calls cost nothing). False if the
    package is missing: gzip files still read, blosc ones fail with ``PLUGIN_HINT`` (see ``read``)."""
    try:
        import hdf5plugin  # noqa: F401  (importing it is the registration)
    except ImportError:
        return False
    return True


def write_root_attrs(
    f: h5py.File, fmt: str, source: str, road: dict, dt: float = DT_S, version: int = FORMAT_VERSION
) -> None:
    """Write the root attributes common to both formats (``road`` must already be checked)."""
    f.attrs["format"] = fmt
    f.attrs["version"] = np.int64(version)
    f.attrs["dt"] = float(dt)
    f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    f.attrs["source"] = str(source)
    f.attrs["road"] = json.dumps(road)


def open_checked(
    path: str | os.PathLike, fmt: str | None, versions: tuple[int, ...] | None = (FORMAT_VERSION,), **h5_options
) -> h5py.File:
    """Open an HDF5 file for reading and check its ``format`` (if given) and ``version`` (one of ``versions``;
    ``None``: any).

    ``h5_options`` go to ``h5py.File`` (e.g. ``rdcc_nbytes``, the chunk cache size [bytes]). The compression
    plugins are registered first (``register_filters``), so chunks compressed with blosc read like gzip ones.

    Raises ``DataError`` for a missing file, a directory, a file that is not HDF5 or is truncated, or wrong
    attributes.
    """
    path = Path(path)
    if path.is_dir():
        hint = f" (did you mean {path / 'episodes.h5'}?)" if (path / "episodes.h5").is_file() else ""
        raise DataError(path, f"is a directory, not an HDF5 file{hint}")
    if not path.is_file():
        raise DataError(path, "no such file")
    register_filters()
    try:
        f = h5py.File(path, "r", **h5_options)
    except OSError as exc:
        problem = "truncated HDF5 file" if "truncated" in str(exc) else "not a readable HDF5 file"
        raise DataError(path, f"{problem} ({exc})") from exc
    try:
        found = attr_str(f, "format", path)
        if fmt is not None and found != fmt:
            raise DataError(path, f"format is {found!r}, expected {fmt!r}")
        version = f.attrs.get("version")
        if versions is not None and (not isinstance(version, (int, np.integer)) or int(version) not in versions):
            shown = version.item() if isinstance(version, np.generic) else version
            readable = " and ".join(str(v) for v in versions)
            raise DataError(path, f"unsupported {found} version {shown!r} (this reader reads {readable})")
    except BaseException:
        f.close()
        raise
    return f


def attr_str(f: h5py.File | h5py.Group, name: str, path: str | os.PathLike) -> str:
    """A string attribute, or ``DataError`` if it is missing or not a string."""
    value = f.attrs.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise DataError(path, f"missing or non-string attribute {name!r}")
    return value


def attr_json(f: h5py.File | h5py.Group, name: str, path: str | os.PathLike):
    """A JSON attribute parsed, or ``DataError``."""
    text = attr_str(f, name, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"attribute {name!r} is not valid JSON ({exc})") from exc


def read_common_attrs(f: h5py.File, path: str | os.PathLike) -> dict:
    """``dt``, ``created``, ``source`` and the checked ``road`` of an open file."""
    dt = f.attrs.get("dt")
    if not isinstance(dt, (float, np.floating)) or not np.isfinite(dt) or dt <= 0:
        raise DataError(path, f"bad attribute 'dt': {dt!r}")
    return {
        "dt": float(dt),
        "created": attr_str(f, "created", path),
        "source": attr_str(f, "source", path),
        "road": check_road(attr_json(f, "road", path), path),
    }


def require_dataset(
    f: h5py.File, name: str, dtype, path: str | os.PathLike, ndim: int = 1, tail: tuple | None = None
) -> h5py.Dataset:
    """The dataset ``name`` with exactly ``dtype``, ``ndim`` dimensions and trailing shape ``tail``."""
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise DataError(path, f"missing dataset /{name.lstrip('/')}")
    if obj.dtype != np.dtype(dtype):
        raise DataError(path, f"dataset /{name.lstrip('/')} has dtype {obj.dtype}, expected {np.dtype(dtype)}")
    if obj.ndim != ndim or (tail is not None and tuple(obj.shape[1:]) != tuple(tail)):
        want = f"[N, {', '.join(map(str, tail))}]" if tail else f"{ndim}-D"
        raise DataError(path, f"dataset /{name.lstrip('/')} has shape {obj.shape}, expected {want}")
    return obj


def read(ds: h5py.Dataset, sel, path: str | os.PathLike) -> np.ndarray:
    """``ds[sel]``, with HDF5 read errors (a corrupt chunk) turned into ``DataError``."""
    try:
        return ds[sel]
    except (OSError, RuntimeError) as exc:
        raise read_error(ds, path, exc) from exc


class RowReader:
    """Reads ``rows`` consecutive rows of a dataset, from any start, into one buffer reused by every call:
    one HDF5 call per read, without the selection objects h5py builds for ``ds[a:b]``.

    ``read(start)`` returns the buffer [rows, ...] (overwritten by the next read), ``read(start, out)`` fills
    and returns ``out`` (C-contiguous, the buffer's shape and dtype) instead; ``DataError`` on a read error or if
    the rows run past the end.
    """

    def __init__(self, ds: h5py.Dataset, rows: int, path: str | os.PathLike) -> None:
        self.ds, self.path = ds, path
        self.buffer = np.empty((rows, *ds.shape[1:]), ds.dtype)
        self._memory = h5py.h5s.create_simple(self.buffer.shape)
        self._file_space = ds.id.get_space()
        self._zeros = (0,) * (ds.ndim - 1)
        self._last_start = ds.shape[0] - rows

    def read(self, start: int, out: np.ndarray | None = None) -> np.ndarray:
        out = self.buffer if out is None else out
        if out.shape != self.buffer.shape or out.dtype != self.buffer.dtype or not out.flags.c_contiguous:
            raise ValueError(f"RowReader: out must be C-contiguous {self.buffer.dtype} {self.buffer.shape}")
        if not 0 <= start <= self._last_start:
            raise DataError(self.path, f"rows {start}..{start + len(self.buffer) - 1} of {self.ds.name} do not exist")
        self._file_space.select_hyperslab((start, *self._zeros), self.buffer.shape)
        try:
            self.ds.id.read(self._memory, self._file_space, out)
        except (OSError, RuntimeError) as exc:
            raise read_error(self.ds, self.path, exc) from exc
        return out


def read_error(ds: h5py.Dataset, path: str | os.PathLike, exc: Exception) -> DataError:
    """The ``DataError`` for an HDF5 read error of ``ds`` (a corrupt chunk, a missing plugin)."""
    hint = f"; {PLUGIN_HINT}" if "filter" in str(exc) and not register_filters() else ""
    return DataError(path, f"cannot read {ds.name} ({exc}){hint}")


def check_finite(values: np.ndarray, what: str, path: str | os.PathLike) -> None:
    """``DataError`` naming ``what`` and the first bad index if ``values`` holds NaN or infinity."""
    bad = ~np.isfinite(values)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), values.shape)
        raise DataError(path, f"{what} holds NaN or infinity (first at index {tuple(int(i) for i in index)})")


def read_format(path: str | os.PathLike) -> str:
    """The ``format`` attribute of an HDF5 file, or ``DataError`` (each format's reader checks the version)."""
    with open_checked(path, None, versions=None) as f:
        return attr_str(f, "format", path)
