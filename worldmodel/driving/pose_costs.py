"""Costs of the ego at any pose, read from world frames rendered at a reference pose (SPEC §9).

A world provider renders (or predicts) each future frame centred on a *reference* pose: the recorded car, or
the planner's current plan. The ego is elsewhere by ``relative = kinematics.relative_pose(ego, reference)``
= (forward, lateral [m], heading difference [rad]). Its costs are read by moving the cost masks of
``worldmodel.costs`` to its pose (never by warping the images): each pixel centre ``(f, l)`` of the frame is
expressed in the ego's frame,

    f' = (f - df) cos(dpsi) + (l - dl) sin(dpsi)        l' = -(f - df) sin(dpsi) + (l - dl) cos(dpsi)

and the masks are evaluated there, so the costs are differentiable in the pose (through the masks' ramps).
At zero offset they equal ``costs.pixel_costs`` (a test holds them equal).

Masks (PPUU's, SPEC §2, with two options of the ``drive`` objective):
- proximity: ``along(f') * across(l')``; ahead of the ego the along-ramp has the safe distance
  ``d = safe_time_s * v + safe_margin_m`` beyond the footprint's plateau; behind it ``max(d, rear_reach_m)``
  (``rear_reach_m``: a follower closing on a stopped ego is seen in time); across, the ramp reaches 0 at
  ``lateral_reach_m`` from the centre line (PPUU: the ego's width). Returned as two peaks, ``ahead`` (pixels
  with f' >= 0) and ``behind`` (f' < 0): PPUU's proximity is their max.
- lane and off-road: binary over the ego's length, lateral ramp reaching 0 half a lane from the centre.
Each cost is the peak over pixels of mask x channel: the max (``softness`` 0, PPUU), or a soft max
``sum(x softmax(x / softness))`` that spreads the gradient over the highest pixels.

Speed: the masks are only evaluated where a frame has something to see (``PixelSet``), in two groups: the
proximity masks at the pixels where the vehicles channel is not 0, the lane mask at those where the lanes or
off-road channel is not 0 within ``lane_rows_m`` of the reference along its heading (the lane mask is 0 beyond half the ego's length; so the lane and off-road
costs are exact while the ego stays within ``lane_rows_m - length / 2`` of the reference along it, which the
objective's barrier and the warm-started reference keep). Typically a third of the pixels or fewer.

Shapes: images ``[..., T, 3, H, W]`` float in [0, 1]; relative poses ``[..., T, 3]``; speed ``[..., T]``
[m/s]; length, width floats or broadcastable to ``[..., T]`` [m]; all broadcast together (e.g. images
``[B, 1, K, T, 3, H, W]`` against poses ``[B, P, 1, T, 3]`` for P candidate plans over K futures).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from worldmodel.costs import CostConfig
from worldmodel.traffic.view import LANES, OFFROAD, VEHICLES, ViewSpec

#: Keys of ``costs_at_pose``.
POSE_COST_NAMES = ("proximity_ahead", "proximity_behind", "lane", "offroad", "offroad_ahead")


@dataclass(frozen=True)
class Points:
    """Pixels of frames ``[..., T]``, padded to N per frame: centres ``forward``, ``lateral`` ``[..., T, N]`` [m]
    in the frame's reference pose, ``values`` ``[..., T, C, N]`` in [0, 1] (0 at padding)."""

    forward: Tensor
    lateral: Tensor
    values: Tensor

    def expand_leading(self, dims: int) -> Points:
        """The same pixels with ``dims`` axes of size 1 inserted after the first (``[B, ...]`` -> ``[B, 1, ...]``)."""
        add = lambda x: x.reshape(x.shape[:1] + (1,) * dims + x.shape[1:])  # noqa: E731
        return Points(add(self.forward), add(self.lateral), add(self.values))

    def select(self, frames: slice) -> Points:
        """The pixels of some of the frames along the first axis."""
        return Points(self.forward[frames], self.lateral[frames], self.values[frames])


@dataclass(frozen=True)
class PixelSet:
    """The pixels of frames ``[..., T]`` worth evaluating, in two groups: ``vehicles`` (C = 1: the vehicles
    channel, for the proximity costs) and ``road`` (C = 2: lanes, off-road, for the lane and off-road costs)."""

    vehicles: Points
    road: Points

    def expand_leading(self, dims: int) -> PixelSet:
        """The same pixels with ``dims`` axes of size 1 inserted after the first."""
        return PixelSet(self.vehicles.expand_leading(dims), self.road.expand_leading(dims))

    def select(self, frames: slice) -> PixelSet:
        """The pixels of some of the frames along the first axis."""
        return PixelSet(self.vehicles.select(frames), self.road.select(frames))


def _gather(flat: Tensor, keep: Tensor | None, forward: Tensor, lateral: Tensor, lead: list[int]) -> Points:
    """``Points`` of ``flat`` ``[M, C, HW]`` at the pixels ``keep`` ``[M, HW]`` (None: all), padded to the most
    kept in any frame."""
    m, c, hw = flat.shape
    if keep is None:
        n, values = hw, flat
        f, l = forward.expand(m, -1), lateral.expand(m, -1)
    else:
        n = max(int(keep.sum(1).max()) if keep.numel() else 1, 1)
        index = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :n]  # [M, N]: kept pixels first
        valid = torch.gather(keep, 1, index)
        values = torch.gather(flat, 2, index[:, None].expand(-1, c, -1)) * valid[:, None]
        f, l = forward[index], lateral[index]
    return Points(f.reshape(*lead, n), l.reshape(*lead, n), values.reshape(*lead, c, n))


def pixel_set(images: Tensor, spec: ViewSpec | None = None, lane_rows_m: float | None = None,
              road_ahead_m: float = 0.0) -> PixelSet:  # fmt: skip
    """The ``PixelSet`` of frames ``[..., T, 3, H, W]``: every pixel in both groups (``lane_rows_m`` None; the
    dense computation), or the pixels that can matter (see the module docstring); ``road_ahead_m``: road
    pixels are also kept this much further ahead (for ``offroad_ahead``)."""
    spec = ViewSpec() if spec is None else spec
    *lead, c, h, w = images.shape
    flat = images.reshape(-1, c, h * w)  # [M, 3, HW]
    rows = torch.arange(h, dtype=images.dtype, device=images.device)
    cols = torch.arange(w, dtype=images.dtype, device=images.device)
    forward = ((spec.ego_row - rows) / spec.px_per_m)[:, None].expand(h, w).reshape(-1)  # [HW]
    lateral = ((cols - spec.ego_col) / spec.px_per_m)[None, :].expand(h, w).reshape(-1)
    vehicles, road = flat[:, VEHICLES : VEHICLES + 1], flat[:, [LANES, OFFROAD]]
    if lane_rows_m is None:
        keep_vehicles = keep_road = None
    else:
        keep_vehicles = vehicles[:, 0] > 0  # [M, HW]
        keep_road = (road > 0).any(1) & (forward >= -lane_rows_m) & (forward <= lane_rows_m + road_ahead_m)
    return PixelSet(_gather(vehicles, keep_vehicles, forward, lateral, lead),
                    _gather(road, keep_road, forward, lateral, lead))  # fmt: skip


def ramp(distance: Tensor, plateau: Tensor, length: Tensor) -> Tensor:
    """1 for ``distance <= plateau``, falling linearly to 0 at ``plateau + length``: ``[...]``."""
    return ((plateau + length - distance) / length).clamp(0.0, 1.0)


def peak(values: Tensor, softness: float = 0.0) -> Tensor:
    """Peak over the last axis (pixels) ``[..., N] -> [...]``: the max (``softness`` 0), else the soft max
    ``sum(values * softmax(values / softness))`` (<= the max; equal to it as softness -> 0)."""
    if softness <= 0:
        return values.amax(-1)
    return (values * torch.softmax(values / softness, dim=-1)).sum(-1)


def costs_at_pose(
    pixels: PixelSet,
    relative: Tensor,
    speed_mps: Tensor,
    length_m: Tensor | float,
    width_m: Tensor | float,
    config: CostConfig | None = None,
    rear_reach_m: float = 0.0,
    lateral_reach_m: float | None = None,
    softness: float = 0.0,
    offroad_ahead_m: float = 0.0,
) -> dict[str, Tensor]:
    """Costs ``POSE_COST_NAMES`` ``[..., T]`` in [0, 1] of an ego at ``relative`` poses ``[..., T, 3]`` on the
    frames' ``pixels`` (see the module docstring). The speed is detached (as in PPUU, it sets the safe distance
    only); ``config`` defaults to ``CostConfig()``; ``rear_reach_m`` 0 and ``lateral_reach_m`` None give PPUU's
    masks; ``offroad_ahead_m`` > 0: ``offroad_ahead`` is the off-road in the ego's lane band ahead of its
    front, by a ramp falling from 1 at the front to 0 at ``offroad_ahead_m`` beyond it (a lane that ends,
    seen while there is time to leave it); 0 when ``offroad_ahead_m`` is 0."""
    config = CostConfig() if config is None else config
    dtype = pixels.road.values.dtype
    speed = speed_mps.detach().to(dtype)[..., None]  # [..., T, 1]
    length, width = (
        torch.as_tensor(x, dtype=dtype, device=pixels.road.values.device)[..., None] for x in (length_m, width_m)
    )
    df, dl, dpsi = (relative.to(dtype)[..., i, None] for i in range(3))  # [..., T, 1]
    cos, sin = torch.cos(dpsi), torch.sin(dpsi)

    def in_ego_frame(points: Points) -> tuple[Tensor, Tensor]:
        f_rel, l_rel = points.forward - df, points.lateral - dl  # [..., T, N]
        return f_rel * cos + l_rel * sin, l_rel * cos - f_rel * sin

    tol = config.overlap_tolerance_m
    half_length, half_width = (length - tol).clamp(min=0) / 2, (width - tol).clamp(min=0) / 2
    reach = width if lateral_reach_m is None else torch.full_like(half_width, lateral_reach_m)
    safe = config.safe_time_s * speed.abs() + config.safe_margin_m  # [..., T, 1]
    f, l = in_ego_frame(pixels.vehicles)
    across = ramp(l.abs(), half_width, (reach - half_width).clamp(min=1e-6))
    ahead = f >= 0
    along = ramp(f.abs(), half_length, torch.where(ahead, safe, safe.clamp(min=rear_reach_m)))
    near = along * across * pixels.vehicles.values[..., 0, :]  # [..., T, N]
    f, l = in_ego_frame(pixels.road)
    band = (1 - l.abs() / (config.lane_width_m / 2)).clamp(min=0)
    lane_mask = (f.abs() <= length / 2).to(dtype) * band
    if offroad_ahead_m > 0:
        front = (f - length / 2) / offroad_ahead_m
        ahead_mask = (front > 0).to(dtype) * (1 - front).clamp(min=0) * band
        offroad_ahead = peak(ahead_mask * pixels.road.values[..., 1, :], softness)
    else:
        offroad_ahead = torch.zeros_like(f[..., 0])
    return {
        "proximity_ahead": peak(near * ahead, softness),
        "proximity_behind": peak(near * ~ahead, softness),
        "lane": peak(lane_mask * pixels.road.values[..., 0, :], softness),
        "offroad": peak(lane_mask * pixels.road.values[..., 1, :], softness),
        "offroad_ahead": offroad_ahead,
    }


__all__ = ["POSE_COST_NAMES", "PixelSet", "Points", "costs_at_pose", "peak", "pixel_set", "ramp"]
