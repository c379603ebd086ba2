"""The driving objective: named terms, the ppuu preset equals PPUU's costs, gradients of every term."""

import numpy as np
import pytest
import torch

from worldmodel.costs import CostConfig, discounted_mean, pixel_costs, total_cost
from worldmodel.driving import kinematics
from worldmodel.driving.objective import TERMS, ObjectiveConfig, evaluate, target_speed
from worldmodel.driving.pose_costs import pixel_set
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import RampConfig, RoadConfig
from worldmodel.traffic.view import LANES, OFFROAD, VEHICLES, ViewSpec

SPEC, DT = ViewSpec(), 0.1


def scene(t=6):
    """Frames ``[1, T, 3, H, W]`` (a car ahead, one behind, a lane marking, off-road on the right) and the ego's
    start state."""
    images = torch.zeros(1, t, 3, SPEC.height_px, SPEC.width_px, dtype=torch.float64)
    for k in range(t):  # the car ahead comes closer by a pixel per step
        images[0, k, VEHICLES, 40 + k : 48 + k, 9:15] = 0.9
        images[0, k, VEHICLES, 72 - k : 80 - k, 9:15] = 0.9  # and a follower closing in
    images[0, :, LANES, :, 9] = 1.0
    images[0, :, OFFROAD, :, 14:] = 1.0
    state = torch.tensor([[10.0, 5.0, 0.02, 8.0]], dtype=torch.float64)
    return images, state


def terms_of(config, actions, images, state, reference=None):
    states = kinematics.rollout(state, actions, DT)
    reference = states[..., :3].detach() if reference is None else reference
    return evaluate(config, pixel_set(images), reference, states, actions, torch.zeros(1, 2, dtype=torch.float64),
                    torch.tensor([12.0], dtype=torch.float64), torch.tensor([[4.5, 1.8]], dtype=torch.float64))  # fmt: skip


def test_ppuu_preset_is_ppuus_discounted_cost_along_the_reference():
    images, state = scene()
    actions = torch.zeros(1, 6, 2, dtype=torch.float64)
    terms = terms_of(ObjectiveConfig.ppuu(), actions, images, state)
    states = kinematics.rollout(state, actions, DT)
    costs = pixel_costs(images, states[..., 3], 4.5, 1.8)
    expected = discounted_mean(total_cost(costs, CostConfig()), 0.99, per_window=True)
    np.testing.assert_allclose(terms["total"].numpy(), expected.numpy(), atol=1e-12)
    assert set(terms) == {*TERMS, "total"}
    assert all(terms[name].item() == 0 for name in ("speed", "heading", "action", "jerk", "proximity_ahead"))


@pytest.mark.parametrize("term", [t for t in TERMS if t != "barrier"] + ["barrier"])
def test_every_term_has_a_gradient_that_checks(term):
    images, state = scene()
    weights = {name: 0.0 for name in TERMS} | {term: 1.0}
    # the safe distance's speed is detached (PPUU): held constant here, so that the numerical gradient agrees
    config = ObjectiveConfig.drive(**weights, softness=0.05, barrier_along_m=0.01, barrier_across_m=0.001,
                                   costs=CostConfig(safe_time_s=0.0, safe_margin_m=12.0))  # fmt: skip
    g = torch.Generator().manual_seed(1)
    actions = torch.stack([torch.randn(1, 6, generator=g, dtype=torch.float64),
                           0.01 * torch.randn(1, 6, generator=g, dtype=torch.float64)], -1).requires_grad_(True)  # fmt: skip
    reference = kinematics.rollout(state, torch.zeros_like(actions), DT)[..., :3]
    value = terms_of(config, actions, images, state, reference)[term]
    assert value.item() > 0, term  # the scene exercises it
    assert torch.autograd.gradcheck(
        lambda a: terms_of(config, a, images, state, reference)[term], (actions,), atol=1e-6
    )


def test_drive_prefers_keeping_pace_where_ppuu_prefers_stopping():
    images, state = scene()
    keep, stop = torch.zeros(1, 6, 2, dtype=torch.float64), torch.tensor([[[-6.0, 0.0]] * 6], dtype=torch.float64)
    drive, ppuu = ObjectiveConfig.drive(), ObjectiveConfig.ppuu()
    assert terms_of(drive, keep, images, state)["total"].item() < terms_of(drive, stop, images, state)["total"].item()
    assert terms_of(ppuu, stop, images, state)["total"].item() < terms_of(ppuu, keep, images, state)["total"].item()


def test_target_speed_is_the_traffic_ahead_in_the_lane_else_the_limit():
    road = Road(RoadConfig(lanes=2, lane_width_m=3.7, length_m=300.0, section_m=(0.0, 300.0), evaluated_m=(10.0, 290.0),
                           speed_limit_mps=25.0, ramps=()))  # fmt: skip
    vehicles = {"x": np.array([100.0, 120.0, 130.0, 90.0, 125.0, 200.0]), "y": np.array([1.8, 1.9, 1.5, 1.8, 5.5, 1.8]),
                "v": np.array([9.0, 4.0, 6.0, 20.0, 30.0, 1.0])}  # fmt: skip
    assert target_speed(vehicles, road) == pytest.approx(5.0)  # cars 1 and 2: ahead, in lane 0, within 40 m
    assert target_speed(vehicles, road, lookahead_m=101.0) == pytest.approx(11.0 / 3)  # car 5, 100 m ahead, too
    assert target_speed({k: v[[0, 3, 4]] for k, v in vehicles.items()}, road) == 25.0  # nobody ahead: the limit
    with pytest.raises(ValueError, match="unknown objective preset"):
        ObjectiveConfig.preset("fast")


def test_target_speed_slows_for_the_end_of_a_ramp():
    """On a ramp lane (y in [3.7, 7.4], ending at 200 m) with nobody ahead: the limit far from the end, then at
    most sqrt(2 b d) with d from the ego's front to the end; the mainline and b = None are not capped."""
    road = Road(RoadConfig(lanes=1, lane_width_m=3.7, length_m=300.0, section_m=(0.0, 300.0), evaluated_m=(10.0, 290.0),
                           speed_limit_mps=25.0, ramps=(RampConfig(start_m=0.0, end_m=200.0),)))  # fmt: skip

    def at(x: float, y: float = 5.5, **kw) -> float:
        return target_speed({"x": np.array([x]), "y": np.array([y]), "v": np.array([20.0]),
                             "length": np.array([4.0])}, road, **kw)  # fmt: skip

    assert at(0.0, lane_end_decel_mps2=3.0) == 25.0  # far from the end: sqrt(2 * 3 * 198) = 34 > the limit
    assert at(150.0) == pytest.approx(np.sqrt(2 * 1.5 * 48.0))
    assert at(199.0) == 0.0  # its front is past the end
    assert [at(x) for x in (100.0, 150.0, 180.0)] == sorted([at(x) for x in (100.0, 150.0, 180.0)], reverse=True)
    assert at(150.0, y=1.8) == 25.0 and at(150.0, lane_end_decel_mps2=None) == 25.0


@pytest.mark.parametrize("power, interior", [(1.0, False), (2.0, True)])
def test_a_convex_proximity_settles_a_squeezed_ego_between_leader_and_follower(power, interior):
    """An ego at 8 m/s between a car 12 m ahead and one 12 m behind (centre to centre): with linear ramps the
    sum of the two peaks is cheapest at an end of the gap (against one of the cars), squared it is cheapest
    in between."""
    images = torch.zeros(1, 1, 3, SPEC.height_px, SPEC.width_px, dtype=torch.float64)
    forward, lateral = SPEC.pixel_centres_m()
    cols = np.nonzero(np.abs(lateral) <= 0.9)[0]
    for centre in (12.0, -12.0):
        rows = np.nonzero(np.abs(forward - centre) <= 2.25)[0]
        images[0, 0, VEHICLES, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = 1.0
    config = ObjectiveConfig.drive(proximity_ahead=1.0, proximity_behind=0.8, proximity_power=power)
    offsets = torch.linspace(-6.0, 6.0, 49, dtype=torch.float64)
    states = torch.zeros(49, 1, 4, dtype=torch.float64)
    states[:, 0, 0], states[:, 0, 3] = offsets, 8.0  # on the reference line, moved along it
    terms = evaluate(config, pixel_set(images), torch.zeros(1, 1, 3, dtype=torch.float64), states,
                     torch.zeros(49, 1, 2, dtype=torch.float64), torch.zeros(49, 2, dtype=torch.float64),
                     torch.zeros(49, dtype=torch.float64), torch.tensor([4.5, 1.8], dtype=torch.float64))  # fmt: skip
    proximity = terms["proximity_ahead"] + terms["proximity_behind"]
    best = offsets[proximity.argmin()].abs().item()
    assert (best < 3.0) == interior, (power, best)
