"""Costs at any ego pose: PPUU's pixel costs at zero offset, exact mask moves, gradients, the drive masks."""

import numpy as np
import pytest
import torch

from worldmodel.costs import pixel_costs
from worldmodel.driving.pose_costs import costs_at_pose, pixel_set
from worldmodel.traffic.view import LANES, OFFROAD, VEHICLES, ViewSpec

SPEC = ViewSpec()


def random_frames(b=3, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, t, 3, SPEC.height_px, SPEC.width_px, generator=g, dtype=torch.float64) ** 6
    images[images < 0.2] = 0  # sparse, like real views
    return images


@pytest.mark.parametrize("lane_rows_m", [None, 15.0])
def test_zero_offset_equals_pixel_costs(lane_rows_m):
    images = random_frames()
    speed = torch.tensor([0.0, 5.0, 15.0], dtype=torch.float64)[:, None].expand(3, 4)
    length = torch.tensor([4.5, 12.0, 3.8], dtype=torch.float64)[:, None]
    width = torch.tensor([1.8, 2.5, 1.7], dtype=torch.float64)[:, None]
    expected = pixel_costs(images, speed, length, width)
    if lane_rows_m is not None:  # lanes and off-road beyond lane_rows_m are not read: clear them there
        far = torch.from_numpy(np.abs(SPEC.pixel_centres_m()[0]) > lane_rows_m)
        images[..., LANES, far, :] = 0
        images[..., OFFROAD, far, :] = 0
        expected = pixel_costs(images, speed, length, width)
    pixels = pixel_set(images, SPEC, lane_rows_m)
    if lane_rows_m is not None:
        assert pixels.road.forward.shape[-1] < SPEC.height_px * SPEC.width_px
        assert pixels.vehicles.forward.shape[-1] < SPEC.height_px * SPEC.width_px
    out = costs_at_pose(pixels, torch.zeros(3, 4, 3, dtype=torch.float64), speed, length, width)
    proximity = torch.maximum(out["proximity_ahead"], out["proximity_behind"])
    for name, value in (("proximity", proximity), ("lane", out["lane"]), ("offroad", out["offroad"])):
        np.testing.assert_allclose(value.numpy(), expected[name].numpy(), atol=1e-12, err_msg=name)


def test_moving_the_ego_one_pixel_equals_shifting_the_image():
    images = random_frames(1, 1, seed=1)
    images[..., :3, :] = 0  # nothing at the top rows, which a shift would lose
    shifted = torch.roll(images, shifts=1, dims=-2)  # every pixel one row further back (away from the front)
    speed, length, width = torch.full((1, 1), 8.0, dtype=torch.float64), 4.5, 1.8
    moved = costs_at_pose(pixel_set(images), torch.tensor([[[1 / SPEC.px_per_m, 0.0, 0.0]]], dtype=torch.float64),
                          speed, length, width)  # fmt: skip  # the ego one pixel forward
    expected = pixel_costs(shifted, speed, length, width)
    for name in ("lane", "offroad"):
        np.testing.assert_allclose(moved[name].numpy(), expected[name].numpy(), atol=1e-12)
    proximity = torch.maximum(moved["proximity_ahead"], moved["proximity_behind"])
    np.testing.assert_allclose(proximity.numpy(), expected["proximity"].numpy(), atol=1e-12)


@pytest.mark.parametrize("softness", [0.0, 0.05])
def test_costs_are_differentiable_in_the_pose(softness):
    images = torch.zeros(1, 2, 3, SPEC.height_px, SPEC.width_px, dtype=torch.float64)
    images[..., VEHICLES, 40:50, 9:14] = 0.8  # a car ahead, slightly to the left
    images[..., LANES, :, 4] = 1.0
    images[..., OFFROAD, :, 20:] = 1.0
    pixels = pixel_set(images, SPEC, 15.0)
    speed = torch.full((1, 2), 6.0, dtype=torch.float64)
    relative = torch.tensor([[[0.3, 0.7, 0.05], [2.1, -0.4, -0.08]]], dtype=torch.float64, requires_grad=True)
    for name in ("proximity_ahead", "lane", "offroad"):
        assert torch.autograd.gradcheck(
            lambda r, name=name: costs_at_pose(pixels, r, speed, 4.5, 1.8, rear_reach_m=15.0, lateral_reach_m=2.5,
                                               softness=softness)[name], (relative,), atol=1e-6)  # fmt: skip
    ahead = costs_at_pose(pixels, relative, speed, 4.5, 1.8)["proximity_ahead"]
    ahead.sum().backward()
    assert relative.grad[0, :, 0].gt(0).all()  # moving toward the car ahead costs more


def follower_frame(gap_m: float) -> torch.Tensor:
    """A view with one car behind the ego (both 4.5 m long, same lane), its front bumper ``gap_m`` behind
    the ego's rear bumper."""
    images = torch.zeros(1, 1, 3, SPEC.height_px, SPEC.width_px, dtype=torch.float64)
    forward, lateral = SPEC.pixel_centres_m()
    front = -(2.25 + gap_m)
    rows = np.nonzero((forward <= front) & (forward >= front - 4.5))[0]
    cols = np.nonzero(np.abs(lateral) <= 0.9)[0]
    images[0, 0, VEHICLES, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = 1.0
    return images


def test_a_stopped_ego_sees_a_follower_closing_at_10_mps_15_seconds_before_contact():
    zero, stopped = torch.zeros(1, 1, 3, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    seen = follower_frame(15.0)  # 1.5 s before contact at 10 m/s
    drive = costs_at_pose(pixel_set(seen), zero, stopped, 4.5, 1.8, rear_reach_m=17.0, lateral_reach_m=2.5)
    ppuu = costs_at_pose(pixel_set(seen), zero, stopped, 4.5, 1.8)
    assert drive["proximity_behind"].item() > 0.0 and ppuu["proximity_behind"].item() == 0.0
    assert drive["proximity_ahead"].item() == 0.0


def test_wider_lateral_profile_reaches_a_car_half_a_lane_aside():
    images = torch.zeros(1, 1, 3, SPEC.height_px, SPEC.width_px, dtype=torch.float64)
    _, lateral = SPEC.pixel_centres_m()
    cols = np.nonzero((lateral >= 1.9) & (lateral <= 3.7))[0]  # a car whose flank is 1.9 m right of the centre
    images[0, 0, VEHICLES, 50:66, cols[0] : cols[-1] + 1] = 1.0
    zero, speed = torch.zeros(1, 1, 3, dtype=torch.float64), torch.full((1, 1), 5.0, dtype=torch.float64)
    assert costs_at_pose(pixel_set(images), zero, speed, 4.5, 1.8)["proximity_ahead"].item() == 0.0
    wide = costs_at_pose(pixel_set(images), zero, speed, 4.5, 1.8, lateral_reach_m=2.5)["proximity_ahead"]
    assert wide.item() > 0.0


def test_offroad_ahead_sees_the_end_of_the_ego_lane_and_not_the_neighbours():
    images = torch.zeros(1, 1, 3, SPEC.height_px, SPEC.width_px, dtype=torch.float64)
    forward, lateral = SPEC.pixel_centres_m()
    rows = np.nonzero(forward >= 12.0)[0]  # the lane ends 12 m ahead of the ego's centre
    cols = np.nonzero(np.abs(lateral) <= 1.85)[0]
    images[0, 0, OFFROAD, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = 1.0
    speed = torch.full((1, 1), 10.0, dtype=torch.float64)

    def ahead(lateral_m, reach=30.0):
        pose = torch.tensor([[[0.0, lateral_m, 0.0]]], dtype=torch.float64)
        return costs_at_pose(pixel_set(images), pose, speed, 4.5, 1.8, offroad_ahead_m=reach)

    here, aside = ahead(0.0), ahead(3.7)
    assert 0.5 < here["offroad_ahead"].item() < 0.7  # 9.75 m beyond the front of 30 m; pixels off the centre line
    assert here["offroad"].item() == 0.0  # not yet off the road
    assert aside["offroad_ahead"].item() == 0.0  # a lane to the left, the way is clear
    assert ahead(0.0, reach=0.0)["offroad_ahead"].item() == 0.0  # off unless asked for
