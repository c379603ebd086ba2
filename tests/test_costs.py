"""Tests of worldmodel.costs: shapes, golden geometry, gradients, the numpy convenience."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worldmodel.costs import (
    COST_NAMES,
    CostConfig,
    lane_mask,
    pixel_costs,
    pixel_costs_numpy,
    proximity_mask,
    total_cost,
)
from worldmodel.traffic.view import LANES, OFFROAD, VEHICLES, ViewSpec

SPEC = ViewSpec()  # 117 x 24 px, ego centre at pixel (58, 11.5)
LENGTH_M, WIDTH_M = 4.5, 1.8
SMALL = ViewSpec(height_px=15, width_px=6, px_per_m=1.0)  # for gradcheck


def blank(*batch: int, spec: ViewSpec = SPEC, dtype=torch.float32) -> torch.Tensor:
    """Empty views ``[*batch, 3, H, W]``."""
    return torch.zeros(*batch, 3, spec.height_px, spec.width_px, dtype=dtype)


def forward_m(row: int, spec: ViewSpec = SPEC) -> float:
    return (spec.ego_row - row) / spec.px_per_m


def lateral_m(col: int, spec: ViewSpec = SPEC) -> float:
    return (col - spec.ego_col) / spec.px_per_m


def proximity_closed_form(f: float, l: float, speed: float) -> float:
    """The documented mask at one point, written out in scalars for the default car and config."""
    cfg = CostConfig()
    safe = cfg.safe_time_s * abs(speed) + cfg.safe_margin_m
    a_f = max(LENGTH_M - cfg.overlap_tolerance_m, 0) / 2
    a_l = max(WIDTH_M - cfg.overlap_tolerance_m, 0) / 2
    along = min(max((a_f + safe - abs(f)) / safe, 0.0), 1.0)
    across = min(max((WIDTH_M - abs(l)) / (WIDTH_M - a_l), 0.0), 1.0)
    return along * across


def test_config_to_dict_round_trip_and_validation():
    cfg = CostConfig(lane_weight=0.3)
    assert CostConfig(**cfg.to_dict()) == cfg
    assert cfg.to_dict()["safe_time_s"] == 1.5 and cfg.to_dict()["uncertainty_hinge"] == 0.5
    with pytest.raises(ValueError, match="safe_margin_m"):
        CostConfig(safe_margin_m=0.0)


def test_shapes_batch_and_batch_time():
    costs = pixel_costs(torch.rand(4, 3, 117, 24), torch.rand(4) * 10, LENGTH_M, torch.full((4,), WIDTH_M))
    assert set(costs) == set(COST_NAMES) and all(c.shape == (4,) for c in costs.values())
    lengths = torch.tensor([[4.0], [5.0]])  # per car [B, 1], speeds per step [B, T]
    costs = pixel_costs(torch.rand(2, 5, 3, 117, 24), torch.rand(2, 5) * 10, lengths, WIDTH_M)
    assert all(c.shape == (2, 5) for c in costs.values())
    assert total_cost(costs).shape == (2, 5)
    assert proximity_mask(SPEC, lengths, WIDTH_M, torch.rand(2, 5)).shape == (2, 5, 117, 24)
    assert lane_mask(SPEC, lengths, WIDTH_M).shape == (2, 1, 117, 24)
    assert proximity_mask(SPEC, LENGTH_M, WIDTH_M, 3.0).shape == (117, 24)
    with pytest.raises(ValueError, match="images must be"):
        pixel_costs(torch.rand(2, 3, 100, 24), 1.0, LENGTH_M, WIDTH_M)


def test_empty_view_costs_nothing():
    costs = pixel_costs(blank(3), torch.tensor([0.0, 5.0, 30.0]), LENGTH_M, WIDTH_M)
    for name in COST_NAMES:
        assert torch.equal(costs[name], torch.zeros(3)), name


def test_vehicle_on_ego_footprint_is_a_collision():
    images = blank(1)
    images[0, VEHICLES, 58, 12] = 1.0  # pixel centre at f = 0, l = 0.31 m: inside the plateau
    costs = pixel_costs(images, 5.0, LENGTH_M, WIDTH_M)
    assert costs["proximity"].item() == pytest.approx(1.0)
    assert costs["lane"].item() == 0.0 and costs["offroad"].item() == 0.0


def test_vehicle_beyond_safe_distance_costs_nothing():
    speed = 5.0  # safe distance 8.5 m: the ramp ends 1.75 + 8.5 = 10.25 m ahead and behind
    for row in (41, 75):  # |f| = 10.48 m
        images = blank(1)
        images[0, VEHICLES, row, 12] = 1.0
        assert pixel_costs(images, speed, LENGTH_M, WIDTH_M)["proximity"].item() == 0.0
    images = blank(1)
    images[0, VEHICLES, 42, 12] = 1.0  # |f| = 9.87 m: just inside the ramp
    assert 0.0 < pixel_costs(images, speed, LENGTH_M, WIDTH_M)["proximity"].item() < 0.1


@pytest.mark.parametrize(("row", "col"), [(50, 12), (66, 11), (58, 13), (55, 14), (58, 22)])
def test_proximity_matches_documented_formula(row, col):
    images = blank(1)
    images[0, VEHICLES, row, col] = 0.8
    got = pixel_costs(images, 5.0, LENGTH_M, WIDTH_M)["proximity"].item()
    expected = 0.8 * proximity_closed_form(forward_m(row), lateral_m(col), 5.0)
    assert got == pytest.approx(expected, abs=1e-6)


def test_proximity_golden_values():
    mask = proximity_mask(SPEC, LENGTH_M, WIDTH_M, 5.0)
    assert mask[50, 12].item() == pytest.approx((10.25 - 8 / SPEC.px_per_m) / 8.5, abs=1e-6)  # f = 4.93 m
    assert mask[58, 13].item() == pytest.approx((1.8 - 1.5 / SPEC.px_per_m) / 1.4, abs=1e-6)  # l = 0.925 m
    assert mask[58, 14].item() == pytest.approx((1.8 - 2.5 / SPEC.px_per_m) / 1.4, abs=1e-6)  # l = 1.54 m
    assert mask[58, 15:].max().item() == mask[58, :9].max().item() == 0.0  # |l| >= 2.16 m > one ego width
    assert mask[:41].max().item() == mask[76:].max().item() == 0.0  # |f| > 10.25 m: beyond the safe distance
    assert mask[58, 11].item() == mask[58, 12].item() == 1.0


def test_proximity_grows_with_speed():
    images = blank(4)
    images[:, VEHICLES, 48, 11] = 1.0  # a car 6.2 m ahead
    costs = pixel_costs(images, torch.tensor([0.0, 5.0, 10.0, 20.0]), LENGTH_M, WIDTH_M)["proximity"]
    assert costs[0].item() == 0.0
    assert torch.all(costs[1:] > costs[:-1]), costs


def test_lane_mask_reaches_zero_at_half_a_lane():
    spec = ViewSpec(height_px=9, width_px=5, px_per_m=2 / 3.7)  # columns at l = 0, +-1.85, +-3.7 m
    mask = lane_mask(spec, LENGTH_M, WIDTH_M)
    assert mask[4].tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0, 0.0])
    spec = ViewSpec(height_px=9, width_px=5, px_per_m=2 / 1.85)  # columns at l = 0, +-0.925, +-1.85 m
    mask = lane_mask(spec, LENGTH_M, WIDTH_M)
    assert mask[4].tolist() == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    assert mask[:, 2].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0]  # binary over |f| <= 2.25 m
    images = blank(1, spec=spec)
    images[0, LANES, :, 0] = 1.0  # a lane marking half a lane from the centre line
    assert pixel_costs(images, 5.0, LENGTH_M, WIDTH_M, spec=spec)["lane"].item() == 0.0


def test_offroad_beside_the_ego_costs_a_lot():
    images = blank(3)
    images[0, OFFROAD, :, 12:] = 1.0  # the ego straddles the road edge (off-road from l = 0.31 m)
    images[1, OFFROAD, :, 13:] = 1.0  # off-road starts at the ego's flank (l = 0.925 m)
    images[2, OFFROAD, :, 15:] = 1.0  # off-road from l = 2.16 m, beyond half a lane
    costs = pixel_costs(images, 5.0, LENGTH_M, WIDTH_M)
    expected = [1 - lateral_m(12) / 1.85, 1 - lateral_m(13) / 1.85, 0.0]
    assert costs["offroad"].tolist() == pytest.approx(expected, abs=1e-6)
    assert costs["offroad"][0].item() > 0.8
    assert torch.equal(costs["lane"], torch.zeros(3)) and torch.equal(costs["proximity"], torch.zeros(3))
    images = blank(1)
    images[0, OFFROAD, :50, :] = 1.0  # off-road only ahead of the ego's length: the lane mask is 0 there
    assert pixel_costs(images, 5.0, LENGTH_M, WIDTH_M)["offroad"].item() == 0.0


@pytest.mark.parametrize("name", COST_NAMES)
def test_gradcheck_wrt_images(name):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, SMALL.height_px, SMALL.width_px, generator=generator, dtype=torch.float64)
    speed, length, width = torch.tensor([1.0, 3.0], dtype=torch.float64), 4.5, 1.8
    masks = {
        "proximity": proximity_mask(SMALL, length, width, speed),
        "lane": lane_mask(SMALL, length, width),
    }
    channel = {"proximity": VEHICLES, "lane": LANES, "offroad": OFFROAD}[name]
    products = (masks["lane" if name == "offroad" else name] * images[:, channel]).flatten(1)
    top2 = products.topk(2, dim=1).values
    assert torch.all(top2[:, 0] - top2[:, 1] > 1e-3), "the test needs a unique max"
    images.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: pixel_costs(x, speed, length, width, spec=SMALL)[name], images)


def test_no_gradient_into_speed():
    images = torch.rand(2, 3, 117, 24, requires_grad=True)
    speed = torch.tensor([4.0, 8.0], requires_grad=True)
    # the mask itself depends on the speed, so it is the detach that blocks the gradient
    (mask_grad,) = torch.autograd.grad(proximity_mask(SPEC, LENGTH_M, WIDTH_M, speed).sum(), speed)
    assert mask_grad.abs().sum() > 0
    total = total_cost(pixel_costs(images, speed, LENGTH_M, WIDTH_M)).sum()
    image_grad, speed_grad = torch.autograd.grad(total, [images, speed], allow_unused=True)
    assert speed_grad is None
    assert image_grad.abs().sum() > 0


def test_total_cost_weights():
    costs = {"proximity": torch.tensor(0.5), "lane": torch.tensor(1.0), "offroad": torch.tensor(0.25)}
    assert total_cost(costs).item() == pytest.approx(0.5 + 0.2 + 0.25)
    cfg = CostConfig(proximity_weight=2.0, lane_weight=0.0, offroad_weight=4.0)
    assert total_cost(costs, cfg).item() == pytest.approx(2.0)


def test_numpy_convenience_equals_torch():
    rng = np.random.default_rng(0)
    n = 7
    images = rng.integers(0, 256, size=(n, 3, 117, 24), dtype=np.uint8)
    speed, length = rng.uniform(0, 20, n), rng.uniform(3.5, 6.0, n)
    width = rng.uniform(1.5, 2.5, n)
    got = pixel_costs_numpy(images, speed, length, width)
    assert got.shape == (n, 3) and got.dtype == np.float32
    as_tensor = [torch.tensor(v, dtype=torch.float32) for v in (speed, length, width)]
    costs = pixel_costs(torch.from_numpy(images).float() / 255, *as_tensor)
    expected = np.stack([costs[name].numpy() for name in COST_NAMES], axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    single = pixel_costs_numpy(images[:1], 3.0, 4.5, 1.8)
    assert single.shape == (1, 3)
    with pytest.raises(ValueError, match="uint8"):
        pixel_costs_numpy(images.astype(np.float32), speed, length, width)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 4),
    tolerance=st.floats(0.0, 2.0),
)
def test_batched_costs_equal_per_car_loop_and_stay_in_unit_interval(seed, n, tolerance):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 117, 24, generator=generator)
    speed = torch.rand(n, generator=generator) * 30 - 5  # reversing too: the safe distance uses |speed|
    length = torch.rand(n, generator=generator) * 10 + 0.5
    width = torch.rand(n, generator=generator) * 2.5 + 0.5
    cfg = CostConfig(overlap_tolerance_m=tolerance)
    batched = pixel_costs(images, speed, length, width, config=cfg)
    for i in range(n):
        one = pixel_costs(images[i], speed[i].item(), length[i].item(), width[i].item(), config=cfg)
        for name in COST_NAMES:
            assert batched[name][i].item() == pytest.approx(one[name].item(), abs=1e-6)
            assert 0.0 <= batched[name][i].item() <= 1.0
