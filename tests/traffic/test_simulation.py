from dataclasses import replace

import numpy as np
import pytest

from worldmodel.traffic import kinematics
from worldmodel.traffic.scenario import resolve_scenario
from worldmodel.traffic.simulation import TrafficSimulation
from worldmodel.traffic.vehicles import ORIGIN


def run(seed: int, steps: int = 300) -> TrafficSimulation:
    sim = TrafficSimulation(resolve_scenario("tiny"), seed=seed)
    for _ in range(steps):
        sim.step()
    return sim


def test_same_seed_same_traffic_bit_for_bit():
    a, b = run(7), run(7)
    for key, value in a.snapshot().items():
        assert np.array_equal(value, b.snapshot()[key]), key
    c = run(8)
    assert c.n != a.n or not np.array_equal(c.x, a.x)


def test_tiny_traffic_flows_without_collisions():
    sim = TrafficSimulation(resolve_scenario("tiny"), seed=0)
    spawned = exited = 0
    for _ in range(1500):
        events = sim.step()
        spawned += len(events.spawned)
        exited += len(events.exited)
    s = sim.stats.summary()
    assert spawned > 50 and exited > 50
    assert s["collisions"] == 0
    assert s["mean_speed_mps"] > 1.0 and s["merges"] > 0 and s["lane_changes"] > 0
    before_end = sim.x <= sim.road.length_m  # cars leave once their rear passes the end
    assert sim.road.on_road(sim.x[before_end], sim.y[before_end]).all()


def test_recorded_bot_actions_replay_their_trajectory():
    """A bot's recorded actions, replayed from its first recorded state, reproduce its path (<= 1 cm)."""
    sim = TrafficSimulation(resolve_scenario("tiny"), seed=3)
    for _ in range(100):
        sim.step()
    tracks: dict[int, list] = {}
    for _ in range(500):
        before = sim.snapshot()
        sim.step()
        after = sim.snapshot()
        index = {int(i): k for k, i in enumerate(after["id"])}
        for k, vid in enumerate(before["id"]):
            if int(vid) in index:
                j = index[int(vid)]
                tracks.setdefault(int(vid), []).append(
                    (before["x"][k], before["y"][k], before["psi"][k], before["v"][k], after["accel"][j],
                     after["curvature"][j], after["x"][j], after["y"][j])
                )  # fmt: skip
    long_tracks = [np.array(t) for t in tracks.values() if len(t) > 200]
    assert len(long_tracks) >= 5
    worst = 0.0
    for t in long_tracks:
        x, y, psi, v = (np.float64(np.float32(t[0, i])) for i in range(4))  # start from a float32 record
        for row in t:
            x, y, psi, v = kinematics.step(x, y, psi, v, np.float64(np.float32(row[4])),
                                           np.float64(np.float32(row[5])), 0.1)  # fmt: skip
            worst = max(worst, float(np.hypot(x - row[6], y - row[7])))
    assert worst <= 0.01


def test_collisions_are_detected_exactly(empty_road):
    sim = TrafficSimulation(empty_road, seed=0)
    sim.place_bots([100.0, 104.4], [1, 1], [0.0, 0.0], length=4.5, v0=0.001)  # 0.1 m overlap
    events = sim.step()
    assert len(events.collisions) == 1
    sim2 = TrafficSimulation(empty_road, seed=0)
    sim2.place_bots([100.0, 104.6], [1, 1], [0.0, 0.0], length=4.5, v0=0.001)  # 0.1 m apart
    assert len(sim2.step().collisions) == 0


def test_inflow_queues_when_the_entry_is_blocked(empty_road):
    from traffic_helpers import make_scenario

    scenario = make_scenario(road={"lanes": 1, "length_m": 200.0, "section_m": [20.0, 180.0], "evaluated_m": [30.0, 170.0]},
                             demand={"mainline_veh_per_h_per_lane": 3600.0})  # fmt: skip
    sim = TrafficSimulation(scenario, seed=0)
    sim.place_bots([6.0], [0], [0.0], length=4.5, v0=0.001)  # a stopped car at the entry
    for _ in range(100):
        sim.step()
    assert sim.queue.sum() >= 5  # about one arrival per second for 10 s, none admitted
    assert sim.n == 1
    summary = sim.stats.summary()  # the demand that never entered is reported
    assert summary["demand_arrived"] == sim.queue.sum() and summary["demand_entered_fraction"] == 0.0
    assert summary["backlog_final"] == sim.queue.sum()


def test_controlled_car_moves_only_by_its_actions(empty_road):
    sim = TrafficSimulation(empty_road, seed=0)
    ego = sim.add_controlled(100.0, 5.55, 0.0, 10.0, 4.5, 1.8)
    for _ in range(10):
        sim.step({ego: (1.0, 0.0)})
    i = sim.index_of(ego)
    assert sim.v[i] == pytest.approx(11.0) and sim.x[i] == pytest.approx(100.0 + 10.0 + 0.45)
    assert sim.controlled[i]


def lateral_offsets(scenario, steps: int = 600) -> np.ndarray:
    """Offsets [m] of settled bots (not changing lanes) from their lane centres, over the last half of a run."""
    sim = TrafficSimulation(scenario, seed=0)
    offsets = []
    for step in range(steps):
        sim.step()
        if step >= steps // 2:
            keeping = sim.lane == sim._d[ORIGIN, : sim.n]  # not mid-change
            on_main = keeping & (sim.lane < sim.road.lanes)
            offsets.append((sim.y - sim.road.lane_center_y(sim.lane))[on_main])
    return np.concatenate(offsets)


def test_bots_wander_around_the_lane_centre_within_their_lane():
    scenario = resolve_scenario("tiny")
    wander = lateral_offsets(scenario)
    assert 0.15 < wander.std() < 0.35  # the Ornstein-Uhlenbeck std is 0.25 m, bounded and tracked with a lag
    assert np.abs(wander).max() < 0.5 * scenario.road.lane_width_m - 0.5  # a car's side never reaches the marking
    centred = lateral_offsets(replace(scenario, noise=replace(scenario.noise, lateral_std_m=0.0)))
    # without wander, bots hold the centre line (but for the last 0.15 m of a lane change, closed in a few steps)
    assert np.median(np.abs(centred)) < 1e-6 and centred.std() < 0.03 < 0.15 < wander.std()


def test_a_contact_that_flickers_is_one_collision(empty_road):
    """Two touching cars that part and touch again within seconds (wander, body swing) count once."""
    sim = TrafficSimulation(empty_road, seed=0)
    behind = sim.add_controlled(100.0, 5.55, 0.0, 0.0, 4.5, 1.8)
    ahead = sim.add_controlled(104.48, 5.55, 0.0, 0.0, 4.5, 1.8)  # 0.02 m overlap
    still = {behind: (0.0, 0.0), ahead: (0.0, 0.0)}
    plan = [{**still, ahead: (5.0, 0.0)}, still, {**still, ahead: (-5.0, 0.0)}] + [still] * 2  # ahead parts 0.1 m
    plan += [{**still, behind: (5.0, 0.0)}, still, {**still, behind: (-5.0, 0.0)}] + [still] * 2  # behind closes
    touching = [len(sim.step(actions).collisions) > 0 for actions in plan]
    assert touching[0] and not all(touching) and touching[-1]  # in contact, apart, in contact again
    assert sim.stats.collisions == 1


def test_five_minutes_of_i80_from_the_initial_placement_without_a_collision():
    """The hour of ``i80`` (README) at a smaller scale: dense traffic, trucks, the ramp, wander, warm-up included."""
    sim = TrafficSimulation(resolve_scenario("i80"), seed=0)
    for _ in range(3000):
        sim.step()
    summary = sim.stats.summary()
    assert summary["collisions"] == 0 and summary["vehicles_spawned"] > 300
    assert 0 < summary["demand_entered_fraction"] <= 1
