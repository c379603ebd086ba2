"""Collisions between the simulator's cars: exact oriented boxes after an exact broad phase, a cheaper proof
that there are none (``BandSweep``: most steps), and a memory that counts a contact once (a side contact that
flickers as the cars wander is one collision)."""

from __future__ import annotations

import numpy as np

from worldmodel.traffic.geometry import boxes_overlap, candidate_pairs

BAND_KEY = 1.0e5  # band * BAND_KEY + x orders entries by band, then x (x stays far below this)


def overlapping_pairs(ids, x, y, psi, length, width, cos_psi=None, sin_psi=None) -> np.ndarray:
    """``[P, 2]`` sorted pairs of ``ids`` whose boxes (centre ``x, y`` [m], heading ``psi`` [rad], ``length``,
    ``width`` [m]; arrays ``[N]``) overlap. ``cos_psi``, ``sin_psi``: the heading's cosine and sine if the
    caller has them already."""
    c = np.abs(np.cos(psi) if cos_psi is None else cos_psi)
    s_ = np.abs(np.sin(psi) if sin_psi is None else sin_psi)
    reach_x = 0.5 * (length * c + width * s_)  # half extents of the axis-aligned bounding box
    reach_y = 0.5 * (length * s_ + width * c)
    pairs = candidate_pairs(x, y, reach_x, reach_y)
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    hit = boxes_overlap(x[i], y[i], psi[i], length[i], width[i], x[j], y[j], psi[j], length[j], width[j])
    return np.sort(ids[pairs[hit]].astype(np.int64), axis=1)


class BandSweep:
    """Proves, in a few array operations, that no two boxes' axis-aligned bounding boxes overlap (then no
    boxes do), or gives up (then ``overlapping_pairs`` decides).

    Each box is listed in the band of ``band_m`` height (a lane) where its lateral extent begins and, if that
    extent reaches into the next band, there too (bounded by ``half_length * |sin psi| + half_width``: it
    gives up if it could reach a third); else its second entry goes to a band of its own, far away. Within a
    band its longitudinal extent is bounded by its half diagonal. Sorted by (band, rear end), every entry
    must start after all earlier ones end. The sorted order of the last call is tried first (cars rarely
    pass each other within a lane): the test holds for any order, only its success depends on the order.
    """

    def __init__(self, band_m: float) -> None:
        self.band_m = band_m
        self._order = np.zeros(0, dtype=np.intp)
        self._alone = np.zeros(0)  # keys of the bands of their own, 100 m apart, far below the road's

    def apart(self, x, y, sin_psi, half_length, half_width, half_diagonal) -> bool:
        """True if no two boxes overlap: centres ``x, y`` [m], ``sin_psi`` of the heading, ``half_length``
        [m], ``half_width``, ``half_diagonal`` [m] (bounds: a little larger than the box's); arrays ``[N]``."""
        n = len(x)
        lateral = half_length * np.abs(sin_psi) + half_width
        if n < 2 or not lateral.max() < 0.5 * self.band_m:
            return n < 2
        if len(self._alone) < n:
            self._alone = -1e9 - 100.0 * np.arange(2 * n)
        band = np.empty((2, n))  # the band the lateral extent begins in, ends in
        np.subtract(y, lateral, out=band[0])
        np.add(y, lateral, out=band[1])
        np.floor(np.divide(band, self.band_m, out=band), out=band)
        key = band * BAND_KEY + x  # [2, n]
        key[1] = np.where(band[0] != band[1], key[1], self._alone[:n])
        rear, front = (key - half_diagonal).ravel(), (key + half_diagonal).ravel()
        if len(self._order) != 2 * n:
            self._order = np.argsort(rear)
        elif _ordered_apart(rear, front, self._order):
            return True
        else:  # sort again, from the nearly sorted last order (a few runs: fast)
            self._order = self._order[np.argsort(rear[self._order], kind="stable")]
        return _ordered_apart(rear, front, self._order)


def _ordered_apart(rear: np.ndarray, front: np.ndarray, order: np.ndarray) -> bool:
    """True if, taken in ``order``, every interval [rear, front] starts after all earlier ones end."""
    return bool((rear[order[1:]] > np.maximum.accumulate(front[order])[:-1]).all())


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
