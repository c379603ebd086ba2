"""Road geometry: lanes, on-ramps, the on-road test, and what the rasteriser draws.

Road frame (DESIGN §4): x [m] along travel from the road start, y [m] lateral from the left road edge,
increasing to the right. Mainline lanes ``0 .. lanes-1`` (0 leftmost); ramp ``k`` is lane ``lanes + k``,
a lane to the right of the mainline that exists over ``[start_m, end_m]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldmodel.traffic.scenario import RampConfig, RoadConfig


@dataclass(frozen=True)
class Road:
    """Geometry queries on a ``RoadConfig``, vectorised over arrays of positions."""

    config: RoadConfig

    @property
    def lanes(self) -> int:
        return self.config.lanes

    @property
    def lane_width_m(self) -> float:
        return self.config.lane_width_m

    @property
    def length_m(self) -> float:
        return self.config.length_m

    @property
    def ramps(self) -> tuple[RampConfig, ...]:
        return self.config.ramps

    @property
    def total_lanes(self) -> int:
        """Mainline lanes plus ramp lanes."""
        return self.lanes + len(self.ramps)

    @property
    def mainline_width_m(self) -> float:
        return self.lanes * self.lane_width_m

    def lane_center_y(self, lane: np.ndarray | int) -> np.ndarray:
        """Lateral position [m] of the centre line of ``lane`` (mainline or ramp lane index)."""
        return (np.asarray(lane, dtype=np.float64) + 0.5) * self.lane_width_m

    def lane_extent_x(self) -> tuple[np.ndarray, np.ndarray]:
        """Start and end [m] of every lane ``[total_lanes]`` (mainline lanes span the whole road)."""
        start = np.zeros(self.total_lanes)
        end = np.full(self.total_lanes, self.length_m)
        for k, ramp in enumerate(self.ramps):
            start[self.lanes + k] = ramp.start_m
            end[self.lanes + k] = ramp.end_m
        return start, end

    def lane_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Lane index containing the point (x, y), or -1 off the road. int64, shape of ``x``."""
        x = np.asarray(x, dtype=np.float64)
        lane = np.floor(np.asarray(y, dtype=np.float64) / self.lane_width_m).astype(np.int64)
        start, end = self.lane_extent_x()
        valid = (lane >= 0) & (lane < self.total_lanes)
        safe = np.where(valid, lane, 0)
        valid &= (x >= start[safe]) & (x <= end[safe])
        return np.where(valid, lane, -1)

    def nearest_lane(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``lane_at``, but off the road the lane (mainline or ramp) whose strip index ``y`` is nearest.
        int64, shape of ``x``."""
        lane = self.lane_at(x, y)
        nearest = np.clip(np.floor(np.asarray(y, dtype=np.float64) / self.lane_width_m), 0, self.total_lanes - 1)
        return np.where(lane >= 0, lane, nearest.astype(np.int64))

    def on_road(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where the point (x, y) lies on a lane (mainline or a ramp that exists there)."""
        return self.lane_at(x, y) >= 0

    def is_ramp_lane(self, lane: np.ndarray) -> np.ndarray:
        return np.asarray(lane) >= self.lanes

    def ramp_end_m(self, lane: np.ndarray) -> np.ndarray:
        """End [m] of each lane (``inf`` for mainline lanes): where a ramp lane stops."""
        _, end = self.lane_extent_x()
        end = end.copy()
        end[: self.lanes] = np.inf
        return end[np.asarray(lane)]

    def markings(self) -> list[tuple[float, float, float]]:
        """Painted lines as ``(y, x_start, x_end)`` segments [m]: road edges and lane boundaries."""
        lines = [(i * self.lane_width_m, 0.0, self.length_m) for i in range(self.lanes + 1)]
        for k, ramp in enumerate(self.ramps):
            y_outer = (self.lanes + k + 1) * self.lane_width_m
            lines.append((y_outer, ramp.start_m, ramp.end_m))
        return lines

    def paved_rectangles(self) -> list[tuple[float, float, float, float]]:
        """The drivable surface as ``(x0, y0, x1, y1)`` rectangles [m]; everything else is off-road."""
        rects = [(0.0, 0.0, self.length_m, self.mainline_width_m)]
        for k, ramp in enumerate(self.ramps):
            y0 = (self.lanes + k) * self.lane_width_m
            rects.append((ramp.start_m, y0, ramp.end_m, y0 + self.lane_width_m))
        return rects

    def to_dict(self) -> dict:
        """The JSON ``road`` attribute of the HDF5 formats (DESIGN §5)."""
        c = self.config
        return {
            "lanes": c.lanes,
            "lane_width_m": c.lane_width_m,
            "length_m": c.length_m,
            "section_m": list(c.section_m),
            "evaluated_m": list(c.evaluated_m),
            "speed_limit_mps": c.speed_limit_mps,
            "ramps": [
                {"name": r.name, "kind": "on", "lane": c.lanes + k, "start_m": r.start_m, "end_m": r.end_m}
                for k, r in enumerate(c.ramps)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Road:
        """Inverse of ``to_dict`` (ramp demand is not part of the file format and reads as 0)."""
        ramps = tuple(
            RampConfig(name=r.get("name", f"ramp{k}"), start_m=r["start_m"], end_m=r["end_m"], demand_veh_per_h=0.0)
            for k, r in enumerate(d.get("ramps", []))
        )
        return cls(
            RoadConfig(
                lanes=int(d["lanes"]),
                lane_width_m=float(d["lane_width_m"]),
                length_m=float(d["length_m"]),
                section_m=tuple(float(v) for v in d["section_m"]),
                evaluated_m=tuple(float(v) for v in d["evaluated_m"]),
                speed_limit_mps=float(d["speed_limit_mps"]),
                ramps=ramps,
            )
        )
