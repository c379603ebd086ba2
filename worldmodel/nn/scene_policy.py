"""A policy on object-level features of the scene (``driving.scene``): an MLP from the feature vector to
the action, without pixels.

Input: ``features`` [B, F] in SI units (the ego's speed, heading and lane offset, the speed target, the
lanes around it and the nearest cars in each, as ``driving.scene.FEATURE_NAMES``), standardised inside by
the statistics in the ``state_mean`` / ``state_std`` buffers (``NormalisedIO``, with S = F). Output: a
normalised action (the ``action_mean`` / ``action_std`` buffers), clamped, with a straight-through gradient,
to the SI ``action_limits`` (or +-``action_clamp`` sigma), as ``nn.policy.Policy``'s. A checkpoint (kind
``"scene-policy"``) holds the statistics: it is all a driver needs.
Shapes: B batch, T steps, F features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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


class ScenePolicy(SelfContainedCheckpoint, BoundedActions, nn.Module):
    """An MLP from the scene's features to the action (deterministic)."""

    checkpoint_kind = CHECKPOINT_KIND
    config_class = ScenePolicyConfig

    def __init__(self, config: ScenePolicyConfig) -> None:
        super().__init__()
        self.config = c = config
        self.head = mlp([len(c.feature_names)] + [c.hidden] * c.layers + [2], c.dropout, c.negative_slope)
        self.register_normalisation(len(c.feature_names))

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        """features [..., F] (SI) -> ``action`` [..., 2] normalised and clamped, ``mean`` [..., 2] before
        clamping."""
        out = self.head(self.normalise_states(features))
        return {"action": self.clamp_actions(out), "mean": out}


__all__ = ["CHECKPOINT_KIND", "ScenePolicy", "ScenePolicyConfig"]
