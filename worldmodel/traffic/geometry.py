"""Oriented boxes: corners and exact overlap tests (separating axis theorem), vectorised over pairs."""

from __future__ import annotations

import numpy as np


def box_corners(x: np.ndarray, y: np.ndarray, psi: np.ndarray, length: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Corners ``[N, 4, 2]`` (front-left, front-right, rear-right, rear-left in the car's own frame, where
    "right" is +y at heading 0) of boxes centred at (x, y) [m] with heading psi [rad]."""
    c, s = np.cos(psi), np.sin(psi)
    hl, hw = 0.5 * np.asarray(length), 0.5 * np.asarray(width)
    along = np.array([1.0, 1.0, -1.0, -1.0])[None, :] * hl[:, None]  # [N, 4]
    across = np.array([-1.0, 1.0, 1.0, -1.0])[None, :] * hw[:, None]
    cx = x[:, None] + along * c[:, None] - across * s[:, None]
    cy = y[:, None] + along * s[:, None] + across * c[:, None]
    return np.stack([cx, cy], axis=-1)


def boxes_overlap(
    x1: np.ndarray,
    y1: np.ndarray,
    psi1: np.ndarray,
    len1: np.ndarray,
    wid1: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    psi2: np.ndarray,
    len2: np.ndarray,
    wid2: np.ndarray,
) -> np.ndarray:
    """True where oriented box 1 and box 2 overlap (touching counts as apart). Pairs ``[P]``.

    Separating axis theorem: two convex boxes are disjoint iff their projections are disjoint on one of
    the four edge normals (two per box)."""
    dx, dy = x2 - x1, y2 - y1
    u1 = np.stack([np.cos(psi1), np.sin(psi1)])  # [2, P] heading of box 1
    u2 = np.stack([np.cos(psi2), np.sin(psi2)])
    n1 = np.stack([-u1[1], u1[0]])
    n2 = np.stack([-u2[1], u2[0]])
    overlap = np.ones(np.shape(dx), dtype=bool)
    for axis in (u1, n1, u2, n2):
        centre = np.abs(dx * axis[0] + dy * axis[1])
        r1 = 0.5 * len1 * np.abs((u1 * axis).sum(0)) + 0.5 * wid1 * np.abs((n1 * axis).sum(0))
        r2 = 0.5 * len2 * np.abs((u2 * axis).sum(0)) + 0.5 * wid2 * np.abs((n2 * axis).sum(0))
        overlap &= centre < r1 + r2
    return overlap


def candidate_pairs(x: np.ndarray, y: np.ndarray, reach_x: np.ndarray, reach_y: np.ndarray) -> np.ndarray:
    """Pairs ``[P, 2]`` of indices whose axis-aligned boxes (centre x, y, half extents reach_x, reach_y) overlap:
    ``|dx| < reach_x_i + reach_x_j`` and ``|dy| < reach_y_i + reach_y_j``. Exact broad phase: sort by x, then
    for each box every later box within ``reach_x_i + max(reach_x)`` is a candidate (a fixed number of array
    operations, however crowded the road)."""
    n = len(x)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    stop = np.searchsorted(xs, xs + reach_x[order] + reach_x.max(), side="left")
    counts = stop - np.arange(1, n + 1)  # later boxes in the window of each box
    total = int(counts.sum())
    if total == 0:
        return np.zeros((0, 2), dtype=np.int64)
    i = np.repeat(np.arange(n), counts)
    j = i + 1 + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    a, b = order[i], order[j]
    hit = (np.abs(x[a] - x[b]) < reach_x[a] + reach_x[b]) & (np.abs(y[a] - y[b]) < reach_y[a] + reach_y[b])
    return np.stack([a[hit], b[hit]], axis=1)
