"""Bad inputs of the data pipeline: each gets one line naming the file or the flag, and no output is left.

Mislabelled frames (dt), empty inputs and outputs, impossible numbers, NGSIM text in metres."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from data_helpers import (
    SMALL_VIEW,
    assert_one_line_error,
    make_road,
    synthetic_track,
    write_episodes,
    write_trajectories,
)

from worldmodel import cli
from worldmodel.data.episodes import EpisodeReader, EpisodeWriter
from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.hdf5 import DataError
from worldmodel.data.inspect import inspect_file
from worldmodel.data.ngsim import import_ngsim
from worldmodel.data.recipes import load_recipe
from worldmodel.data.record import RecordConfig, record
from worldmodel.data.trajectories import TrajectoryReader, TrajectoryWriter
from worldmodel.traffic.scenario import ScenarioError, load_scenario
from worldmodel.viz.sim_run import SimRunConfig

TINY_ROAD = """
[road]
lanes = 2
length_m = 120.0
section_m = [20.0, 100.0]
evaluated_m = [30.0, 90.0]
"""


def ngsim_text(path, rows: np.ndarray):
    """Rows [n, 18] as NGSIM text."""
    path.write_text("\n".join(" ".join(f"{v:.4f}" for v in row) for row in rows) + "\n")
    return path


def ngsim_car(vehicle: int, n: int = 30, length: float = 15.0, width: float = 6.0, speed: float = 30.0) -> np.ndarray:
    """[n, 18] rows of a car at constant ``speed`` in lane 1 (sizes and speed in the file's units)."""
    rows = np.zeros((n, 18))
    rows[:, 0], rows[:, 1], rows[:, 2] = vehicle, np.arange(n), n
    rows[:, 4], rows[:, 5] = 6.0, 50.0 + speed * 0.1 * np.arange(n)
    rows[:, 8], rows[:, 9], rows[:, 10], rows[:, 11], rows[:, 13] = length, width, 2, speed, 1
    return rows


def files_in(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ------------------------------------------------------------------------------------ frames mislabelled
def test_scenario_with_another_dt_is_refused_at_load(tmp_path):
    path = tmp_path / "slow.toml"
    path.write_text('name = "slow"\ndt_s = 0.5\n' + TINY_ROAD)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert_one_line_error(info, path, "dt_s", "0.1")


def test_frames_further_apart_than_dt_are_refused(tmp_path):
    """Frames 0.5 s apart in a file whose dt says 0.1 s: the cars move 5x speed x dt per frame."""
    path = tmp_path / "t.h5"
    rng = np.random.default_rng(0)
    with TrajectoryWriter(path, make_road(), "test", ["car"]) as w:
        for v in range(1, 6):
            track = synthetic_track(v, rng, first=v, count=30)
            track["x"] = 1.0 + track["vx"] * 0.5 * np.arange(30)  # recorded every 0.5 s
            w.add_vehicle(v, 4.5, 1.8, 0, track)
    for read in (TrajectoryReader, inspect_file, lambda p: extract([p], tmp_path / "e.h5")):
        with pytest.raises(DataError) as info:
            read(path)
        assert_one_line_error(info, path, "not dt = 0.1 s apart", "x speed x dt", "as if frames were 0.5")
    assert not (tmp_path / "e.h5").exists()


def test_a_dt_other_than_a_tenth_is_refused(tmp_path, trajectories_file):
    path, _ = trajectories_file
    with h5py.File(path, "r+") as f:
        f.attrs["dt"] = 0.5
    with pytest.raises(DataError) as info:
        inspect_file(path)
    assert_one_line_error(info, path, "dt is 0.5 s", "0.1 s")
    before = files_in(tmp_path)
    with pytest.raises(DataError) as info:
        TrajectoryWriter(tmp_path / "new.h5", make_road(), "test", ["car"], dt=0.5)
    assert_one_line_error(info, tmp_path / "new.h5", "dt is 0.5 s")
    episodes = tmp_path / "e.h5"
    write_episodes(episodes)
    with h5py.File(episodes, "r+") as f:
        f.attrs["dt"] = 0.2
    with pytest.raises(DataError) as info:
        EpisodeReader(episodes)
    assert_one_line_error(info, episodes, "dt is 0.2 s")
    assert files_in(tmp_path) == before | {"e.h5"}


def test_a_recording_stores_its_true_dt(tmp_path):
    path = tmp_path / "t.h5"
    record(RecordConfig(scenario="tiny", minutes=0.05, warmup_s=5.0, progress=False), path)
    with TrajectoryReader(path) as r:  # opening checks the frame spacing against dt
        assert r.dt == pytest.approx(0.1) and r.num_vehicles > 0


# ------------------------------------------------------------------------------------ empty
def _emptied(path):
    """A trajectories file with all its rows and vehicles removed (attributes kept)."""
    write_trajectories(path)
    with h5py.File(path, "r+") as f:
        for group in ("tracks", "vehicles"):
            for name in list(f[group]):
                dtype = f[group][name].dtype
                del f[group][name]
                f[group].create_dataset(name, shape=(0,), dtype=dtype)
    return path


def test_empty_files_are_invalid(tmp_path):
    path = _emptied(tmp_path / "empty.h5")
    for read in (TrajectoryReader, inspect_file):
        with pytest.raises(DataError) as info:
            read(path)
        assert_one_line_error(info, path, "no vehicles", "empty")
    out = tmp_path / "e.h5"
    with pytest.raises(DataError) as info:
        extract([path], out, ExtractConfig(progress=False))
    assert_one_line_error(info, path, "no vehicles")
    assert not out.exists()

    before = files_in(tmp_path)
    with pytest.raises(DataError) as info, TrajectoryWriter(tmp_path / "t.h5", make_road(), "test", ["car"]):
        pass
    assert_one_line_error(info, tmp_path / "t.h5", "no vehicle to write")
    with pytest.raises(DataError) as info, EpisodeWriter(tmp_path / "ep.h5", make_road(), "test", SMALL_VIEW, {}):
        pass
    assert_one_line_error(info, tmp_path / "ep.h5", "no episode to write")
    assert files_in(tmp_path) == before


def test_empty_episodes_file_is_invalid(tmp_path):
    path = tmp_path / "e.h5"
    write_episodes(path)
    with h5py.File(path, "r+") as f:
        for name in ("images", "states", "actions", "costs", "ego"):
            shape, dtype = f[name].shape, f[name].dtype
            del f[name]
            f.create_dataset(name, shape=(0, *shape[1:]), dtype=dtype)
        for name in list(f["episodes"]):
            dtype = f["episodes"][name].dtype
            del f["episodes"][name]
            f["episodes"].create_dataset(name, shape=(0,), dtype=dtype)
    with pytest.raises(DataError) as info:
        inspect_file(path)
    assert_one_line_error(info, path, "no episodes")


def test_recording_nothing_is_an_error(tmp_path):
    scenario = tmp_path / "quiet.toml"
    scenario.write_text('name = "quiet"\n' + TINY_ROAD + "[demand]\nmainline_veh_per_h_per_lane = 0.0\n")
    before = files_in(tmp_path)
    out = tmp_path / "t.h5"
    with pytest.raises(DataError) as info:
        record(RecordConfig(scenario=str(scenario), minutes=0.1, warmup_s=0.0, progress=False), out)
    assert_one_line_error(info, out, "no vehicle entered the recorded section")
    assert files_in(tmp_path) == before


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (ngsim_car(1, n=1), ["no vehicle left", "too_short 1"]),  # one row
        (np.concatenate([ngsim_car(1, width=20.0), ngsim_car(2, speed=900.0)]), ["no vehicle left", "size 1"]),
    ],
)
def test_ngsim_without_a_usable_vehicle_is_an_error(tmp_path, rows, words):
    src = ngsim_text(tmp_path / "in.txt", rows)
    with pytest.raises(DataError) as info:
        import_ngsim(src, tmp_path / "t.h5")
    assert_one_line_error(info, src, *words)
    assert files_in(tmp_path) == {"in.txt"}


def test_ngsim_in_metres_is_refused(tmp_path):
    rows = np.concatenate([ngsim_car(v, length=4.5, width=1.8, speed=9.0) for v in (1, 2, 3)])
    rows[:, 4] = 1.85  # lane centre [m]
    src = ngsim_text(tmp_path / "metres.txt", rows)
    with pytest.raises(DataError) as info:
        import_ngsim(src, tmp_path / "t.h5")
    assert_one_line_error(info, src, "1.37 m long", "0.55 m wide", "in metres", "feet")
    assert files_in(tmp_path) == {"metres.txt"}


# ------------------------------------------------------------------------------------ impossible numbers
@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: RecordConfig(minutes=0), ["minutes (--minutes)", "got 0"]),
        (lambda: RecordConfig(minutes=-1), ["minutes (--minutes)", "got -1"]),
        (lambda: RecordConfig(warmup_s=float("nan")), ["warmup_s (--warmup)"]),
        (lambda: SimRunConfig(seconds=-5), ["seconds (--seconds)", "got -5"]),
        (lambda: SimRunConfig(video_every=0), ["video_every (--video-every)"]),
        (lambda: ExtractConfig(workers=0), ["workers (--workers)", ">= 1", "got 0"]),
        (lambda: ExtractConfig(shard_frames=0), ["shard_frames"]),
    ],
)
def test_configs_refuse_impossible_numbers(make, words):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_ngsim_refuses_negative_smoothing(tmp_path):
    src = ngsim_text(tmp_path / "in.txt", ngsim_car(1))
    with pytest.raises(ValueError) as info:
        import_ngsim(src, tmp_path / "t.h5", smoothing_s=-1.0)
    assert "smoothing_s (--smoothing) must be >= 0" in str(info.value)
    assert files_in(tmp_path) == {"in.txt"}


@pytest.mark.parametrize(
    "argv",
    [
        ["sim", "--seconds", "-5"],
        ["data", "record", "--minutes", "0", "--out", "{tmp}/t.h5"],
        ["data", "import-ngsim", "{tmp}/in.txt", "--out", "{tmp}/t.h5", "--smoothing", "-1"],
        ["data", "extract", "{tmp}/in.h5", "--out", "{tmp}/e.h5", "--workers", "0"],
        ["data", "inspect", "{tmp}/empty.h5"],
    ],
)
def test_cli_prints_one_line_and_exits_1(tmp_path, capsys, argv):
    ngsim_text(tmp_path / "in.txt", ngsim_car(1))
    write_trajectories(tmp_path / "in.h5")
    _emptied(tmp_path / "empty.h5")
    before = files_in(tmp_path)
    code = cli.main([a.format(tmp=tmp_path) for a in argv] + ["--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "error:" in err, err
    assert files_in(tmp_path) == before


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("recordings = []\n", ["at least one recording"]),
        ("warmup_s = -1.0\n", ["warmup_s", ">= 0"]),
        ("[[recordings]]\nminutes = 0.0\n", ["recordings[0].minutes", "> 0"]),
        ("[extract]\nworkers = 0\n", ["extract.workers", ">= 1"]),
    ],
)
def test_recipes_refuse_empty_or_impossible_builds(tmp_path, text, words):
    path = tmp_path / "r.toml"
    path.write_text('name = "r"\nscenario = "tiny"\n' + text)
    with pytest.raises(DataError) as info:
        load_recipe(path)
    assert_one_line_error(info, path, *words)
