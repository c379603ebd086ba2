"""A learned traffic model: every other car's motion over the next T steps, from its neighbourhood now.

The pixel forward model must learn the other cars' motion from raster frames; on a CPU budget it learns little
beyond holding them at constant velocity, and its mean-squared-error corrections blur the cars (which the
proximity cost, a max over pixels, reads as phantom obstacles). This model works one level up, on the cars
of the current frame: for each, it predicts the displacement from constant velocity over the horizon, along
and across its heading, from what drives a car's next seconds in traffic (``FEATURES``): its speed and recent
acceleration, the gap to the car ahead in its lane and how fast it closes, its offset from the lane centre and
lateral speed, and the room left before its lane ends (an on-ramp). The frames are then rendered from the
predicted cars (``driving.worlds.TrafficWorld``), exactly as the constant-velocity world renders its guess.

Shapes: N cars, F features, T steps; displacements ``[N, T, 2]`` (along, across the car's heading now) [m].
Features and displacements are normalised with statistics of the training data (buffers of the module).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from worldmodel.nn.backbone import mlp
from worldmodel.nn.checkpointing import SelfContainedCheckpoint
from worldmodel.traffic.road import Road

CHECKPOINT_KIND = "traffic_model"
#: The per-car inputs, in order.
FEATURES = ("speed_mps", "accel_mps2", "gap_m", "closing_mps", "lane_offset_m", "lateral_mps", "lane_room_m",
            "has_leader")  # fmt: skip
#: Gaps and the room to a lane's end are capped at these [m] (no car ahead, a lane that does not end).
GAP_CAP_M, ROOM_CAP_M = 100.0, 300.0


@dataclass(frozen=True)
class TrafficModelConfig:
    """The traffic model's sizes."""

    horizon: int = 30
    """T: predicted steps (3 s at dt = 0.1 s: the planners' longest horizon)."""
    hidden: int = 128
    """Width of the hidden layers."""
    layers: int = 3
    """Linear layers of the MLP."""
    dropout: float = 0.1
    """Dropout after every hidden layer."""
    history: int = 5
    """Frames back over which the acceleration is measured."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> TrafficModelConfig:
        return cls(**d)


class TrafficModel(SelfContainedCheckpoint, nn.Module):
    """Features ``[N, F]`` (SI, ``FEATURES``) -> displacements from constant velocity ``[N, T, 2]`` [m]."""

    checkpoint_kind = CHECKPOINT_KIND
    config_class = TrafficModelConfig

    def __init__(self, config: TrafficModelConfig) -> None:
        super().__init__()
        self.config = c = config
        sizes = [len(FEATURES)] + [c.hidden] * (c.layers - 1) + [2 * c.horizon]
        self.net = mlp(sizes, c.dropout, 0.2)
        nn.init.zeros_(self.net[-1].weight)  # the untrained model is the constant-velocity world
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("feature_mean", torch.zeros(len(FEATURES)))
        self.register_buffer("feature_std", torch.ones(len(FEATURES)))
        self.register_buffer("target_std", torch.ones(c.horizon, 2))

    def set_normalisation(self, features: Tensor, targets: Tensor) -> None:
        """Statistics of training ``features`` ``[M, F]`` and ``targets`` ``[M, T, 2]``."""
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp(min=1e-3))
        self.target_std.copy_(targets.pow(2).mean(0).sqrt().clamp(min=1e-3))

    def forward(self, features: Tensor) -> Tensor:
        """``[N, F]`` -> ``[N, T, 2]`` [m]."""
        x = (features - self.feature_mean) / self.feature_std
        return self.net(x).view(-1, self.config.horizon, 2) * self.target_std

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """Mean squared error in units of the targets' scale per step (each step and axis weighs alike)."""
        return ((self(features) - targets) / self.target_std).pow(2).mean()


def car_features(now: Mapping[str, np.ndarray], before: Mapping[str, np.ndarray], road: Road, dt: float,
                 history: int) -> np.ndarray:  # fmt: skip
    """``[n, F]`` float32 features (``FEATURES``) of the cars ``now`` (arrays ``[n]``: vehicle, x, y, psi, v, length,
    lane), with ``before`` the same cars ``history`` frames earlier (those absent then: zero acceleration).
    The car ahead is the nearest one in the same lane with a larger x."""
    n = len(now["x"])
    out = np.zeros((n, len(FEATURES)), dtype=np.float64)
    x, v, lane = now["x"], now["v"], now["lane"]
    out[:, 0] = v
    earlier = dict(zip(before["vehicle"].tolist(), before["v"].tolist(), strict=True))
    v_before = np.array([earlier.get(int(k), np.nan) for k in now["vehicle"]], dtype=np.float64)
    out[:, 1] = np.where(np.isnan(v_before), 0.0, (v - v_before) / (history * dt))
    order = np.lexsort((x, lane))  # by lane, then along it: the car ahead is the next in the same lane
    ahead = np.full(n, -1)
    same = lane[order][1:] == lane[order][:-1]
    ahead[order[:-1][same]] = order[1:][same]
    has = ahead >= 0
    gap = np.full(n, GAP_CAP_M)
    gap[has] = x[ahead[has]] - x[has] - 0.5 * (now["length"][ahead[has]] + now["length"][has])
    out[:, 2] = np.clip(gap, -5.0, GAP_CAP_M)
    out[has, 3] = v[has] - v[ahead[has]]
    out[:, 4] = now["y"] - (np.clip(lane, 0, None) + 0.5) * road.lane_width_m
    out[:, 5] = v * np.sin(now["psi"])
    out[:, 6] = np.clip(road.ramp_end_m(np.clip(lane, 0, road.total_lanes - 1)) - x, -10.0, ROOM_CAP_M)
    out[:, 7] = has
    return out.astype(np.float32)


def moved_cars(cars: Mapping[str, np.ndarray], displacement: np.ndarray, dt: float) -> list[dict[str, np.ndarray]]:
    """The ``cars`` (arrays ``[n]``) at each of T steps: constant velocity plus ``displacement`` ``[n, T, 2]``
    (along, across their heading) [m]; the heading follows the direction of travel between steps, the speed is
    the distance travelled in the step over ``dt``."""
    t = displacement.shape[1]
    cos, sin = np.cos(cars["psi"]), np.sin(cars["psi"])
    k = np.arange(1, t + 1)
    along = cars["v"][:, None] * dt * k + displacement[..., 0]  # [n, T]
    across = displacement[..., 1]
    xs = cars["x"][:, None] + along * cos[:, None] - across * sin[:, None]
    ys = cars["y"][:, None] + along * sin[:, None] + across * cos[:, None]
    dx = np.diff(np.concatenate([cars["x"][:, None], xs], 1), axis=1)
    dy = np.diff(np.concatenate([cars["y"][:, None], ys], 1), axis=1)
    moving = np.hypot(dx, dy) > 0.02  # [m] per step: below it the heading is kept
    psis = np.where(moving, np.arctan2(dy, dx), cars["psi"][:, None])
    speeds = np.hypot(dx, dy) / dt
    return [dict(cars) | {"x": xs[:, s], "y": ys[:, s], "psi": psis[:, s], "v": speeds[:, s]} for s in range(t)]


__all__ = ["CHECKPOINT_KIND", "FEATURES", "TrafficModel", "TrafficModelConfig", "car_features", "moved_cars"]
