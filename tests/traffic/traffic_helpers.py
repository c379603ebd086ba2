"""Shared builders for the traffic tests."""

from worldmodel.traffic.scenario import Scenario, scenario_from_dict


def make_scenario(**sections) -> Scenario:
    """A scenario from TOML-like sections, with no inflow and no noise unless given."""
    data = {"demand": {"mainline_veh_per_h_per_lane": 0.0}, "noise": {"accel_std_mps2": 0.0}}
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return scenario_from_dict(data)
