"""NGSIM imported without a scenario can be driven: the inferred road has run-in and run-out margins, the
expert reaches the end of the evaluated zone, and an evaluation that selects no car is an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import assert_one_line_error

from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.hdf5 import DataError
from worldmodel.data.ngsim import FT_M, LOOK_AHEAD_M, import_ngsim
from worldmodel.driving.closed_loop import EvalPolicyConfig, evaluate_driving

LANE_FT = 12.0


def synthetic_ngsim(path: Path, lanes: int = 3, length_ft: float = 1000.0, seconds: float = 45.0,
                    headway_s: float = 3.0, seed: int = 0, noise_ft: float = 0.3) -> int:  # fmt: skip
    """Write NGSIM text (feet) of platoons: in each lane a car enters at Local_Y = 0 every ``headway_s``
    (jittered start) during ``seconds``, and every car of the lane follows the lane's speed profile (a slow
    sine around 35, 45, 55, ... ft/s), until its front passes ``length_ft``. Positions carry white noise of
    ``noise_ft``; 10 % trucks. Returns the number of vehicles."""
    rng = np.random.default_rng(seed)
    dt = 0.1
    t = np.arange(int(round((seconds + 20 * length_ft / 30) / dt))) * dt
    blocks, vehicle = [], 0
    for lane in range(1, lanes + 1):
        speed = 25.0 + 10.0 * (lane % 4) + 8.0 * np.sin(2 * np.pi * t / 20.0 + rng.uniform(0, 2 * np.pi))  # [ft/s]
        travelled = np.concatenate([[0.0], np.cumsum(speed[:-1] * dt)])
        for start_s in np.arange(rng.uniform(0, headway_s), seconds, headway_s):
            f0 = int(round(start_s / dt))
            front = travelled[f0:] - travelled[f0]
            n = int(np.searchsorted(front, length_ft, side="right"))
            truck = rng.uniform() < 0.1
            length, width = (40.0, 8.5) if truck else (rng.uniform(13.0, 17.0), rng.uniform(5.5, 6.5))
            vehicle += 1
            rows = np.zeros((n, 18))
            rows[:, 0], rows[:, 1], rows[:, 2] = vehicle, f0 + np.arange(n), n
            rows[:, 4] = LANE_FT * (lane - 0.5) + rng.normal(0, noise_ft, n)  # Local_X: lateral, of the front centre
            rows[:, 5] = front[:n] + rng.normal(0, noise_ft, n)  # Local_Y: the front
            rows[:, 8], rows[:, 9], rows[:, 10] = length, width, 3 if truck else 2
            rows[:, 11], rows[:, 13] = speed[f0 : f0 + n], lane
            blocks.append(rows)
    text = (" ".join(f"{v:.3f}" if k in (4, 5, 8, 9, 11) else f"{v:.0f}" for k, v in enumerate(r))
            for r in np.concatenate(blocks))  # fmt: skip
    path.write_text("\n".join(text) + "\n")
    return vehicle


def _dataset(folder: Path, text: Path, road: dict | None = None) -> dict:
    folder.mkdir()
    summary = import_ngsim(text, folder / "trajectories-0.h5", road=road)
    extract([folder / "trajectories-0.h5"], folder / "episodes.h5", ExtractConfig(progress=False))
    return summary


@pytest.fixture(scope="module")
def ngsim_text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ngsim") / "trajectories.txt"
    synthetic_ngsim(path)
    return path


@pytest.fixture(scope="module")
def scenarioless(ngsim_text) -> tuple[Path, dict]:
    folder = ngsim_text.parent / "inferred"
    return folder, _dataset(folder, ngsim_text)


def test_inferred_road_has_run_in_and_run_out(scenarioless):
    _, summary = scenarioless
    road = summary["road"]
    start, end = road["section_m"]
    assert road["lanes"] == 3 and road["lane_width_m"] == pytest.approx(LANE_FT * FT_M, rel=1e-2)
    assert start == 0.0 and end == pytest.approx(1000.0 * FT_M, abs=0.5)
    assert road["evaluated_m"] == pytest.approx([start + LOOK_AHEAD_M, end - 1.75 * LOOK_AHEAD_M], abs=0.01)


def test_short_section_keeps_half_of_it_evaluated(tmp_path):
    text = tmp_path / "short.txt"
    synthetic_ngsim(text, lanes=2, length_ft=400.0, seconds=10.0)
    road = import_ngsim(text, tmp_path / "t.h5")["road"]
    (start, end), (lo, hi) = road["section_m"], road["evaluated_m"]
    assert start < lo < hi < end and hi - lo == pytest.approx((end - start) / 2, abs=0.02)
    assert (lo - start) / (end - hi) == pytest.approx(1 / 1.75, rel=1e-3)


def test_expert_drives_imported_traffic(scenarioless):
    folder, _ = scenarioless
    result = evaluate_driving(EvalPolicyConfig(driver="expert", data=str(folder), split="train", episodes=24,
                                               out=None, progress=False))  # fmt: skip
    selection = result["selection"]
    assert selection["eligible"] >= 24 and result["episodes"] == 24, selection
    assert result["success_rate"] >= 0.95, result["events"]


def test_evaluation_without_a_car_to_drive_is_an_error(ngsim_text, scenarioless):
    _, summary = scenarioless
    road = dict(summary["road"], evaluated_m=summary["road"]["section_m"])  # no run-out: nobody arrives
    folder = ngsim_text.parent / "whole-section"
    _dataset(folder, ngsim_text, road=road)
    with pytest.raises(DataError) as info:
        evaluate_driving(EvalPolicyConfig(driver="expert", data=str(folder), split="train", out=None, progress=False))
    assert_one_line_error(info, folder, "no car of the train split can be evaluated", "recording_ends_before_zone_end")
    with pytest.raises(ValueError, match=r"episodes \(--episodes\) must be >= 1"):
        evaluate_driving(EvalPolicyConfig(driver="expert", data=str(folder), episodes=0, out=None, progress=False))
