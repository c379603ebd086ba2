"""The scene around the ego as a fixed-length vector of object-level features: what a policy without
pixels sees (``nn.scene_policy``), computed from what the car's sensors give now.

The planners read the other cars' current positions and velocities (the cv and traffic worlds are made
from them), the lanes and the speed target; a policy that sees the same as numbers does not have to learn
to read them off a 117 x 24 raster. Per lane slot (the ego's lane, its left and right neighbours):

- the lane: whether it exists at the ego's position, the room left before it ends (on-ramps), the lateral
  offset of its centre from the ego;
- the two nearest cars ahead and the nearest car behind whose centre is in the lane: present (0/1), bumper
  gap along the road, their speed along the road minus the ego's, lateral offset from the ego, lateral speed.

And the ego: speed, heading, offset from its lane's centre, the speed target (``objective.target_speed``) and
its difference from the speed, whether it is on a ramp, and the action it executed last step (which a
policy knows: it chose it).

All features are SI numbers (m, m/s, rad); absent cars read as far (``FAR_M``) and as fast as the ego. The
order is ``FEATURE_NAMES``; the policy standardises them with statistics of its training data.

In imagination (``training.scene_mpur``) the ego's state and last action are tensors: ``features_at`` computes
the same numbers (``scene_features``, so a policy sees in training exactly what it sees driving) and attaches
their exact derivatives in the ego's state and last action (``scene_jacobian``): the features are piecewise
smooth in them (which lane and which cars are nearest changes in jumps; gaps, offsets and speed differences
move smoothly in between).
Shape: ``scene_features`` gives ``[F]`` float32, F = ``len(FEATURE_NAMES)``; ``features_at`` ``[B, F]``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worldmodel.driving.objective import target_speed

FAR_M = 60.0
"""Gaps are clipped to this [m]; absent cars are this far."""
ROOM_M = 200.0
"""The room left in a lane is clipped to this [m] (mainline lanes: always this)."""
LANES = ("left", "own", "right")
CARS = ("ahead1", "ahead2", "behind")
CAR_FEATURES = ("present", "gap", "dv", "dy", "vy")
EGO_FEATURES = ("speed", "heading", "lane_offset", "target_speed", "speed_error", "on_ramp", "last_accel",
                "last_curvature")  # fmt: skip
FEATURE_NAMES = (*EGO_FEATURES,
                 *(f"{lane}_{name}" for lane in LANES for name in ("exists", "room", "centre_dy")),
                 *(f"{lane}_{car}_{name}" for lane in LANES for car in CARS for name in CAR_FEATURES))  # fmt: skip


def scene_features(vehicles: dict, road, last_action: np.ndarray | None = None) -> np.ndarray:
    """The features (``FEATURE_NAMES``) of the ego, row 0 of ``vehicles`` (as ``ReplaySimulation.vehicles()``),
    on ``road``; ``last_action`` [2]: its last executed (accel, curvature) (None: zero)."""
    x, y, v, psi = (np.asarray(vehicles[k], dtype=np.float64) for k in ("x", "y", "v", "psi"))
    length = np.asarray(vehicles["length"], dtype=np.float64)
    ego_lane = int(road.nearest_lane(x[:1], y[:1])[0])
    centre = float(road.lane_center_y(ego_lane))
    target = target_speed(vehicles, road)
    last = np.zeros(2) if last_action is None else np.asarray(last_action, dtype=np.float64)
    out = [v[0], psi[0], y[0] - centre, target, target - v[0], float(road.is_ramp_lane(ego_lane)), last[0], last[1]]
    start, end = road.lane_extent_x()
    others_lane = road.nearest_lane(x[1:], y[1:])
    vx, vy = v * np.cos(psi), v * np.sin(psi)
    gap_ahead = x[1:] - x[0] - 0.5 * (length[1:] + length[0])
    lanes, cars = [], []
    for lane in (ego_lane - 1, ego_lane, ego_lane + 1):
        lane_centre = float(road.lane_center_y(lane))
        exists = 0 <= lane < road.total_lanes and start[lane] <= x[0] <= end[lane]
        room = min(float(end[lane]) - x[0], ROOM_M) if exists and road.is_ramp_lane(lane) else ROOM_M
        lanes += [float(exists), room if exists else 0.0, lane_centre - y[0]]
        inside = np.nonzero(others_lane == lane)[0]
        ahead = inside[x[1:][inside] > x[0]]
        ahead = ahead[np.argsort(x[1:][ahead], kind="stable")][:2]
        behind = inside[x[1:][inside] <= x[0]]
        behind = behind[np.argsort(-x[1:][behind], kind="stable")][:1]
        for chosen, sign in ((ahead, 1.0), (ahead[1:], 1.0), (behind, -1.0)):
            if len(chosen) == 0:
                cars += [0.0, FAR_M, 0.0, lane_centre - y[0], 0.0]
                continue
            k = int(chosen[0]) + 1
            gap = gap_ahead[k - 1] if sign > 0 else -(x[k] - x[0]) - 0.5 * (length[k] + length[0])
            cars += [1.0, float(np.clip(gap, -5.0, FAR_M)), vx[k] - vx[0], y[k] - y[0], vy[k]]
    return np.asarray(out + lanes + cars, dtype=np.float32)


#: What ``scene_jacobian`` differentiates by: the ego's state (x, y, psi, v) and its last action (accel, curvature).
INPUTS = ("x", "y", "psi", "v", "last_accel", "last_curvature")


def scene_jacobian(features: np.ndarray) -> np.ndarray:
    """``[..., F, 6]``: the derivatives of ``features`` ``[..., F]`` (``scene_features``' values) in ``INPUTS``,
    where they are smooth. Ego: speed, heading, offset, last action move one to one (the speed error against
    the speed); lanes: the centres' offsets move against y, a ramp's room against x (below ``ROOM_M``); cars
    (present): gaps against x (ahead) or with it (behind) while not clipped, speed differences with the ego's
    velocity along x, offsets against y (an absent car's offset is its lane centre's)."""
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    x, y, psi, v, accel, curvature = range(6)
    out = np.zeros((*features.shape, 6), dtype=np.float32)
    for name, wrt, value in (("speed", v, 1.0), ("heading", psi, 1.0), ("lane_offset", y, 1.0),
                             ("speed_error", v, -1.0), ("last_accel", accel, 1.0),
                             ("last_curvature", curvature, 1.0)):  # fmt: skip
        out[..., index[name], wrt] = value
    speed, heading = features[..., index["speed"]], features[..., index["heading"]]
    for lane in LANES:
        out[..., index[f"{lane}_centre_dy"], y] = -1.0
        room = features[..., index[f"{lane}_room"]]
        out[..., index[f"{lane}_room"], x] = -1.0 * ((features[..., index[f"{lane}_exists"]] > 0) & (room < ROOM_M))
        for car in CARS:
            name = f"{lane}_{car}"
            present = features[..., index[f"{name}_present"]] > 0
            gap = features[..., index[f"{name}_gap"]]
            sign = 1.0 if car == "behind" else -1.0
            out[..., index[f"{name}_gap"], x] = sign * (present & (gap > -5.0) & (gap < FAR_M))
            out[..., index[f"{name}_dv"], v] = -np.cos(heading) * present
            out[..., index[f"{name}_dv"], psi] = speed * np.sin(heading) * present
            out[..., index[f"{name}_dy"], y] = -1.0
    return out


def features_at(state: Tensor, last_action: Tensor, others: list[dict], roads: list, car_size: Tensor) -> Tensor:
    """The scene features ``[B, F]`` of B egos at ``state`` ``[B, 4]`` (x, y, psi, v) having executed
    ``last_action`` ``[B, 2]`` (SI), among ``others[b]`` (the other cars, arrays ``[n]`` x, y, psi, v, length as
    ``worlds.recorded_others``) on ``roads[b]``, ``car_size`` ``[B, 2]`` (length, width): ``scene_features``'
    values, with gradients in ``state`` and ``last_action`` through ``scene_jacobian``."""
    inputs = torch.cat([state, last_action], dim=-1)  # [B, 6]
    known = inputs.detach().double().cpu().numpy()
    size = car_size.detach().double().cpu().numpy()
    rows = []
    for b, (cars, road) in enumerate(zip(others, roads, strict=True)):
        ego = dict(zip(("x", "y", "psi", "v"), known[b, :4], strict=True)) | {"length": size[b, 0]}
        vehicles = {name: np.concatenate([[ego[name]], cars[name]]) for name in ("x", "y", "psi", "v", "length")}
        rows.append(scene_features(vehicles, road, known[b, 4:]))
    values = np.stack(rows)
    if not inputs.requires_grad:  # detached inputs (``scene_drive`` without feature_gradient), or no_grad
        return torch.from_numpy(values).to(inputs)
    jacobian = torch.from_numpy(scene_jacobian(values)).to(inputs)  # [B, F, 6]
    moved = inputs - inputs.detach()  # zero, with the inputs' gradient
    return torch.from_numpy(values).to(inputs) + torch.einsum("bfi,bi->bf", jacobian, moved)


__all__ = ["CAR_FEATURES", "EGO_FEATURES", "FAR_M", "FEATURE_NAMES", "INPUTS", "features_at", "scene_features",
           "scene_jacobian"]  # fmt: skip
