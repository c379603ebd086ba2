"""The simulator's lane-change decisions: MOBIL (``drivers.change_incentive``) for every bot whose turn it
is, both directions at once, from one IDM pass over all the (follower, leader) pairs the decisions involve."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from worldmodel.traffic.drivers import DriverSettings, best_lane, change_incentive
from worldmodel.traffic.occupancy import LANE_KEY, LaneOccupancy
from worldmodel.traffic.vehicles import LANE, V, X

_DIRECTIONS = np.array([[-1.0], [1.0]])  # lane-change directions [2, 1]: left, right

#: ``follow(f [P], leaders [P], lanes [P] int)``: IDM accelerations [P] [m/s^2] of columns ``f`` behind columns
#: ``leaders`` at their desired speed in ``lanes``, and the bumper gaps [P] [m] (``TrafficSimulation._follow``).
Follow = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def lane_change_targets(
    d: np.ndarray,
    n: int,
    cars: np.ndarray,
    occ: LaneOccupancy,
    a_own: np.ndarray,
    lead: np.ndarray,
    follow: Follow,
    settings: DriverSettings,
    mainline_lanes: int,
) -> np.ndarray:
    """The lane [k] each bot ``cars`` [k] (columns of the vehicle array ``d`` of ``n`` cars) drives in next:
    one lane left or right where the incentive is the highest (and high enough), else its own.

    ``occ``: this step's occupancy; ``a_own`` [n]: accelerations [m/s^2] in the own lane; ``lead`` [n]: the
    own lane's leaders (columns, ``>= n`` for none); ``settings``: the drivers' (arrays [k])."""
    k = len(cars)
    lane, x = d[LANE, cars], d[X, cars]
    targets = np.concatenate([lane - 1.0, lane + 1.0])  # [2k]: left, then right
    target_keys = targets * LANE_KEY + np.concatenate([x, x])
    new_leader, _ = occ.ahead(target_keys)  # [2k]
    behind = occ.behind(np.concatenate([occ.keys[cars], target_keys]))  # [3k]: old follower, new followers
    old_follower, new_follower = behind[:k], behind[k:]
    both = np.concatenate([cars, cars])
    # pairs: the old follower behind the car, behind the car's leader; the new follower behind the new
    # leader, behind the car; the car behind the new leader
    f = np.concatenate([old_follower, old_follower, new_follower, new_follower, both])
    leaders = np.concatenate([cars, lead[cars], new_leader, both, new_leader])
    lanes = np.concatenate([lane, lane, targets, targets, targets])
    a, gap = follow(f, leaders, lanes.astype(np.intp))
    has_old = old_follower < n
    old = (np.where(has_old, a[:k], 0.0), np.where(has_old, a[k : 2 * k], 0.0))
    has_new = (new_follower < n).reshape(2, k)
    new = (np.where(has_new, a[2 * k : 4 * k].reshape(2, k), 0.0),
           np.where(has_new, a[4 * k : 6 * k].reshape(2, k), 0.0))  # fmt: skip
    on_ramp = lane >= mainline_lanes
    targets = targets.reshape(2, k)
    allowed = (targets >= 0) & (targets < mainline_lanes)
    allowed[1] &= ~on_ramp  # never into a ramp
    gain = change_incentive(settings, _DIRECTIONS, on_ramp, d[V, cars], a_own[cars], a[6 * k :].reshape(2, k),
                            gap[6 * k :].reshape(2, k), gap[4 * k : 6 * k].reshape(2, k), 0.0, new, old)  # fmt: skip
    gain = np.where(allowed, gain, -np.inf)
    return best_lane(lane, [(targets[0], gain[0]), (targets[1], gain[1])])
