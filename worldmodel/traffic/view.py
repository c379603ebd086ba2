"""The ego view's geometry: ``ViewSpec`` maps between ego-frame metres and view pixels.

Ego frame: ``f`` [m] forward along the ego heading, ``l`` [m] lateral, positive to the ego's right (which is
+y of the road frame when the heading is 0). The view is ``[C, H, W]`` with row 0 the farthest ahead and the
ego's centre at pixel-centre coordinates ``(ego_row, ego_col) = ((H - 1) / 2, (W - 1) / 2)``.
Pixel ``(r, c)`` has its centre at ``f = (ego_row - r) / px_per_m``, ``l = (c - ego_col) / px_per_m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Channel order of the ego view (and of ``images[:, :, c]`` in episodes.h5 and the models).
CHANNELS = ("lanes", "vehicles", "offroad")
LANES, VEHICLES, OFFROAD = 0, 1, 2


@dataclass(frozen=True)
class ViewSpec:
    """Size and resolution of the ego view (PPUU-compatible defaults: 117 x 24 px, 6 px per 3.7 m lane)."""

    height_px: int = 117
    """Rows, along the ego heading (row 0 is ahead)."""
    width_px: int = 24
    """Columns, across the ego heading."""
    px_per_m: float = 24 / 3.7 / 4
    """Resolution [px/m]: 1.6216, i.e. 0.617 m per pixel."""

    def __post_init__(self) -> None:
        if self.height_px < 3 or self.width_px < 3:
            raise ValueError(f"ViewSpec: view must be at least 3 x 3 px, got {self.height_px} x {self.width_px}")
        if not self.px_per_m > 0:
            raise ValueError(f"ViewSpec: px_per_m must be > 0, got {self.px_per_m}")

    @property
    def ego_row(self) -> float:
        return (self.height_px - 1) / 2

    @property
    def ego_col(self) -> float:
        return (self.width_px - 1) / 2

    @property
    def length_m(self) -> float:
        """Extent of the view along the heading [m]."""
        return self.height_px / self.px_per_m

    @property
    def width_m(self) -> float:
        """Extent of the view across the heading [m]."""
        return self.width_px / self.px_per_m

    def pixel_centres_m(self) -> tuple[np.ndarray, np.ndarray]:
        """Ego-frame coordinates of the pixel centres: ``forward [H]`` and ``lateral [W]`` in metres."""
        forward = (self.ego_row - np.arange(self.height_px)) / self.px_per_m
        lateral = (np.arange(self.width_px) - self.ego_col) / self.px_per_m
        return forward, lateral

    def to_dict(self) -> dict:
        return {"height_px": self.height_px, "width_px": self.width_px, "px_per_m": self.px_per_m}
