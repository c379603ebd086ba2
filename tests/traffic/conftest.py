import pytest
from traffic_helpers import make_scenario

from worldmodel.traffic.scenario import Scenario


@pytest.fixture
def empty_road() -> Scenario:
    """Three lanes, 400 m, no traffic, no noise."""
    return make_scenario(road={"lanes": 3, "length_m": 400.0, "section_m": [50.0, 350.0], "evaluated_m": [60.0, 340.0]})
