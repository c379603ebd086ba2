import numpy as np
from traffic_helpers import make_scenario

from worldmodel.traffic.drivers import idm_accel
from worldmodel.traffic.simulation import TrafficSimulation

PARAMS = dict(time_headway=1.5, min_gap=2.0, max_accel=1.0, comfort_decel=2.0)


def test_idm_free_road():
    a = idm_accel(np.array([0.0, 10.0, 20.0]), 20.0, np.inf, 0.0, **PARAMS)
    np.testing.assert_allclose(a, [1.0, 1.0 - 0.5**4, 0.0])


def test_idm_equilibrium_gap_gives_zero_acceleration():
    v, v0 = 10.0, 25.0
    s_eq = (2.0 + v * 1.5) / np.sqrt(1 - (v / v0) ** 4)
    assert abs(idm_accel(v, v0, s_eq, 0.0, **PARAMS)) < 1e-12
    assert idm_accel(v, v0, 0.9 * s_eq, 0.0, **PARAMS) < 0 < idm_accel(v, v0, 1.1 * s_eq, 0.0, **PARAMS)


def test_idm_brakes_harder_when_closing_in():
    slow = idm_accel(15.0, 30.0, 40.0, 0.0, **PARAMS)
    closing = idm_accel(15.0, 30.0, 40.0, 10.0, **PARAMS)
    assert closing < slow and closing < -1.0


def test_car_follows_a_stopped_car_without_collision(empty_road):
    sim = TrafficSimulation(empty_road, seed=0)
    sim.place_bots([300.0, 100.0], [1, 1], [0.0, 15.0], length=4.5, v0=[0.001, 20.0], thresh=99.0, s0=2.0)
    for _ in range(300):
        events = sim.step()
        assert len(events.collisions) == 0
    gap = sim.x[0] - sim.x[1] - 4.5
    assert 1.5 < gap < 2.5 and sim.v[1] < 0.1  # (nearly) stopped about s0 = 2 m behind


def test_mobil_overtakes_a_slow_leader_when_the_next_lane_is_free(empty_road):
    sim = TrafficSimulation(empty_road, seed=0)
    ids = sim.place_bots([130.0, 100.0], [1, 1], [5.0, 15.0], v0=[5.0, 25.0], thresh=0.1, polite=0.0)
    lanes_seen = set()
    for _ in range(100):
        sim.step()
        lanes_seen.add(int(sim.lane[sim.index_of(ids[1])]))
    assert lanes_seen - {1}, "the fast car should have left lane 1"


def test_mobil_does_not_cut_in_front_of_a_close_fast_follower(empty_road):
    sim = TrafficSimulation(empty_road, seed=0)
    # slow leader ahead in lane 0; lane 1 has a fast car right behind the candidate's position
    ids = sim.place_bots([130.0, 100.0, 97.0], [0, 0, 1], [5.0, 15.0, 25.0], v0=[5.0, 25.0, 25.0],
                         thresh=0.1, polite=0.0)  # fmt: skip
    changed_early = False
    for _ in range(8):
        sim.step()
        changed_early |= int(sim.lane[sim.index_of(ids[1])]) != 0
    assert not changed_early


def test_ramp_cars_merge_before_the_ramp_ends():
    scenario = make_scenario(
        road={"lanes": 2, "length_m": 400.0, "section_m": [20.0, 380.0], "evaluated_m": [30.0, 370.0],
              "ramps": [{"start_m": 50.0, "end_m": 200.0, "demand_veh_per_h": 600.0}]},
    )  # fmt: skip
    sim = TrafficSimulation(scenario, seed=1)
    for _ in range(1500):
        sim.step()
        on_ramp = sim.lane >= 2
        assert np.all(sim.x[on_ramp] < 200.0 + 1.0)
    assert sim.stats.merges >= 5
