"""The quickstart script's stages, end to end, at a micro setting (the sizes it takes from the environment)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("simulate", "dataset", "forward-model", "predictions", "policy", "eval-no-action", "eval-bot",
          "eval-policy", "rollout")  # fmt: skip


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("quickstart")
    recipe = tmp / "micro.toml"
    recipe.write_text(
        'name = "micro"\nscenario = "tiny"\nwarmup_s = 30.0\n\n[[recordings]]\nseed = 0\nminutes = 1.0\n\n'
        "[extract]\nworkers = 1\n"
    )
    out = tmp / "run"
    env = {**os.environ, "SETUP": "0", "PYTHON": sys.executable, "OUT": str(out), "RECIPE": str(recipe),
           "DATA": str(tmp / "data"), "SIM_SECONDS": "5", "FM_STEPS": "3", "POLICY_STEPS": "2", "WORLD_POOL": "8",
           "EPISODES": "2", "WORKERS": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh")], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_every_stage_runs_and_is_timed(quickstart):
    timed = [line.split()[0] for line in (quickstart / "timings.txt").read_text().splitlines()]
    assert timed == list(STAGES)


def test_the_pictures_are_readable_videos(quickstart):
    for name in ("sim.mp4", "predictions.gif", "rollout.gif"):
        frames = iio.imread(quickstart / name, index=None)
        assert frames.ndim == 4 and len(frames) > 1 and frames.std() > 0, name


def test_the_table_compares_the_policy_with_no_action_and_the_bot(quickstart):
    for name in ("no-action", "bot", "policy"):
        result = json.loads((quickstart / f"eval-{name}.json").read_text())
        assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    table = (quickstart / "table.md").read_text()
    assert table.count("\n|") >= 4  # header, rule and three drivers
    assert (quickstart / "policy" / "checkpoints" / "last.pt").is_file()
