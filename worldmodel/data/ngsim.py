"""Import an NGSIM trajectory text file (I-80, US-101 format) into trajectories.h5.

Input: 18 whitespace-separated numeric columns per line (``NGSIM_COLUMNS``), feet and ft/s, frames of
0.1 s; ``Local_X`` is the lateral position of the vehicle's front centre from the left edge, ``Local_Y`` the
longitudinal position of its front; ``Lane_ID`` 1 is the leftmost lane, ids above the mainline's are
auxiliary or ramp lanes. An optional header line naming ``Vehicle_ID`` is skipped. The file is read in
blocks of lines parsed by numpy; rows are kept as columns of numbers only, then sorted by (vehicle, frame).

Conversion: metres (x 0.3048); ``x`` = front - length / 2 (the centre); ``y`` = ``Local_X``; ``lane`` =
``Lane_ID`` - 1 (-1 for ``Lane_ID`` <= 0); positions smoothed per vehicle with a centred moving average of
``smoothing_s`` (1.5 s = 15 frames, as PPUU) whose window shrinks symmetrically at the track ends (so the
end points stay put and straight motion stays straight); ``vx``, ``vy`` = ``np.gradient`` of the smoothed
positions (central differences, one-sided at the ends); ``heading`` = atan2(vy, vx), held from the last
moment the car moved faster than 0.2 m/s (stopped cars keep their heading). Vehicle size: the median of
its rows. Kind: ``v_Class`` 1/2/3 = motorcycle/car/truck.

Bad input policy (everything repaired is counted in the returned summary):

=====================================  ============================================================
problem                                what happens
=====================================  ============================================================
wrong number of fields, non-numeric    ``DataError`` with the line number (the file is not NGSIM, or
field, non-integer id/frame/class      is corrupt: nothing sensible to repair)
NaN or infinity in a used field        row dropped (``dropped_rows["nan"]``); its frame becomes a gap
exact duplicate row                    dropped (``repairs["duplicate_rows"]``)
same vehicle and frame, other values   ``DataError`` with both line numbers (ambiguous data)
v_Vel < 0 or > 60 m/s                  row dropped (``dropped_rows["speed"]``); becomes a gap
frame gap <= 1 s (10 frames)           filled by linear interpolation (``repairs["gap_frames_filled"]``)
frame gap > 1 s                        ``DataError`` with the line after the gap (an id reused by
                                       another car, or a broken track: splicing would invent motion)
length <= 0 or > 30 m, width <= 0 or   vehicle dropped (``dropped_vehicles["size"]``)
> 4 m (median of its rows)
smoothed speed > 60 m/s                vehicle dropped (``dropped_vehicles["speed"]``)
fewer than 2 frames left               vehicle dropped (``dropped_vehicles["too_short"]``)
v_Class not 1, 2 or 3                  ``DataError`` with the line number
lane beyond the given road's lanes     lane set to -1 (``repairs["lane_outside_road"]``)
no vehicle left (all dropped, or one   ``DataError`` with the drop counts; no output file
row)
median vehicle shorter than 2.5 m or   ``DataError``: the file looks like it is in metres, not feet
narrower than 1 m after conversion     (cars would be 1.4 x 0.55 m); nothing sensible to repair
=====================================  ============================================================

Road inference (when no ``road`` is given): a lane id is mainline if it and every lower id carry traffic
over at least 60 % of the longest lane's longitudinal extent; higher ids are on-ramps (``start_m``,
``end_m`` = extent of their traffic). Lane width = median spacing of the mainline lanes' median ``y`` (3.7 m
with one lane); length = the farthest front position; section = the extent of the data; evaluated zone =
the section less a run-in of one look-ahead (``LOOK_AHEAD_M``, 1 s at 130 km/h: what the ego view sees
ahead) and a run-out of 1.75 look-aheads, as PPUU kept a car controlled while its back was past the
look-ahead and its front short of the end by 1.75 look-aheads (on a section shorter than twice these
margins, they shrink so that the zone is half the section). So a car that drives through the section
reaches the end of the zone while recorded, and a driven car sees traffic ahead up to the zone's end.
Speed limit = ``speed_limit_mps`` (default 65 mph).
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import numpy as np

from worldmodel.data import hdf5
from worldmodel.data.hdf5 import DataError
from worldmodel.data.trajectories import TrajectoryWriter

log = logging.getLogger(__name__)

FT_M = 0.3048  # metres per foot
NGSIM_COLUMNS = (
    "Vehicle_ID",
    "Frame_ID",
    "Total_Frames",
    "Global_Time",
    "Local_X",
    "Local_Y",
    "Global_X",
    "Global_Y",
    "v_Length",
    "v_Width",
    "v_Class",
    "v_Vel",
    "v_Acc",
    "Lane_ID",
    "Preceding",
    "Following",
    "Space_Headway",
    "Time_Headway",
)
KINDS = ["motorcycle", "car", "truck"]
MAX_LENGTH_M, MAX_WIDTH_M, MAX_SPEED_MPS = 30.0, 4.0, 60.0
MAX_GAP_FRAMES = 10  # 1 s at 0.1 s per frame
LOOK_AHEAD_M = 130 / 3.6  # PPUU's look-ahead [m]: 1 s at 130 km/h, half the ego view's length
RUN_IN_LOOK_AHEADS, RUN_OUT_LOOK_AHEADS = 1.0, 1.75  # margins of an inferred evaluated zone [look-aheads]
MIN_MEDIAN_LENGTH_M, MIN_MEDIAN_WIDTH_M = 2.5, 1.0  # below: the file is in metres (real cars: 4.5 x 1.8 m)
STOPPED_MPS = 0.2  # below this speed the heading is held
_USED = {
    name: NGSIM_COLUMNS.index(name)
    for name in (
        "Vehicle_ID",
        "Frame_ID",
        "Local_X",
        "Local_Y",
        "v_Length",
        "v_Width",
        "v_Class",
        "v_Vel",
        "Lane_ID",
    )
}


def smooth_centred(values: np.ndarray, half_window: int) -> np.ndarray:
    """Centred moving average of [T] values over 2 * half_window + 1 samples; the window shrinks
    symmetrically near the ends (the first and last samples are kept)."""
    n = len(values)
    t = np.arange(n)
    half = np.minimum(np.minimum(t, n - 1 - t), half_window)
    csum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (csum[t + half + 1] - csum[t - half]) / (2 * half + 1)


def _locate_bad_line(lines: list[str], line_numbers: np.ndarray, path: Path) -> DataError:
    """The first unparsable line of a block, as a ``DataError`` (only runs on a block that failed)."""
    for line, number in zip(lines, line_numbers, strict=True):
        fields = line.split()
        if len(fields) != len(NGSIM_COLUMNS):
            return DataError(path, f"line {number}: expected {len(NGSIM_COLUMNS)} fields, found {len(fields)}")
        for name, field in zip(NGSIM_COLUMNS, fields, strict=True):
            try:
                float(field)
            except ValueError:
                return DataError(path, f"line {number}: field {name} is not a number: {field[:20]!r}")
    return DataError(path, f"lines {line_numbers[0]}..{line_numbers[-1]}: cannot parse")


def _parse_block(lines: list[str], first_number: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Lines -> ([n, 18] float64 values, [n] int64 1-based line numbers), blank lines skipped."""
    blank = np.fromiter((not line.strip() for line in lines), bool, len(lines))
    numbers = first_number + np.flatnonzero(~blank)
    lines = [line for line in lines if line.strip()] if blank.any() else lines
    if not lines:
        return np.zeros((0, len(NGSIM_COLUMNS))), numbers
    try:
        values = np.loadtxt(lines, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        raise _locate_bad_line(lines, numbers, path) from None
    if values.shape[1] != len(NGSIM_COLUMNS):
        raise _locate_bad_line(lines, numbers, path)
    return values, numbers


def _row_hash(values: np.ndarray) -> np.ndarray:
    """[n, 18] float64 -> [n] uint64 FNV-style hash of the row's bits (to tell exact duplicates)."""
    bits = np.ascontiguousarray(values).view(np.uint64)
    h = np.full(len(values), 0xCBF29CE484222325, np.uint64)
    for k in range(bits.shape[1]):
        h = (h ^ bits[:, k]) * np.uint64(0x100000001B3)
    return h


def _read_rows(path: Path, block_lines: int, summary: dict) -> dict[str, np.ndarray]:
    """Stream the file; return the used columns (SI units where converted), line numbers and row hashes."""
    parts: dict[str, list[np.ndarray]] = {}
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(path, f"cannot open ({exc.strerror})") from exc
    with handle:
        number = 1
        while True:
            lines = list(itertools.islice(handle, block_lines))
            if not lines:
                break
            if number == 1 and "vehicle_id" in lines[0].lower():
                summary["header_lines"] = 1
                lines, number = lines[1:], 2
            values, numbers = _parse_block(lines, number, path)
            number += len(lines)
            summary["rows_read"] += len(values)
            used = values[:, list(_USED.values())]
            finite = np.isfinite(used).all(axis=1)
            summary["dropped_rows"]["nan"] += int((~finite).sum())
            values, numbers, used = values[finite], numbers[finite], used[finite]
            cols = dict(zip(_USED, used.T, strict=True))
            for name in ("Vehicle_ID", "Frame_ID", "v_Class", "Lane_ID"):
                bad = (cols[name] != np.round(cols[name])) | (np.abs(cols[name]) >= 2**31)
                if bad.any():
                    line = numbers[np.argmax(bad)]
                    raise DataError(path, f"line {line}: {name} is not an integer: {cols[name][np.argmax(bad)]}")
            bad_class = ~np.isin(cols["v_Class"], (1, 2, 3))
            if bad_class.any():
                raise DataError(path, f"line {numbers[np.argmax(bad_class)]}: v_Class must be 1, 2 or 3")
            block = {
                "vehicle": cols["Vehicle_ID"].astype(np.int64),
                "frame": cols["Frame_ID"].astype(np.int64),
                "y": cols["Local_X"] * FT_M,
                "front": cols["Local_Y"] * FT_M,
                "length": cols["v_Length"] * FT_M,
                "width": cols["v_Width"] * FT_M,
                "kind": (cols["v_Class"] - 1).astype(np.int8),
                "speed": cols["v_Vel"] * FT_M,
                "lane_id": cols["Lane_ID"].astype(np.int32),
                "line": numbers,
                "hash": _row_hash(values),
            }
            for name, array in block.items():
                parts.setdefault(name, []).append(array)
    if not parts or not sum(len(p) for p in parts["vehicle"]):
        raise DataError(path, "no data rows")
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def _clean_rows(rows: dict[str, np.ndarray], path: Path, summary: dict) -> dict[str, np.ndarray]:
    """Sort by (vehicle, frame); drop exact duplicates and impossible speeds; refuse conflicting rows."""
    order = np.lexsort((rows["line"], rows["frame"], rows["vehicle"]))
    rows = {name: values[order] for name, values in rows.items()}
    repeat = np.r_[False, (np.diff(rows["vehicle"]) == 0) & (np.diff(rows["frame"]) == 0)]
    conflict = repeat & np.r_[False, rows["hash"][1:] != rows["hash"][:-1]]
    if conflict.any():
        k = int(np.argmax(conflict))
        raise DataError(
            path,
            f"line {rows['line'][k]}: vehicle {rows['vehicle'][k]} frame {rows['frame'][k]} "
            f"repeats line {rows['line'][k - 1]} with different values",
        )
    summary["repairs"]["duplicate_rows"] = int(repeat.sum())
    bad_speed = (rows["speed"] < 0) | (rows["speed"] > MAX_SPEED_MPS)
    summary["dropped_rows"]["speed"] = int(bad_speed.sum())
    keep = ~repeat & ~bad_speed
    return {name: values[keep] for name, values in rows.items()}


def _check_feet(rows: dict[str, np.ndarray], path: Path) -> None:
    """``DataError`` if the converted vehicle sizes say the file was in metres (cars 1.4 m long)."""
    length, width = float(np.median(rows["length"])), float(np.median(rows["width"]))
    if length < MIN_MEDIAN_LENGTH_M or width < MIN_MEDIAN_WIDTH_M:
        raise DataError(
            path,
            f"vehicles would be {length:.2f} m long and {width:.2f} m wide (medians, read as feet; real cars "
            f"are ~4.5 x 1.8 m): the file looks like it is in metres, but NGSIM text must be in feet",
        )


def infer_road(rows: dict[str, np.ndarray], speed_limit_mps: float) -> dict:
    """A road description from cleaned rows (``lane_id``, ``front``, ``length``, ``y``); see module doc."""
    x = rows["front"] - rows["length"] / 2
    ids = np.unique(rows["lane_id"][rows["lane_id"] >= 1])
    extent = {int(i): (x[rows["lane_id"] == i].min(), x[rows["lane_id"] == i].max()) for i in ids}
    longest = max((hi - lo for lo, hi in extent.values()), default=0.0)
    lanes = 0
    while lanes + 1 in extent and extent[lanes + 1][1] - extent[lanes + 1][0] >= 0.6 * longest:
        lanes += 1
    lanes = max(lanes, 1)
    centres = [np.median(rows["y"][rows["lane_id"] == i]) for i in range(1, lanes + 1) if i in extent]
    lane_width = float(np.median(np.diff(centres))) if len(centres) >= 2 else 3.7
    ramp_ids = [i for i in extent if i > lanes]
    ramps = [
        {
            "name": f"lane{i}",
            "kind": "on",
            "lane": lanes + k,
            "start_m": round(float(extent[i][0]), 2),
            "end_m": round(float(extent[i][1]), 2),
        }
        for k, i in enumerate(ramp_ids)
    ]
    length = float(np.ceil(rows["front"].max() * 10) / 10)
    start = float(max(0.0, np.floor((rows["front"] - rows["length"]).min() * 10) / 10))
    run_in, run_out = RUN_IN_LOOK_AHEADS * LOOK_AHEAD_M, RUN_OUT_LOOK_AHEADS * LOOK_AHEAD_M
    shrink = min(1.0, (length - start) / (2 * (run_in + run_out)))  # short section: the zone is half of it
    if shrink < 1.0:
        log.info("section %.1f..%.1f m is short: evaluated zone margins shrunk x%.2f", start, length, shrink)
    return {
        "lanes": lanes,
        "lane_width_m": round(lane_width, 3),
        "length_m": length,
        "section_m": [start, length],
        "evaluated_m": [round(start + shrink * run_in, 2), round(length - shrink * run_out, 2)],
        "speed_limit_mps": float(speed_limit_mps),
        "ramps": ramps,
    }


def _vehicle_track(rows: dict[str, np.ndarray], lo: int, hi: int, half: int, dt: float, path: Path) -> dict:
    """One vehicle's cleaned rows ``lo:hi`` -> track columns (gaps filled, smoothed); counts in ``filled``."""
    frame = rows["frame"][lo:hi]
    gaps = np.diff(frame) - 1
    if np.any(gaps > MAX_GAP_FRAMES):
        k = int(np.argmax(gaps > MAX_GAP_FRAMES)) + 1
        raise DataError(
            path,
            f"line {rows['line'][lo + k]}: vehicle {rows['vehicle'][lo]} reappears after "
            f"{gaps[k - 1]} missing frames (> {MAX_GAP_FRAMES}; reused id or broken track)",
        )
    full = np.arange(frame[0], frame[-1] + 1)
    length = float(np.median(rows["length"][lo:hi]))
    x = np.interp(full, frame, rows["front"][lo:hi] - length / 2)
    y = np.interp(full, frame, rows["y"][lo:hi])
    previous = np.searchsorted(frame, full, side="right") - 1
    x, y = smooth_centred(x, half), smooth_centred(y, half)
    vx, vy = (np.gradient(x, dt), np.gradient(y, dt)) if len(full) > 1 else (np.zeros(1), np.zeros(1))
    moving = np.hypot(vx, vy) > STOPPED_MPS
    last_moving = np.maximum.accumulate(np.where(moving, np.arange(len(full)), -1))
    first_moving = int(np.argmax(moving)) if moving.any() else -1
    raw_heading = np.arctan2(vy, vx)
    heading = np.where(
        last_moving >= 0,
        raw_heading[np.maximum(last_moving, 0)],
        raw_heading[first_moving] if first_moving >= 0 else 0.0,
    )
    lane_id = rows["lane_id"][lo:hi][previous]
    return {
        "frame": full,
        "x": x,
        "y": y,
        "vx": vx,
        "vy": vy,
        "lane": np.where(lane_id >= 1, lane_id - 1, -1),
        "heading": heading,
        "_filled": len(full) - len(frame),
    }


def import_ngsim(
    txt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    road: dict | None = None,
    smoothing_s: float = 1.5,
    *,
    speed_limit_mps: float = 65 * 0.44704,
    block_lines: int = 200_000,
) -> dict:
    """Convert an NGSIM text file to trajectories.h5 (see the module docstring for units and policies).

    Returns a summary: ``rows_read``, ``rows_written``, ``vehicles``, ``frames`` (span of frame ids
    written), ``duration_s``, ``repairs``, ``dropped_rows``, ``dropped_vehicles`` (counts by kind), ``road``.
    Raises ``DataError`` (one line, naming the file and line) for input it cannot repair.
    """
    path, dt = Path(txt_path), hdf5.DT_S
    if not (np.isfinite(smoothing_s) and smoothing_s >= 0):
        raise ValueError(f"smoothing_s (--smoothing) must be >= 0 s (0: no smoothing), got {smoothing_s}")
    summary = {
        "source": str(path),
        "output": str(out_path),
        "header_lines": 0,
        "rows_read": 0,
        "repairs": {"duplicate_rows": 0, "gap_frames_filled": 0, "lane_outside_road": 0},
        "dropped_rows": {"nan": 0, "speed": 0},
        "dropped_vehicles": {"size": 0, "speed": 0, "too_short": 0},
    }
    rows = _clean_rows(_read_rows(path, block_lines, summary), path, summary)
    _check_feet(rows, path)
    road = hdf5.check_road(road if road is not None else infer_road(rows, speed_limit_mps), path)
    n_lanes = road["lanes"] + len(road["ramps"])
    half = max(int(round(smoothing_s / dt)), 1) // 2
    cuts = np.flatnonzero(np.diff(rows["vehicle"])) + 1
    written, vehicles, frames = 0, 0, [np.iinfo(np.int64).max, np.iinfo(np.int64).min]
    with TrajectoryWriter(out_path, road, source=f"ngsim:{path.name}", kinds=KINDS, dt=dt) as writer:
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(rows["vehicle"])], strict=True):
            vehicle = int(rows["vehicle"][lo])
            length, width = float(np.median(rows["length"][lo:hi])), float(np.median(rows["width"][lo:hi]))
            if not (0 < length <= MAX_LENGTH_M and 0 < width <= MAX_WIDTH_M):
                summary["dropped_vehicles"]["size"] += 1
                continue
            track = _vehicle_track(rows, lo, hi, half, dt, path)
            if len(track["frame"]) < 2:
                summary["dropped_vehicles"]["too_short"] += 1
                continue
            if np.hypot(track["vx"], track["vy"]).max() > MAX_SPEED_MPS:
                summary["dropped_vehicles"]["speed"] += 1
                continue
            outside = track["lane"] >= n_lanes
            summary["repairs"]["lane_outside_road"] += int(outside.sum())
            track["lane"] = np.where(outside, -1, track["lane"])
            summary["repairs"]["gap_frames_filled"] += track.pop("_filled")
            writer.add_vehicle(vehicle, length, width, int(np.median(rows["kind"][lo:hi])), track)
            written += len(track["frame"])
            vehicles += 1
            frames = [min(frames[0], int(track["frame"][0])), max(frames[1], int(track["frame"][-1]))]
        if not vehicles:  # inside the writer's block: no output file is left
            dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped_vehicles"].items() if v) or "none"
            raise DataError(path, f"no vehicle left to import ({summary['rows_read']} rows read; vehicles "
                            f"dropped: {dropped}; a vehicle needs >= 2 frames of plausible size and speed)")  # fmt: skip
    span = frames[1] - frames[0] + 1 if written else 0
    summary.update(rows_written=written, vehicles=vehicles, frames=span, duration_s=round(span * dt, 3), road=road)
    log.info("imported %s: %d vehicles, %d rows", path, summary["vehicles"], written)
    return summary
