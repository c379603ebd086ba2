"""Ego views at any pose, resampled from frames rendered (or predicted) at a reference pose (SPEC §9).

A world frame is centred on its reference pose (``ViewSpec``: the reference at pixel centre ``(ego_row,
ego_col)``, heading up). An ego at ``relative = kinematics.relative_pose(ego, reference)`` = (forward,
lateral [m], heading difference [rad]) sees, at its own pixel ``(r, c)`` (ego-frame centre ``f' = (ego_row -
r) / px_per_m``, ``l' = (c - ego_col) / px_per_m``), what the frame shows at

    f = df + f' cos(dpsi) - l' sin(dpsi)        l = dl + f' sin(dpsi) + l' cos(dpsi)

(the inverse of ``pose_costs``' move of the masks), read by bilinear interpolation (``F.grid_sample``,
differentiable in the image and in the pose); outside the frame the view is empty (0). At zero offset the
view is the frame itself; an offset of one pixel shifts it by one pixel.

Unlike the costs (``pose_costs`` moves the masks, never warps images), this is what the policy *observes*:
its network reads images, so they are resampled. The ego mask is not part of the frames: it is constant, the
dataset's (``PolicyCache.ego_mask``).

Shapes: images ``[..., 3, H, W]`` float in [0, 1]; relative poses ``[..., 3]`` (broadcast over the leading axes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from worldmodel.traffic.view import ViewSpec


def sampling_grid(relative: Tensor, spec: ViewSpec, dtype: torch.dtype | None = None) -> Tensor:
    """``grid_sample``'s grid ``[M, H, W, 2]`` (x = column, y = row, in [-1, 1] with ``align_corners=True``) of
    the ego's pixels in the reference frame, for relative poses ``[M, 3]``."""
    dtype = dtype or relative.dtype
    h, w = spec.height_px, spec.width_px
    rows = torch.arange(h, dtype=dtype, device=relative.device)
    cols = torch.arange(w, dtype=dtype, device=relative.device)
    fwd = ((spec.ego_row - rows) / spec.px_per_m)[:, None]  # [H, 1] f' of the ego's pixels
    lat = ((cols - spec.ego_col) / spec.px_per_m)[None, :]  # [1, W] l'
    df, dl, dpsi = (relative.to(dtype)[:, i, None, None] for i in range(3))  # [M, 1, 1]
    cos, sin = torch.cos(dpsi), torch.sin(dpsi)
    f = df + fwd * cos - lat * sin  # [M, H, W] in the reference frame [m]
    l = dl + fwd * sin + lat * cos  # noqa: E741
    row = spec.ego_row - f * spec.px_per_m
    col = spec.ego_col + l * spec.px_per_m
    return torch.stack([2 * col / (w - 1) - 1, 2 * row / (h - 1) - 1], dim=-1)  # [M, H, W, 2]


def view_at_pose(images: Tensor, relative: Tensor, spec: ViewSpec | None = None) -> Tensor:
    """The ego's view ``[..., 3, H, W]`` at ``relative`` poses ``[..., 3]`` of frames ``images`` ``[..., 3, H, W]``
    centred on the reference (see the module docstring); differentiable in both."""
    spec = ViewSpec() if spec is None else spec
    lead = torch.broadcast_shapes(images.shape[:-3], relative.shape[:-1])
    flat = images.expand(*lead, *images.shape[-3:]).reshape(-1, *images.shape[-3:])  # [M, 3, H, W]
    grid = sampling_grid(relative.expand(*lead, 3).reshape(-1, 3), spec, flat.dtype)  # [M, H, W, 2]
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(*lead, *images.shape[-3:])


__all__ = ["sampling_grid", "view_at_pose"]
