import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio

from worldmodel.cli import main


def test_sim_writes_video_and_summary(tmp_path: Path, capsys):
    video = tmp_path / "sim.mp4"
    rc = main(
        [
            "sim",
            "--scenario",
            "tiny",
            "--seconds",
            "6",
            "--warmup",
            "5",
            "--video",
            str(video),
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["vehicles_mean"] > 0 and "mean_speed_mps" in summary and "backlog_final" in summary
    assert json.loads(video.with_suffix(".json").read_text())["scenario"] == "tiny"
    frames = imageio.mimread(video)
    assert len(frames) == 60 and frames[0].ndim == 3


def test_sim_gif(tmp_path: Path):
    assert main(["sim", "--scenario", "tiny", "--seconds", "1", "--warmup", "1", "--video", str(tmp_path / "s.gif"),
                 "--no-progress"]) == 0  # fmt: skip
    assert (tmp_path / "s.gif").stat().st_size > 1000


def test_bad_scenario_is_one_line_and_exit_code_1(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[road]\nlanes = -2\n")
    proc = subprocess.run([sys.executable, "-m", "worldmodel.cli", "sim", "--scenario", str(bad)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "road.lanes" in lines[0] and str(bad) in lines[0]


def test_help_for_every_command():
    for args in (["--help"], ["sim", "--help"], ["bench", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "worldmodel.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage" in proc.stdout


def test_bench_sim_reports_the_contract_fields():
    from worldmodel.bench.pipeline import bench_sim

    result = bench_sim(quick=True, scenario="tiny")
    for key in (
        "vehicle_steps_per_s",
        "vehicle_steps_per_s_numpy",
        "kernel_speedup_vs_numpy",
        "vehicles",
        "views_per_s",
        "reference_views_per_s",
        "machine",
    ):
        assert key in result
    assert result["vehicle_steps_per_s"] > 0 and result["views_per_s"] > 0
