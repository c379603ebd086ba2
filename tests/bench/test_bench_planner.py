"""bench planner's machinery on two episodes: the rows are timed on a recording it makes, and the baseline's
ratio is what its figures say."""

import pytest

import worldmodel.bench.planner as bench

pytestmark = pytest.mark.slow  # tens of seconds: a recording, its extraction and four short drives


def test_bench_planner_times_each_row_against_the_dense_baseline(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "EPISODES", 2)
    monkeypatch.setattr(bench, "BATCH", 1)
    monkeypatch.setattr(bench, "WORKERS", 1)
    monkeypatch.setattr(bench, "MINUTES", {True: 1.0})
    monkeypatch.setattr(bench, "ROWS", {"oracle": {"world": "oracle", "iterations": 1},
                                        "oracle_dense": {"world": "oracle", "iterations": 1, "frame_every": 1,
                                                         "lane_rows_m": None}})  # fmt: skip
    out = bench.bench_planner(quick=True, folder=tmp_path)
    assert (tmp_path / "episodes.h5").exists() and out["plan_episodes"] == 2
    for name in ("oracle", "oracle_dense"):
        assert out[f"plan_car_steps_{name}"] > 2 * 20  # two cars driven through the zone, not reset at once
        assert out[f"plan_ms_per_car_step_{name}"] > 0 and 0.0 <= out[f"plan_success_rate_{name}"] <= 1.0
    ratio = out["plan_ms_per_car_step_oracle_dense"] / out["plan_ms_per_car_step_oracle"]
    assert out["plan_speedup_vs_dense"] == pytest.approx(ratio, abs=0.01)
