"""Ego views for many cars at once, and a top-down colour view of the road for people.

Ego views (``ViewSpec``, DESIGN §4): uint8 ``[N, 3, H, W]``, channels (lanes, vehicles, off-road), each car
centred and heading up. How one frame is made (``EgoRasterizer.render``):
1. the road's static layers (lane markings, off-road) are drawn once, at ``oversample`` x the view's
   resolution, then box-filtered down (exact area coverage: anti-aliased, sub-pixel accurate);
2. the vehicles of the frame are drawn the same way into two layers, alternating along each lane, so two
   cars that nearly touch never share a layer;
3. one ``cv2.warpAffine`` per ego crops and rotates the stacked layers (bilinear);
4. the ego's own layer is blanked over its footprint (plus the 2 px that drawing and interpolation spread
   it over), removing the ego from its own vehicles channel; the other layer is untouched, so a
   neighbour keeps every pixel unless it lies within 2 px of the ego in the same layer (in practice a car
   half-way through a lane change beside it).

Speed: OpenCV's own thread pool slows these many small operations down (1.7x here); entry points that
render in bulk call ``single_threaded_opencv()`` once (the CLI, the benchmarks, extraction workers) and
get their parallelism from worker processes instead. The large intermediate images (fine canvases, the
stacked layers, the warped views) live in buffers reused from frame to frame: a fresh array of a few MB
costs page faults worth as much as the work done on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from worldmodel.traffic.geometry import box_corners
from worldmodel.traffic.road import Road
from worldmodel.traffic.view import CHANNELS, LANES, OFFROAD, VEHICLES, ViewSpec

__all__ = [
    "CHANNELS",
    "LANES",
    "OFFROAD",
    "VEHICLES",
    "ViewSpec",
    "EgoRasterizer",
    "ego_masks",
    "reference_views",
    "render_topdown",
]

_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices in cv2
_ERASE_MARGIN_PX = 2.0
_CANVAS_MARGIN_M = 2.0  # the canvas reaches this far beyond the views' footprints (drawing, interpolation)


def single_threaded_opencv() -> None:
    """Run OpenCV in the calling thread only (process-wide; for entry points, not for library code)."""
    cv2.setNumThreads(1)


def _box_coverage(centres: np.ndarray, half_extent: np.ndarray, pixel: float) -> np.ndarray:
    """Fraction of each pixel ``[N, P]`` (1-D, width ``pixel``, centres ``[P]``) covered by ``[-h, h]``."""
    lo = np.maximum(centres[None, :] - 0.5 * pixel, -half_extent[:, None])
    hi = np.minimum(centres[None, :] + 0.5 * pixel, half_extent[:, None])
    return np.clip((hi - lo) / pixel, 0.0, 1.0)


def ego_masks(spec: ViewSpec, length_m: np.ndarray, width_m: np.ndarray) -> np.ndarray:
    """The constant ego mask of each car: exact area coverage of its footprint, uint8 ``[N, H, W]``."""
    length_m, width_m = np.atleast_1d(length_m).astype(np.float64), np.atleast_1d(width_m).astype(np.float64)
    forward, lateral = spec.pixel_centres_m()
    px = 1.0 / spec.px_per_m
    rows = _box_coverage(forward, 0.5 * length_m, px)  # [N, H]
    cols = _box_coverage(lateral, 0.5 * width_m, px)  # [N, W]
    return np.rint(255.0 * rows[:, :, None] * cols[:, None, :]).astype(np.uint8)


class _Scratch:
    """Arrays reused from call to call, by name (the returned views are overwritten by the next call)."""

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
        """A contiguous array of ``shape`` and ``dtype`` (contents undefined)."""
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        flat = self._flat.get(name)
        if flat is None or flat.size < size:
            flat = self._flat[name] = np.empty(max(size, 0 if flat is None else 2 * flat.size), dtype=np.uint8)
        return flat[:size].view(dtype).reshape(shape)


@dataclass
class _Canvas:
    """A window of the road in raster pixels: columns along x, rows along y, starting at column ``c0`` and row
    ``r0`` of the road's pixel grid (whose origin is (x_min, y_min)); origin (x0, y0) [m]."""

    x0: float
    y0: float
    cols: int
    rows: int
    c0: int
    r0: int


class EgoRasterizer:
    """Renders ego views of cars on a ``Road``. Reuse one instance: the static layers are drawn once, the
    working buffers allocated once (so one instance must not render in two threads at once)."""

    def __init__(self, road: Road, spec: ViewSpec | None = None, oversample: int = 4):
        self.road = road
        self.spec = spec or ViewSpec()
        self.oversample = oversample
        self.reach_m = 0.5 * float(np.hypot(self.spec.length_m, self.spec.width_m)) + 2.0
        self.x_min, self.x_max = -self.reach_m, road.length_m + self.reach_m
        self.y_min = -self.reach_m
        self.y_max = road.total_lanes * road.lane_width_m + self.reach_m
        # cv2 fills every fine pixel an edge touches: a polygon grows by half a fine pixel on each side, so
        # shapes are drawn that much smaller and their area coverage comes out unbiased
        self._fill_inset_m = 1.0 / (oversample * self.spec.px_per_m)
        self._scratch = _Scratch()
        self._static = self._draw_static()  # ([rows, cols], [rows, cols]) uint8: lanes, off-road
        self._scratch = _Scratch()  # (the whole road's fine canvases are not needed again)

    # -------------------------------------------------------------------------------- drawing
    def _grid(self, x0: float, x1: float, y0: float | None = None, y1: float | None = None) -> _Canvas:
        """The window [x0, x1] x [y0, y1] (default: every row) snapped outwards to the static layers' pixels."""
        ppm = self.spec.px_per_m
        c0 = int(np.floor((x0 - self.x_min) * ppm))
        c1 = int(np.ceil((x1 - self.x_min) * ppm))
        r0 = max(int(np.floor(((self.y_min if y0 is None else y0) - self.y_min) * ppm)), 0)
        r1 = int(np.ceil(((self.y_max if y1 is None else y1) - self.y_min) * ppm))
        r1 = min(r1, int(np.ceil((self.y_max - self.y_min) * ppm)))
        return _Canvas(self.x_min + c0 / ppm, self.y_min + r0 / ppm, c1 - c0, r1 - r0, c0, r0)

    def _to_fine(self, canvas: _Canvas, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Metres -> fixed-point vertex coordinates of the oversampled canvas (pixel centres at integers)."""
        s = self.oversample * self.spec.px_per_m
        u = (x - self.x_min) * s - 0.5  # on the road's grid, then moved by whole pixels: the same fixed-point
        v = (y - self.y_min) * s - 0.5  # vertices whatever the canvas, so the same pixels
        fine = np.rint(np.stack([u, v], axis=-1) * (1 << _SHIFT)).astype(np.int64)
        fine -= np.array([canvas.c0, canvas.r0]) * (self.oversample << _SHIFT)
        return fine.astype(np.int32)

    def _downsample(self, fine: np.ndarray, canvas: _Canvas, name: str) -> np.ndarray:
        """Box filter down to the view's resolution: halving steps use OpenCV's fast 2x path (10x faster
        than one 4x step, and the same area average up to uint8 rounding). Returns a scratch array ``name``."""
        factor = self.oversample
        while factor > 1 and factor % 2 == 0:
            factor //= 2
            dst = self._scratch.get(f"{name}/{factor}", (canvas.rows * factor, canvas.cols * factor))
            fine = cv2.resize(fine, dst.shape[::-1], dst=dst, interpolation=cv2.INTER_AREA)
        if factor > 1:
            dst = self._scratch.get(f"{name}/1", (canvas.rows, canvas.cols))
            fine = cv2.resize(fine, dst.shape[::-1], dst=dst, interpolation=cv2.INTER_AREA)
        return fine

    def _fine_canvas(self, canvas: _Canvas, name: str) -> np.ndarray:
        """A zeroed scratch canvas ``name`` at ``oversample`` x the view's resolution."""
        fine = self._scratch.get(name, (canvas.rows * self.oversample, canvas.cols * self.oversample))
        fine.fill(0)
        return fine

    def _draw_static(self) -> np.ndarray:
        canvas = self._grid(self.x_min, self.x_max)
        offroad = self._fine_canvas(canvas, "fine/offroad")
        offroad[:] = 255
        h = 0.5 * self._fill_inset_m
        for x0, y0, x1, y1 in self.road.paved_rectangles():
            quad = self._to_fine(
                canvas, np.array([x0 + h, x1 - h, x1 - h, x0 + h]), np.array([y0 + h, y0 + h, y1 - h, y1 - h])
            )
            cv2.fillConvexPoly(offroad, quad, 0, lineType=cv2.LINE_8, shift=_SHIFT)
        lanes = self._fine_canvas(canvas, "fine/lanes")
        half = 0.5 / self.spec.px_per_m - h  # markings one view pixel wide
        for y, x0, x1 in self.road.markings():
            quad = self._to_fine(canvas, np.array([x0, x1, x1, x0]), np.array([y - half, y - half, y + half, y + half]))
            cv2.fillConvexPoly(lanes, quad, 255, lineType=cv2.LINE_8, shift=_SHIFT)
        return self._downsample(lanes, canvas, "lanes").copy(), self._downsample(offroad, canvas, "offroad").copy()

    def _vehicle_layers(self, canvas: _Canvas, vehicles: dict, layer: np.ndarray) -> list[np.ndarray]:
        """Vehicles drawn into two layers ``[rows, cols]`` uint8 by their ``layer`` (0/1) (scratch arrays)."""
        inset = self._fill_inset_m
        corners = box_corners(vehicles["x"], vehicles["y"], vehicles["psi"], np.maximum(vehicles["length"] - inset, 0),
                              np.maximum(vehicles["width"] - inset, 0))  # fmt: skip
        pts = self._to_fine(canvas, corners[..., 0], corners[..., 1])  # [N, 4, 2]
        fine = [self._fine_canvas(canvas, "fine/0"), self._fine_canvas(canvas, "fine/1")]
        for quad, k in zip(pts, layer, strict=True):
            cv2.fillConvexPoly(fine[k], quad, 255, lineType=cv2.LINE_8, shift=_SHIFT)
        return [self._downsample(f, canvas, f"layer/{k}") for k, f in enumerate(fine)]

    def _warp(self, stack: np.ndarray, maps: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """Sample ``stack`` [rows, cols, 4] (bilinear; outside: lanes 0, off-road 255) at the view pixels of every
        ego: ``maps`` [E, 2, 3] take view pixel (c, r) to canvas pixel ``maps @ (c, r, 1)``. Returns a scratch
        array ``[E, H, W, 4]``."""
        e, h, w = shape
        warped = self._scratch.get("warped", (e, h, w, 4))
        for i in range(e):
            cv2.warpAffine(stack, maps[i], (w, h), dst=warped[i], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderValue=(0, 255, 0, 0))  # fmt: skip
        return warped

    @staticmethod
    def alternating_layers(lane: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Layer 0/1 of each car: its rank along its lane, modulo 2 (neighbours in a lane differ)."""
        order = np.lexsort((x, lane))
        sorted_lane = lane[order]
        first = np.r_[True, sorted_lane[1:] != sorted_lane[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        layer = np.empty(len(order), dtype=np.int64)
        layer[order] = (np.arange(len(order)) - group_start) % 2
        return layer

    # --------------------------------------------------------------------------------- views
    def render(self, vehicles: dict, egos: np.ndarray | None = None, all_rows: bool = False) -> np.ndarray:
        """Ego views of the cars at indices ``egos`` (default: all) among ``vehicles``.

        vehicles: dict of arrays ``[N]``: x, y, psi [rad], length, width [m], lane (for layering; -1 allowed).
        all_rows: draw on every row of the road's grid (± the views' reach), not only those the cars and views
        occupy (the plain way, for references). Returns uint8 ``[E, 3, H, W]`` (lanes, vehicles, off-road); each
        ego is left out of its own view.
        """
        spec, ppm = self.spec, self.spec.px_per_m
        n = len(vehicles["x"])
        egos = np.arange(n) if egos is None else np.asarray(egos, dtype=np.int64)
        out = np.empty((len(egos), 3, spec.height_px, spec.width_px), dtype=np.uint8)
        if len(egos) == 0:
            return out
        ex, ey, epsi = vehicles["x"][egos], vehicles["y"][egos], vehicles["psi"][egos]
        x0 = max(float(ex.min()) - self.reach_m, self.x_min)
        x1 = min(float(ex.max()) + self.reach_m, self.x_max)
        near_idx = np.nonzero((vehicles["x"] > x0 - 20.0) & (vehicles["x"] < x1 + 20.0))[0]
        sub = {k: np.asarray(vehicles[k])[near_idx] for k in ("x", "y", "psi", "length", "width")}
        # rows: the views' bounding boxes and every vehicle drawn, whole (a polygon cut by the canvas edge is
        # rasterised differently), + a margin: about the road's width instead of the views' reach around it
        sin_abs, cos_abs = np.abs(np.sin(epsi)), np.abs(np.cos(epsi))
        half_y = 0.5 * (spec.length_m * sin_abs + spec.width_m * cos_abs)
        car_half = 0.5 * np.hypot(sub["length"], sub["width"])
        y0 = min(float((ey - half_y).min()), float((sub["y"] - car_half).min(initial=np.inf))) - _CANVAS_MARGIN_M
        y1 = max(float((ey + half_y).max()), float((sub["y"] + car_half).max(initial=-np.inf))) + _CANVAS_MARGIN_M
        canvas = self._grid(x0, x1) if all_rows else self._grid(x0, x1, max(y0, self.y_min), min(y1, self.y_max))
        lane = np.asarray(vehicles.get("lane", np.zeros(n)))[near_idx]
        layer_of_near = self.alternating_layers(lane, sub["x"])
        layers = self._vehicle_layers(canvas, sub, layer_of_near)
        rows, cols = slice(canvas.r0, canvas.r0 + canvas.rows), slice(canvas.c0, canvas.c0 + canvas.cols)
        static = [plane[rows, cols] for plane in self._static]
        # the layers stacked [rows, cols, 4]: lanes, off-road, A, B
        stack = cv2.merge(static + layers, dst=self._scratch.get("stack", (canvas.rows, canvas.cols, 4)))
        layer = np.zeros(n, dtype=np.int64)
        layer[near_idx] = layer_of_near
        # affine maps from view pixels (c, r) to canvas pixels (u, v), pixel centres at integers
        cos, sin = np.cos(epsi), np.sin(epsi)
        # on the road's grid, then moved by whole pixels (exact): the same sampling whatever the canvas
        tu = ((ex - self.x_min) * ppm - 0.5 + cos * spec.ego_row + sin * spec.ego_col) - canvas.c0
        tv = ((ey - self.y_min) * ppm - 0.5 + sin * spec.ego_row - cos * spec.ego_col) - canvas.r0
        maps = np.stack([np.stack([-sin, -cos, tu], -1), np.stack([cos, -sin, tv], -1)], axis=1)  # [E, 2, 3]
        # the ego's own footprint + the spread of drawing and interpolation, as row/column ranges
        margin = _ERASE_MARGIN_PX
        half_rows = 0.5 * np.asarray(vehicles["length"])[egos] * ppm + margin
        half_cols = 0.5 * np.asarray(vehicles["width"])[egos] * ppm + margin
        r0 = np.maximum(np.ceil(spec.ego_row - half_rows), 0).astype(np.int64)
        r1 = np.floor(spec.ego_row + half_rows).astype(np.int64) + 1
        c0 = np.maximum(np.ceil(spec.ego_col - half_cols), 0).astype(np.int64)
        c1 = np.floor(spec.ego_col + half_cols).astype(np.int64) + 1
        own = layer[egos]
        e, h, w = len(egos), spec.height_px, spec.width_px
        warped = self._warp(stack, maps, (e, h, w))
        planes = [self._scratch.get(f"plane/{c}", (e * h, w)) for c in range(4)]  # lanes, off-road, A, B
        planes = cv2.split(warped.reshape(e * h, w, 4), planes)  # contiguous planes, fast
        vehicle_layers = [planes[2].reshape(e, h, w), planes[3].reshape(e, h, w)]
        for i in range(e):
            vehicle_layers[own[i]][i, r0[i] : r1[i], c0[i] : c1[i]] = 0
        out[:, LANES] = planes[0].reshape(e, h, w)
        out[:, OFFROAD] = planes[1].reshape(e, h, w)
        out[:, VEHICLES] = cv2.max(planes[2], planes[3], dst=planes[2]).reshape(e, h, w)
        return out


def reference_views(rasterizer: EgoRasterizer, vehicles: dict, egos: np.ndarray) -> np.ndarray:
    """The plain way, as a reference for tests and benchmarks: for each ego, draw every other car afresh on
    the whole canvas (every row, the ego shrunk to nothing) and warp. Equals ``EgoRasterizer.render`` wherever no two cars of the same
    layer come within 2 px of each other."""
    out = []
    n = len(vehicles["x"])
    for e in egos:
        others = np.arange(n) != e
        sub = {k: np.concatenate([np.asarray(vehicles[k])[e : e + 1], np.asarray(vehicles[k])[others]]) for k in
               ("x", "y", "psi", "length", "width")}  # fmt: skip
        sub["length"] = sub["length"].copy()
        sub["width"] = sub["width"].copy()
        sub["length"][0] = sub["width"][0] = 1e-3  # the ego drawn as (almost) nothing
        sub["lane"] = np.arange(len(sub["x"])) % 2  # any layering: the ego has no pixels to erase
        out.append(rasterizer.render(sub, np.array([0]), all_rows=True)[0])
    return np.stack(out)


# ------------------------------------------------------------------------------------------ people
#: Colours (RGB) of the top-down view.
COLOURS = {
    "grass": (58, 84, 52),
    "road": (60, 60, 64),
    "marking": (220, 220, 220),
    "car": (90, 140, 220),
    "truck": (150, 120, 200),
    "controlled": (40, 90, 255),
    "ghost": (255, 215, 0),
    "section": (120, 120, 40),
}


TOPDOWN_PX_PER_M = 4.0
#: The top-down image shows this much grass [m] beyond the outer lanes' edges.
TOPDOWN_MARGIN_M = 2.0


def topdown_pixels(x: np.ndarray, y: np.ndarray, x0: float, px_per_m: float = TOPDOWN_PX_PER_M) -> np.ndarray:
    """Where road points ``x, y`` ``[...]`` [m] are in a ``render_topdown`` image starting at ``x0`` [m]:
    ``[..., 2]`` float (column, row; pixel centres at integers)."""
    return np.stack([(np.asarray(x) - x0) * px_per_m, (np.asarray(y) + TOPDOWN_MARGIN_M) * px_per_m], -1)


def render_topdown(
    road: Road,
    vehicles: dict,
    px_per_m: float = TOPDOWN_PX_PER_M,
    x_range: tuple[float, float] | None = None,
    highlight: np.ndarray | None = None,
    ghost: dict | None = None,
    kind_names: list[str] | None = None,
) -> np.ndarray:
    """Top-down colour image ``[H, W, 3]`` uint8 of the road (x to the right, lane 0 at the top).

    vehicles: arrays x, y, psi, length, width and optional kind (indices into ``kind_names``).
    highlight: boolean ``[N]`` of controlled cars (drawn blue); ghost: one recorded car (x, y, psi, length,
    width scalars) drawn as a yellow outline.
    """
    x0, x1 = x_range or (0.0, road.length_m)
    y0, y1 = -TOPDOWN_MARGIN_M, road.total_lanes * road.lane_width_m + TOPDOWN_MARGIN_M
    cols, rows = int(np.ceil((x1 - x0) * px_per_m)), int(np.ceil((y1 - y0) * px_per_m))
    img = np.empty((rows, cols, 3), dtype=np.uint8)
    img[:] = COLOURS["grass"]

    def pts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.rint(topdown_pixels(x, y, x0, px_per_m) * (1 << _SHIFT)).astype(np.int32)

    for rx0, ry0, rx1, ry1 in road.paved_rectangles():
        cv2.fillConvexPoly(img, pts(np.array([rx0, rx1, rx1, rx0]), np.array([ry0, ry0, ry1, ry1])),
                           COLOURS["road"], shift=_SHIFT)  # fmt: skip
    sx0, sx1 = road.config.section_m
    for sx in (sx0, sx1):
        cv2.line(img, tuple(pts(np.array(sx), np.array(y0))), tuple(pts(np.array(sx), np.array(y1))),
                 COLOURS["section"], 1, cv2.LINE_AA, _SHIFT)  # fmt: skip
    for y, mx0, mx1 in road.markings():
        cv2.line(img, tuple(pts(np.array(mx0), np.array(y))), tuple(pts(np.array(mx1), np.array(y))),
                 COLOURS["marking"], 1, cv2.LINE_AA, _SHIFT)  # fmt: skip
    n = len(vehicles["x"])
    if n:
        corners = box_corners(vehicles["x"], vehicles["y"], vehicles["psi"], vehicles["length"], vehicles["width"])
        quads = pts(corners[..., 0], corners[..., 1])
        kinds = np.asarray(vehicles.get("kind", np.zeros(n, dtype=np.int64)))
        names = kind_names or ["car"]
        hl = np.zeros(n, bool) if highlight is None else np.asarray(highlight, bool)
        for i in range(n):
            name = names[int(kinds[i])] if int(kinds[i]) < len(names) else "car"
            colour = COLOURS["controlled"] if hl[i] else COLOURS.get(name, COLOURS["car"])
            cv2.fillConvexPoly(img, quads[i], colour, cv2.LINE_AA, _SHIFT)
    if ghost is not None:
        c = box_corners(
            *(np.atleast_1d(np.asarray(ghost[k], dtype=np.float64)) for k in ("x", "y", "psi", "length", "width"))
        )
        cv2.polylines(img, [pts(c[0, :, 0], c[0, :, 1])], True, COLOURS["ghost"], 2, cv2.LINE_AA, _SHIFT)
    return img
