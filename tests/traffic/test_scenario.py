from pathlib import Path

import numpy as np
import pytest

from worldmodel.traffic.scenario import (
    Distribution,
    ScenarioError,
    load_scenario,
    resolve_scenario,
    scenarios_dir,
)

ENVS = sorted(scenarios_dir().glob("*.toml"))


def test_shipped_scenarios_load():
    names = {p.stem for p in ENVS}
    assert {"i80", "us101", "tiny"} <= names
    for path in ENVS:
        s = load_scenario(path)
        assert s.road.lanes >= 1 and s.road.length_m > 0


def test_i80_has_six_lanes_an_onramp_and_a_300m_section():
    s = resolve_scenario("i80")
    assert s.road.lanes == 6 and len(s.road.ramps) == 1
    length = s.road.section_m[1] - s.road.section_m[0]
    assert 280 <= length <= 340
    assert s.road.section_m[0] > 50 and s.road.length_m - s.road.section_m[1] > 50  # run-in and run-out


@pytest.mark.parametrize(
    "text, key",
    [
        ("[road]\nlanse = 3\n", "road.lanse"),
        ("colour = 'red'\n", "colour"),
        ("[road]\nlanes = 0\n", "road.lanes"),
        ("[road]\nlane_width_m = -1.0\n", "road.lane_width_m"),
        ("[road]\nsection_m = [200.0, 100.0]\n", "road.section_m"),
        ("[drivers]\ntime_headway_s = { mean = -1.0 }\n", "drivers.time_headway_s"),
        ("[drivers]\npoliteness = { mean = 0.3, sdt = 0.1 }\n", "drivers.politeness.sdt"),
        ("[[vehicles]]\nkind = 'car'\nlength_m = 0.0\n", "vehicles[0].length_m"),
        ("[[road.ramps]]\nstart_m = 100.0\nend_m = 90.0\n", "road.ramps[0]"),
        ("[road]\nlanes = 'three'\n", "road.lanes"),
    ],
)
def test_bad_scenarios_name_the_file_and_key(tmp_path: Path, text: str, key: str):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and key in message


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ScenarioError, match="no such scenario"):
        load_scenario(tmp_path / "absent.toml")
    (tmp_path / "x.toml").write_text("[road\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(tmp_path / "x.toml")


def test_distribution_respects_bounds_and_is_seeded():
    d = Distribution(1.0, 2.0, 0.5, 1.5)
    a = d.sample(np.random.default_rng(3), 1000)
    b = d.sample(np.random.default_rng(3), 1000)
    assert a.min() >= 0.5 and a.max() <= 1.5 and np.array_equal(a, b)
    assert np.all(Distribution(2.0).sample(np.random.default_rng(0), 3) == 2.0)


def test_a_directory_named_like_a_scenario_does_not_hide_it(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # e.g. a run folder called like the scenario
    assert resolve_scenario("tiny").road.lanes >= 1
    with pytest.raises(ScenarioError, match="a directory"):
        load_scenario(tmp_path / "tiny")
