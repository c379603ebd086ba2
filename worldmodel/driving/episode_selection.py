"""The episodes of a closed-loop evaluation (step 1 of ``worldmodel.driving.closed_loop``): one per car of a
split that can be evaluated, found in a dataset directory (``episodes.h5`` and the trajectories files it was
extracted from).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodel.data.episodes import SPLITS, EpisodeReader
from worldmodel.data.extract import ExtractConfig
from worldmodel.data.hdf5 import DataError
from worldmodel.data.replay import ReplaySimulation
from worldmodel.data.trajectories import TrajectoryReader

#: Why a car of the split gets no episode.
EXCLUSIONS = ("too_short", "past_zone_at_handover", "recording_ends_before_zone_end")


@dataclass(frozen=True)
class Episode:
    """One car to drive."""

    vehicle: int
    """Vehicle id in episodes.h5."""
    file: int
    """Index of its trajectories file."""
    recorded_id: int
    """Its id in that file."""


def dataset_files(data: str | os.PathLike) -> tuple[Path, list[Path]]:
    """``(episodes.h5, [trajectories files in extraction order])`` of a dataset directory (or of its
    episodes.h5). Raises ``DataError`` (one line) when something is missing."""
    data = Path(data)
    episodes = data if data.suffix == ".h5" else data / "episodes.h5"
    folder = episodes.parent
    if not folder.is_dir():
        raise DataError(folder, "no such dataset directory")
    if not episodes.is_file():
        raise DataError(episodes, "no such file (a dataset directory holds episodes.h5 and trajectories-*.h5)")
    with EpisodeReader(episodes) as reader:
        source = reader.source
    listed = source[len("extract of ") :].split(", ") if source.startswith("extract of ") else []
    if listed and all((folder / name).is_file() for name in listed):
        return episodes, [folder / name for name in listed]

    def natural(path: Path) -> list:
        return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]

    found = sorted(folder.glob("trajectories*.h5"), key=natural)
    if not found:
        raise DataError(folder, "no trajectories*.h5 files (the recordings the episodes were extracted from)")
    return episodes, found


def select_episodes(
    data: str | os.PathLike, split: str = "test", context_frames: int = 20, episodes: int | None = None, seed: int = 0,
    vehicles: tuple[int, ...] | None = None,
) -> tuple[list[Path], list[Episode], dict]:  # fmt: skip
    """The episodes of a split: ``(trajectories files, episodes sorted by vehicle, selection summary)``.

    The summary: ``split_cars``, ``excluded`` (count per reason in ``EXCLUSIONS``), ``eligible``,
    ``evaluated``. With ``vehicles``, only those episode vehicle ids (each must be an eligible car of the split:
    ``ValueError`` otherwise); then with ``episodes`` = N, N of the cars drawn with ``seed`` (then sorted).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    episodes_path, files = dataset_files(data)
    with EpisodeReader(episodes_path) as reader:
        table = reader.episodes
    split_vehicles = np.unique(table["vehicle"][table["split"] == SPLITS.index(split)].astype(np.int64))
    stride = ExtractConfig().id_stride
    file_of = split_vehicles // stride if len(files) > 1 else np.zeros_like(split_vehicles)
    recorded = split_vehicles % stride if len(files) > 1 else split_vehicles
    if np.any((file_of < 0) | (file_of >= len(files))):
        raise DataError(episodes_path, f"episode vehicle ids point to {int(file_of.max()) + 1} recordings, the "
                        f"directory has {len(files)}")  # fmt: skip
    excluded = dict.fromkeys(EXCLUSIONS, 0)
    chosen: list[Episode] = []
    for k, path in enumerate(files):
        mine = np.nonzero(file_of == k)[0]
        if not len(mine):
            continue
        with TrajectoryReader(path) as traj:
            sim = ReplaySimulation(traj, context_frames=context_frames)
            x = traj.read_rows(0, traj.num_rows, ("x",))["x"]
        index = {int(v): i for i, v in enumerate(sim.vehicle_table["id"])}
        eligible = set(sim.eligible_vehicles().tolist())
        zone_end = sim.road.config.evaluated_m[1]
        for j in mine:
            rid = int(recorded[j])
            i = index.get(rid)
            if i is None:
                raise DataError(path, f"vehicle {rid} (episode vehicle {split_vehicles[j]}) is not in this recording")
            if rid not in eligible:
                too_short = sim.vehicle_table["count"][i] <= context_frames
                excluded["too_short" if too_short else "past_zone_at_handover"] += 1
            elif x[sim.vehicle_table["start"][i] + sim.vehicle_table["count"][i] - 1] < zone_end:
                excluded["recording_ends_before_zone_end"] += 1
            else:
                chosen.append(Episode(int(split_vehicles[j]), k, rid))
    eligible_count = len(chosen)
    if vehicles is not None:
        wanted = {int(v) for v in vehicles}
        missing = sorted(wanted - {e.vehicle for e in chosen})
        if missing:
            raise ValueError(f"vehicles {missing[:10]} are not eligible cars of the {split} split of {data} "
                             f"({len(missing)} of {len(wanted)})")  # fmt: skip
        chosen = [e for e in chosen if e.vehicle in wanted]
    if episodes is not None and episodes < len(chosen):
        if episodes < 0:
            raise ValueError(f"episodes must be >= 0, got {episodes}")
        pick = np.random.default_rng(seed).choice(len(chosen), size=episodes, replace=False)
        chosen = [chosen[i] for i in sorted(pick)]
    summary = {"split_cars": len(split_vehicles), "excluded": excluded, "eligible": eligible_count,
               "evaluated": len(chosen)}  # fmt: skip
    return files, chosen, summary


def locate_vehicle(files: list[Path], vehicle: int) -> Episode:
    """The recording of an episode vehicle id (``data.extract``'s convention: with several files, file
    ``k`` holds ids ``k * id_stride + recorded id``). Raises ``DataError`` when no file can hold it."""
    stride = ExtractConfig().id_stride
    k, rid = divmod(int(vehicle), stride) if len(files) > 1 else (0, int(vehicle))
    if not 0 <= k < len(files):
        raise DataError(files[0].parent, f"no vehicle {vehicle}: ids of its {len(files)} recordings are below "
                        f"{len(files) * stride}")  # fmt: skip
    return Episode(int(vehicle), k, rid)
