"""A policy on object-level features of the scene (``driving.scene``): an MLP from the feature vector to
the action, without pixels.

Input: ``features`` [B, F] in SI units (the ego's speed, heading and lane offset, the speed target, the
lanes around it and the nearest cars in each, as ``driving.scene.FEATURE_NAMES``), standardised inside by
the statistics in the ``state_mean`` / ``state_std`` buffers (``NormalisedIO``, with S = F). With ``closing``,
two inputs per car slot are added (``closing_inputs``): how fast the gap closes relative to its size (1 / time
to contact) and the time headway, the ratios on which braking turns (a standardised gap of 3 m and one of
0.2 m differ by a tenth of a sigma; their times to contact by seconds). Output: a
normalised action (the ``action_mean`` / ``action_std`` buffers), clamped, with a straight-through gradient,
to the SI ``action_limits`` (or +-``action_clamp`` sigma), as ``nn.policy.Policy``'s. With ``lane_choice``, the
action head also reads the lateral offset of the lane it drives toward (``lane_target`` [B]: that lane's centre minus
the ego's y, in lane widths; 0: keep the lane), and a second MLP on the scene's inputs predicts the imagined
objective of driving toward the left neighbour, the own lane and the right one (``lane_costs``); ``choose_lanes``
takes the cheapest that exists. A checkpoint (kind
``"scene-policy"``) holds the statistics: it is all a driver needs.
Shapes: B batch, T steps, F features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldmodel.nn.backbone import mlp
from worldmodel.nn.checkpointing import SelfContainedCheckpoint
from worldmodel.nn.policy import BoundedActions, check_action_limits

CHECKPOINT_KIND = "scene-policy"


@dataclass(frozen=True)
class ScenePolicyConfig:
    """The scene policy's shape and action range."""

    feature_names: tuple[str, ...]
    """The names of the input features, in order (``driving.scene.FEATURE_NAMES``): a driver checks them."""
    hidden: int = 256
    """Width of the hidden layers."""
    layers: int = 3
    """Hidden layers."""
    dropout: float = 0.0
    negative_slope: float = 0.2
    action_clamp: float = 3.0
    """Normalised actions are clamped to +-``action_clamp`` unless ``action_limits``."""
    action_limits: tuple[tuple[float, float], tuple[float, float]] | None = None
    """SI bounds ``((accel_low, curvature_low), (accel_high, curvature_high))`` [m/s^2, 1/m]."""
    closing: bool = False
    """Add ``closing_inputs`` (per car slot: 1 / time to contact, time headway) to the standardised features."""
    lane_choice: bool = False
    """The action head reads the offset of a target lane (``forward``'s ``lane_target``), and a second head
    (``lane_costs``) predicts the imagined objective of keeping the lane and of changing to either neighbour."""
    lane_change_margin: float = 0.01
    """``choose_lanes`` changes lane only when the change's predicted objective is this much below keeping's."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_names", tuple(str(n) for n in self.feature_names))
        if not self.feature_names or self.layers < 1 or self.hidden < 1 or not self.action_clamp > 0:
            raise ValueError("ScenePolicyConfig: feature names, layers >= 1, hidden >= 1 and action_clamp > 0")
        object.__setattr__(self, "action_limits", check_action_limits(self))

    def to_dict(self) -> dict:
        limits = None if self.action_limits is None else [list(bound) for bound in self.action_limits]
        return dict(self.__dict__) | {"feature_names": list(self.feature_names), "action_limits": limits}

    @classmethod
    def from_dict(cls, d: Mapping) -> ScenePolicyConfig:
        return cls(**dict(d))


def car_slots(feature_names: tuple[str, ...]) -> list[str]:
    """The car slots among the feature names: each ``<slot>_gap`` with a ``<slot>_dv`` (``driving.scene``)."""
    return [
        name[: -len("_gap")] for name in feature_names if name.endswith("_gap") and f"{name[:-4]}_dv" in feature_names
    ]


MAX_LANE_TARGET = 1.5
"""``lane_target`` is clipped to this [lane widths]."""
LANE_COST_SCALE = 10.0
"""``lane_costs`` are predicted in units of a tenth of the objective (a window's total is ~0.2)."""
MAX_INVERSE_TTC = 5.0
"""1 / time to contact is clipped to this [1/s] (0.2 s)."""
HEADWAY_SCALE_S = 5.0
"""Headways are divided by this [s] and clipped to [-1, 2]."""


def lane_exists(features: Tensor, feature_names: tuple[str, ...]) -> Tensor:
    """``[B, 3]`` bool: whether the left neighbour, the own lane (always) and the right neighbour exist where each
    ego is (``features`` ``[B, F]``, SI, named ``feature_names``)."""
    left, right = (features[:, feature_names.index(f"{side}_exists")] > 0 for side in ("left", "right"))
    return torch.stack([left, torch.ones_like(left), right], dim=-1)


def closing_inputs(features: Tensor, feature_names: tuple[str, ...]) -> Tensor:
    """``[..., 2 S]`` for the S ``car_slots``: ``relu(closing speed) / max(gap, 0.5 m)`` [1/s] clipped to
    ``MAX_INVERSE_TTC`` (closing: the ego faster than a car ahead, a car behind faster than the ego; slots named
    ``*behind*`` are behind) and ``gap / max(speed, 1 m/s) / HEADWAY_SCALE_S`` clipped to [-1, 2], from the SI
    ``features`` ``[..., F]`` (absent cars read as far, ``FAR_M``, and as fast as the ego)."""
    index = {name: i for i, name in enumerate(feature_names)}
    slots = car_slots(feature_names)
    gap = features[..., [index[f"{s}_gap"] for s in slots]]
    dv = features[..., [index[f"{s}_dv"] for s in slots]]
    behind = torch.tensor(["behind" in s for s in slots], device=features.device)
    closing = torch.where(behind, dv, -dv).relu()
    inverse_ttc = (closing / gap.clamp(min=0.5)).clamp(max=MAX_INVERSE_TTC)
    headway = (gap / features[..., index["speed"], None].clamp(min=1.0) / HEADWAY_SCALE_S).clamp(-1.0, 2.0)
    return torch.cat([inverse_ttc, headway], dim=-1)


class ScenePolicy(SelfContainedCheckpoint, BoundedActions, nn.Module):
    """An MLP from the scene's features to the action (deterministic)."""

    checkpoint_kind = CHECKPOINT_KIND
    config_class = ScenePolicyConfig

    def __init__(self, config: ScenePolicyConfig) -> None:
        super().__init__()
        self.config = c = config
        inputs = len(c.feature_names) + (2 * len(car_slots(c.feature_names)) if c.closing else 0)
        self.head = mlp([inputs + int(c.lane_choice)] + [c.hidden] * c.layers + [2], c.dropout, c.negative_slope)
        self.lane_head = (
            mlp([inputs] + [c.hidden] * c.layers + [3], c.dropout, c.negative_slope) if c.lane_choice else None
        )
        self.register_normalisation(len(c.feature_names))

    def _inputs(self, features: Tensor) -> Tensor:
        inputs = self.normalise_states(features)
        if self.config.closing:
            inputs = torch.cat([inputs, closing_inputs(features, self.config.feature_names)], dim=-1)
        return inputs

    def forward(self, features: Tensor, lane_target: Tensor | None = None) -> dict[str, Tensor]:
        """features [..., F] (SI), with ``lane_choice`` ``lane_target`` [...] (the target lane's centre minus the
        ego's y [lane widths], clipped to +-``MAX_LANE_TARGET``; None: 0, keep the lane) -> ``action`` [..., 2]
        normalised and clamped, ``mean`` [..., 2] before clamping."""
        inputs = self._inputs(features)
        if self.config.lane_choice:
            target = features.new_zeros(features.shape[:-1]) if lane_target is None else lane_target
            inputs = torch.cat([inputs, target.clamp(-MAX_LANE_TARGET, MAX_LANE_TARGET)[..., None]], dim=-1)
        out = self.head(inputs)
        return {"action": self.clamp_actions(out), "mean": out}

    def lane_costs(self, features: Tensor) -> Tensor:
        """features [..., F] (SI) -> ``[..., 3]``: the predicted imagined objective of
        driving toward the left neighbour, the own lane and the right neighbour (``lane_choice``)."""
        if self.lane_head is None:
            raise ValueError("this scene policy has no lane choice (ScenePolicyConfig.lane_choice)")
        return self.lane_head(self._inputs(features)) / LANE_COST_SCALE

    def choose_lanes(self, features: Tensor) -> Tensor:
        """features [B, F] -> ``[B]`` int64 lane offsets (-1 left, 0 keep, +1 right):
        the cheapest by ``lane_costs`` among the lanes that exist here, a change only when it undercuts keeping
        by ``lane_change_margin``; 0 without a lane choice."""
        if self.lane_head is None:
            return torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
        costs = torch.where(lane_exists(features, self.config.feature_names), self.lane_costs(features), torch.inf)
        costs[:, 1] -= self.config.lane_change_margin
        return costs.argmin(-1) - 1


__all__ = ["CHECKPOINT_KIND", "LANE_COST_SCALE", "MAX_LANE_TARGET", "ScenePolicy", "ScenePolicyConfig", "car_slots",
           "closing_inputs", "lane_exists"]  # fmt: skip
