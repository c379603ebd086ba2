import numpy as np
import pytest

from worldmodel.traffic.raster import EgoRasterizer, ego_masks, reference_views, render_topdown
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RoadConfig, resolve_scenario
from worldmodel.traffic.simulation import TrafficSimulation
from worldmodel.traffic.view import LANES, OFFROAD, VEHICLES, ViewSpec

SPEC = ViewSpec()
ROAD = Road(RoadConfig(lanes=4, lane_width_m=3.7, length_m=400.0, section_m=(50.0, 350.0), evaluated_m=(60.0, 340.0)))


def cars(*rows):
    """Vehicles from (x, y, psi, length, width) rows; lanes from y."""
    a = np.array(rows, dtype=np.float64)
    return {"x": a[:, 0], "y": a[:, 1], "psi": a[:, 2], "length": a[:, 3], "width": a[:, 4],
            "lane": np.floor(a[:, 1] / 3.7)}  # fmt: skip


def pixel_of(forward_m: float, lateral_m: float) -> tuple[float, float]:
    return SPEC.ego_row - forward_m * SPEC.px_per_m, SPEC.ego_col + lateral_m * SPEC.px_per_m


def test_view_shape_and_ego_left_out():
    r = EgoRasterizer(ROAD, SPEC)
    views = r.render(cars((200.0, 5.55, 0.0, 4.5, 1.8)))
    assert views.shape == (1, 3, 117, 24) and views.dtype == np.uint8
    assert views[0, VEHICLES].max() == 0  # alone on the road: nothing in the vehicles channel


def test_car_ahead_lands_on_the_expected_pixels():
    """Golden: a 4.5 x 1.8 m car 20 m straight ahead in the same lane."""
    r = EgoRasterizer(ROAD, SPEC)
    views = r.render(cars((200.0, 5.55, 0.0, 4.5, 1.8), (220.0, 5.55, 0.0, 4.5, 1.8)), np.array([0]))
    veh = views[0, VEHICLES].astype(np.float64) / 255.0
    # expected footprint: forward 17.75..22.25 m, lateral -0.9..0.9 m
    r_top, _ = pixel_of(22.25, 0.0)
    r_bottom, _ = pixel_of(17.75, 0.0)
    _, c_left = pixel_of(0.0, -0.9)
    _, c_right = pixel_of(0.0, 0.9)
    rows = np.nonzero(veh.max(axis=1) > 0.5)[0]
    cols = np.nonzero(veh.max(axis=0) > 0.5)[0]
    assert abs(rows.min() - r_top) <= 1.25 and abs(rows.max() - r_bottom) <= 1.25
    assert abs(cols.min() - c_left) <= 1.25 and abs(cols.max() - c_right) <= 1.25
    # total coverage = area in pixels (anti-aliasing keeps the mass, within the 4x grid's quantisation)
    assert veh.sum() == pytest.approx(4.5 * 1.8 * SPEC.px_per_m**2, rel=0.1)
    # the centre of mass sits on the car's centre within 0.15 px (9 cm)
    com_row = (veh * np.arange(SPEC.height_px)[:, None]).sum() / veh.sum()
    com_col = (veh * np.arange(SPEC.width_px)[None, :]).sum() / veh.sum()
    assert com_row == pytest.approx(pixel_of(20.0, 0.0)[0], abs=0.15)
    assert com_col == pytest.approx(SPEC.ego_col, abs=0.15)
    # a car to the right appears on the right half of the view, one ahead at the top
    views = r.render(cars((200.0, 5.55, 0.0, 4.5, 1.8), (200.0, 9.25, 0.0, 4.5, 1.8)), np.array([0]))
    cols = np.nonzero(views[0, VEHICLES].max(axis=0) > 128)[0]
    assert cols.min() > SPEC.ego_col


def test_sub_pixel_accuracy():
    r = EgoRasterizer(ROAD, SPEC)
    a = r.render(cars((200.0, 5.55, 0.0, 4.5, 1.8), (215.0, 5.55, 0.0, 4.5, 1.8)), np.array([0]))
    b = r.render(cars((200.0, 5.55, 0.0, 4.5, 1.8), (215.3, 5.55, 0.0, 4.5, 1.8)), np.array([0]))
    assert not np.array_equal(a[0, VEHICLES], b[0, VEHICLES])
    # the centre of mass moves forward by ~0.3 m (0.49 px, upward)
    rows = np.arange(SPEC.height_px)[:, None]
    com = [float((v[0, VEHICLES] * rows).sum() / v[0, VEHICLES].sum()) for v in (a, b)]
    assert com[0] - com[1] == pytest.approx(0.3 * SPEC.px_per_m, abs=0.1)


def test_heading_up_rotation():
    """An ego heading 90 degrees right (+y) sees the car at +y ahead of it."""
    r = EgoRasterizer(ROAD, SPEC)
    views = r.render(cars((200.0, 3.0, np.pi / 2, 4.5, 1.8), (200.0, 13.0, np.pi / 2, 4.5, 1.8)), np.array([0]))
    rows = np.nonzero(views[0, VEHICLES].max(axis=1) > 128)[0]
    assert rows.max() < SPEC.ego_row - 5  # ahead = up


def test_lanes_and_offroad_channels():
    r = EgoRasterizer(ROAD, SPEC)
    v = r.render(cars((200.0, 1.85, 0.0, 4.5, 1.8)))[0]  # leftmost lane
    # lane markings at y = 0 (left edge) and 3.7 m: lateral -1.85 and +1.85 m
    for lateral in (-1.85, 1.85):
        _, col = pixel_of(0.0, lateral)
        assert v[LANES, :, int(round(col)) - 1 : int(round(col)) + 2].max() > 100
    _, col_centre = pixel_of(0.0, 0.0)
    assert v[LANES, :, int(col_centre)].max() == 0
    # left of the road (lateral < -1.85 m - 1 px) is off-road, the lane itself is not
    _, col_edge = pixel_of(0.0, -1.85)
    assert v[OFFROAD, :, : int(col_edge) - 1].min() == 255
    assert v[OFFROAD, :, int(col_centre)].max() == 0


def test_fast_path_equals_the_reference_in_real_traffic():
    sim = TrafficSimulation(resolve_scenario("tiny"), seed=0)
    for _ in range(200):
        sim.step()
    snap = sim.snapshot()
    r = EgoRasterizer(sim.road, SPEC)
    fast = r.render(snap).astype(np.int16)
    slow = reference_views(r, snap, np.arange(sim.n)).astype(np.int16)
    diff = np.abs(fast - slow)
    # static channels: equal up to the warp's fixed-point rounding of a different canvas offset (1 level)
    assert diff[:, LANES].max() <= 1 and diff[:, OFFROAD].max() <= 1
    # vehicles: identical except where two cars of one layer nearly touch (rare): allow a few pixels
    assert (diff[:, VEHICLES] > 2).mean() < 1e-3


def test_ego_masks_cover_the_footprint():
    masks = ego_masks(SPEC, np.array([4.5, 10.0]), np.array([1.8, 2.5]))
    assert masks.shape == (2, 117, 24)
    area = masks.astype(np.float64).sum(axis=(1, 2)) / 255.0
    np.testing.assert_allclose(area, np.array([4.5 * 1.8, 10.0 * 2.5]) * SPEC.px_per_m**2, rtol=0.02)
    assert masks[0, 58, 11] == 255 and masks[0, 0, 0] == 0


def test_topdown_view_draws_the_controlled_car_and_ghost():
    veh = cars((100.0, 5.55, 0.0, 4.5, 1.8), (120.0, 9.25, 0.0, 4.5, 1.8))
    img = render_topdown(ROAD, veh, px_per_m=4.0, x_range=(80.0, 140.0), highlight=np.array([True, False]),
                         ghost={"x": 110.0, "y": 1.85, "psi": 0.0, "length": 4.5, "width": 1.8})  # fmt: skip
    assert img.shape == (int(np.ceil((ROAD.total_lanes * 3.7 + 4.0) * 4)), 240, 3)
    row, col = int((5.55 + 2.0) * 4), int((100.0 - 80.0) * 4)
    assert tuple(img[row, col]) == (40, 90, 255)  # controlled: blue
    grow, gcol = int((1.85 - 0.9 + 2.0) * 4), int((110.0 - 80.0) * 4)
    assert img[grow, gcol, 0] > 200 and img[grow, gcol, 1] > 150  # ghost outline: yellow
