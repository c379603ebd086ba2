"""Collisions between the simulator's cars: exact oriented boxes after an exact broad phase, and a memory
that counts a contact once (a side contact that flickers as the cars wander is one collision)."""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.geometry import boxes_overlap, candidate_pairs


def overlapping_pairs(ids, x, y, psi, length, width) -> np.ndarray:
    """``[P, 2]`` sorted pairs of ``ids`` whose boxes (centre ``x, y`` [m], heading ``psi`` [rad], ``length``,
    ``width`` [m]; arrays ``[N]``) overlap."""
    c, s_ = np.abs(np.cos(psi)), np.abs(np.sin(psi))
    reach_x = 0.5 * (length * c + width * s_)  # half extents of the axis-aligned bounding box
    reach_y = 0.5 * (length * s_ + width * c)
    pairs = candidate_pairs(x, y, reach_x, reach_y)
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    hit = boxes_overlap(x[i], y[i], psi[i], length[i], width[i], x[j], y[j], psi[j], length[j], width[j])
    return np.sort(ids[pairs[hit]].astype(np.int64), axis=1)


class ContactMemory:
    """Pairs of ids in contact and the last frame they were; a pair that touches again within
    ``memory_frames`` is the same collision."""

    def __init__(self, memory_frames: int) -> None:
        self.memory = memory_frames
        self._last: dict[tuple[int, int], int] = {}  # pair of ids -> last frame in contact

    def count_new(self, pairs: np.ndarray, frame: int) -> int:
        """Record the ``[P, 2]`` pairs in contact at ``frame``; returns how many of them are new contacts."""
        new = 0
        for a, b in pairs:
            pair = (int(a), int(b))
            last = self._last.get(pair)
            new += last is None or frame - last > self.memory
            self._last[pair] = frame
        if self._last and frame % self.memory == 0:
            self._last = {p: f for p, f in self._last.items() if frame - f <= self.memory}
        return new
