"""ReplaySimulation (recorded traffic around one invisible controlled car) and replay_drift.

Recordings come from the fixtures of tests/conftest.py: ``tiny_recording`` (25 s of the tiny scenario with
the bots' exact actions) and ``following_pair`` (1 lane, car 2 follows car 1 at 3.5 m, both at 10 m/s).
"""

import numpy as np
import pytest

from worldmodel.data.replay import ReplaySimulation, recorded_headings, replay_drift
from worldmodel.data.trajectories import TrajectoryReader, TrajectoryWriter
from worldmodel.traffic import kinematics
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RoadConfig


def handed_over(path, vehicle: int) -> ReplaySimulation:
    """A replay of ``path`` with ``vehicle`` driven, its context followed: the driver's turn."""
    sim = ReplaySimulation(path)
    sim.start(vehicle)
    while sim.in_context:
        sim.step()
    return sim


def drive_recorded_actions(sim: ReplaySimulation, track: dict) -> tuple[str | None, float]:
    """Follow the context, then drive with the recorded actions until an event. Returns (event, largest
    distance [m] to the ghost)."""
    while sim.in_context:
        sim.step()
    worst, event = 0.0, None
    while event is None:
        k = sim.frame - sim.start_frame  # the action of row k moves the car from frame k to k + 1
        event = sim.step((track["accel"][k], track["curvature"][k])).event
        ghost = sim.ghost
        if ghost is not None:
            worst = max(worst, float(np.hypot(sim.x - ghost["x"], sim.y - ghost["y"])))
    return event, worst


def test_expert_actions_reproduce_every_recording(tiny_recording):
    sim = ReplaySimulation(tiny_recording)
    reader = TrajectoryReader(tiny_recording)
    eligible = sim.eligible_vehicles()
    assert len(eligible) >= 10
    events = []
    for vid in eligible:
        sim.start(int(vid))
        event, worst = drive_recorded_actions(sim, reader.track(int(vid)))
        assert worst <= 0.01, (vid, worst)
        if event == "offroad":  # only where the recording itself left the road (a bot cutting a ramp's end)
            assert not sim.road.on_road(np.array([sim.ghost["x"]]), np.array([sim.ghost["y"]]))[0]
        events.append(event)
    assert set(events) <= {"arrived", "end_of_data", "offroad"}
    assert events.count("arrived") > len(events) // 2 and events.count("offroad") <= 2


def test_context_follows_the_recording_then_hands_over(tiny_recording):
    sim = ReplaySimulation(tiny_recording, context_frames=5)
    vid = int(sim.eligible_vehicles()[0])
    track = TrajectoryReader(tiny_recording).track(vid)
    sim.start(vid)
    assert sim.frame == track["frame"][0] and sim.in_context
    with pytest.raises(ValueError, match="hand-over"):
        sim.step((0.0, 0.0))
    for k in range(1, 5):
        sim.step()
        assert (sim.x, sim.y) == (float(track["x"][k]), float(track["y"][k]))
        assert sim.psi == pytest.approx(float(track["heading"][k]))
    assert not sim.in_context and sim.frame == sim.handover_frame == track["frame"][4]
    assert sim.v == pytest.approx(float(np.hypot(track["vx"][4], track["vy"][4])))
    with pytest.raises(ValueError, match="needs an action"):
        sim.step()
    sim.step((0.0, 0.0))
    assert sim.controlled_steps == 1
    assert sim.distance_m == pytest.approx(sim.x - float(track["x"][0]))


def test_vehicles_lists_the_controlled_car_first_and_hides_its_recording(tiny_recording):
    sim = ReplaySimulation(tiny_recording)
    reader = TrajectoryReader(tiny_recording)
    vid = int(sim.eligible_vehicles()[3])
    sim.start(vid)
    for _ in range(sim.context_frames - 1):
        sim.step()
    sim.step((-3.0, 0.0))
    sim.step((-3.0, 0.0))  # the car now lags behind its ghost
    v = sim.vehicles()
    present = reader.frames_table().at(sim.frame)["vehicle"]
    assert v["controlled"][0] and not v["controlled"][1:].any()
    assert v["id"][0] == vid and sorted(v["id"][1:]) == sorted(set(present) - {vid})
    assert (v["x"][0], v["y"][0], v["psi"][0]) == (sim.x, sim.y, sim.psi)
    assert {"x", "y", "psi", "v", "length", "width", "lane", "kind", "controlled"} <= set(v)
    ghost = sim.ghost
    assert ghost["x"] > sim.x  # the recording went on at its own speed


def test_hard_brake_when_followed_closely_is_a_collision_behind(following_pair):
    sim = ReplaySimulation(following_pair)
    sim.start(1)
    while sim.in_context:
        assert sim.step().event is None
    steps, events = 0, None
    while events is None or events.event is None:
        events = sim.step((-kinematics.MAX_REPLAY_ACCEL_MPS2, 0.0))
        steps += 1
    assert events.event == "collision_behind" and not events.collision_ahead
    assert list(events.colliding_ids) == [2]
    # 3.5 m bumper to bumper, closed at 0.5 * 6.2 m/s^2 * t^2 (discrete steps): about 1.1 s
    assert 10 <= steps <= 13


def test_flooring_it_behind_a_car_is_a_collision_ahead(following_pair):
    sim = handed_over(following_pair, 2)
    event = None
    while event is None:
        event = sim.step((kinematics.MAX_REPLAY_ACCEL_MPS2, 0.0)).event
    assert event == "collision_ahead"


def test_steering_hard_left_leaves_the_road(following_pair):
    sim = handed_over(following_pair, 1)
    event = None
    for _ in range(20):
        event = sim.step((0.0, -0.2)).event  # negative curvature turns towards y < 0: left
        if event is not None:
            break
    assert event == "offroad" and sim.y < 0


def test_running_out_of_recorded_frames(following_pair):
    sim = handed_over(following_pair, 1)
    event = None
    while event is None:
        event = sim.step((0.0, 0.0)).event  # keeps its 10 m/s, like its recording
    assert event == "end_of_data" and sim.frame == sim.frame_range[1] - 1
    assert sim.ghost["x"] == pytest.approx(sim.x, abs=1e-4)
    with pytest.raises(RuntimeError, match="end of data"):
        sim.step((0.0, 0.0))


def test_start_rejects_unknown_and_short_vehicles(following_pair):
    sim = ReplaySimulation(following_pair, context_frames=200)
    with pytest.raises(KeyError):
        sim.start(99)
    with pytest.raises(ValueError, match="context"):
        sim.start(1)
    assert len(sim.eligible_vehicles()) == 0


def test_headings_from_velocity_are_held_over_stops():
    s, d = np.sqrt(0.5), 0.0
    vx = np.array([s, d, d, d, 0.0, d, 0.0, 0.0])
    vy = np.array([s, d, d, d, 1.0, d, 0.0, 0.0])
    psi = recorded_headings(vx, vy, counts=np.array([3, 3, 2]))
    np.testing.assert_allclose(psi, [np.pi / 4] * 3 + [np.pi / 2] * 3 + [0.0, 0.0])
    np.testing.assert_array_equal(recorded_headings(vx, vy, np.array([8]), heading=np.arange(8.0)), np.arange(8.0))


def test_drift_of_inferred_and_exact_actions_on_a_simulated_recording(tiny_recording):
    drift = replay_drift(tiny_recording)
    reader = TrajectoryReader(tiny_recording)
    assert drift["vehicles"] == reader.num_vehicles
    assert drift["recorded"]["max_error_m_max"] < 1e-3  # the exact actions, from the float32 first state
    # bots move by the same kinematics: for cars whose accelerations stay inside PPUU's 6.2 m/s^2 clip,
    # inverting is exact up to float rounding
    gentle = [vid for vid, track in reader if np.abs(track["accel"]).max() <= kinematics.MAX_REPLAY_ACCEL_MPS2]
    assert len(gentle) >= 10
    inside = replay_drift(reader, vehicle_ids=gentle)
    print("replay drift on the tiny recording:", drift, inside)
    assert inside["inferred"]["max_error_m_max"] < 1e-3 and inside["clipped_fraction"] == 0
    assert drift["inferred"]["vehicles_at_1s"] > 0 and np.isfinite(drift["inferred"]["error_m_at_1s"])
    some = replay_drift(tiny_recording, vehicle_ids=TrajectoryReader(tiny_recording).vehicles["id"][2:], max_vehicles=3)
    assert some["vehicles"] == 3


def test_clipped_hard_brake_drifts_as_expected(tmp_path):
    """A car braking at 8 m/s^2 for 1 s is replayed at the 6.2 m/s^2 clip: 1.8 m/s^2 too little for 10 steps,
    i.e. 1.8 * dt^2 * (0 + 1 + ... + 9) = 0.81 m ahead of its recording after 1 s."""
    dt, n = 0.1, 60
    x, y, psi, v = [np.array([v0]) for v0 in (10.0, 1.85, 0.0, 15.0)]
    xs = [x[0]]
    for t in range(n - 1):
        x, y, psi, v = kinematics.step(x, y, psi, v, np.array([-8.0 if t < 10 else 0.0]), np.zeros(1), dt)
        xs.append(x[0])
    xs = np.array(xs)
    accel = np.where(np.arange(n) < 10, -8.0, 0.0)
    road = Road(RoadConfig(lanes=1, length_m=300.0, section_m=(0.0, 300.0), evaluated_m=(10.0, 290.0)))
    path = tmp_path / "brake.h5"
    with TrajectoryWriter(path, road.to_dict(), "test", ["car"]) as w:  # exact actions, no heading column
        w.add_vehicle(1, 4.5, 1.8, 0, {"frame": np.arange(n), "x": xs, "y": np.full(n, 1.85),
                                       "vx": np.gradient(xs, dt), "vy": np.zeros(n), "lane": np.zeros(n, np.int16),
                                       "accel": accel, "curvature": np.zeros(n)})  # fmt: skip
    drift = replay_drift(path)
    assert drift["clipped_fraction"] == pytest.approx(10 / n)
    assert drift["inferred"]["error_m_at_1s"] == pytest.approx(0.81, abs=2e-3)
    assert drift["inferred"]["max_error_m_max"] > 0.81  # 1.8 m/s too fast ever after
    assert drift["recorded"]["max_error_m_max"] < 1e-3  # the exact actions are not clipped


def test_ghost_speed_and_recorded_steps_to_the_zone_end(tiny_recording, following_pair):
    sim = ReplaySimulation(tiny_recording)
    reader = TrajectoryReader(tiny_recording)
    zone_end = sim.road.config.evaluated_m[1]
    with pytest.raises(RuntimeError, match="start"):
        sim.recorded_steps_to_zone_end()
    reached = 0
    for vid in sim.eligible_vehicles():
        track = reader.track(int(vid))
        sim.start(int(vid))
        while sim.in_context:
            sim.step()
        sim.step((-3.0, 0.0))  # the car is slower than its recording now; the ghost keeps the recorded speed
        k = sim.frame - sim.start_frame
        assert sim.ghost["v"] == pytest.approx(float(np.hypot(track["vx"][k], track["vy"][k])))
        steps = sim.recorded_steps_to_zone_end()
        past = np.nonzero(track["x"][sim.context_frames - 1 :] >= zone_end)[0]
        if steps is None:
            assert len(past) == 0
        else:
            reached += 1
            assert steps == past[0] >= 1  # eligible: short of the zone end at the hand-over
            assert (
                track["x"][sim.context_frames - 1 + steps - 1] < zone_end <= track["x"][sim.context_frames - 1 + steps]
            )
    assert reached >= 5
    pair = ReplaySimulation(following_pair)
    pair.start(1)
    assert pair.recorded_steps_to_zone_end() is None  # the recording ends at x = 189 m, short of 290 m
