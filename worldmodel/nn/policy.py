"""Policies on the shared backbone: a window of ego views + states -> a normalised action (SPEC.md §4).

Input: the last Tc frames of the ego view (3 channels: lanes, vehicles, off-road) with the constant ego mask
as a 4th channel, and the Tc normalised states (as the forward model sees them); a ``Backbone`` with
``in_channels = 4`` turns them into a map [D, h, w], and an MLP (PPUU: 3 x 256) gives the action.

- ``"deterministic"``: the action is the MLP's output;
- ``"gaussian"``: the MLP gives a mean and a log-std; ``sample=True`` draws mean + std * eps
  (reparameterised, so costs back-propagate), otherwise the mean.
Actions are normalised (by the statistics in the policy's buffers, the dataset's) and clamped, with a
straight-through gradient, at +-``action_clamp`` (PPUU: 3 sigma) or, when ``action_limits`` is set, at those
bounds in SI units (e.g. the environment's kinematic limits: on i80-sim 3 sigma of acceleration is only
2.3 m/s^2 of braking, a third of what a car, and the planner, can do).

Like the forward model, a policy keeps a ``PolicyCache`` (per-frame features of its window), so that driving
for one more step encodes one new frame. Normalisation statistics live in buffers: a checkpoint is all a
driver needs.

Shapes: B batch, Tc context frames, C = 3 image channels, H, W, S state, F / h1 / w1 per-frame features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from worldmodel.nn.backbone import Backbone, BackboneConfig, mlp
from worldmodel.nn.checkpointing import SelfContainedCheckpoint
from worldmodel.nn.normalisation import NormalisedIO

POLICY_KINDS = ("deterministic", "gaussian")
CHECKPOINT_KIND = "policy"


@dataclass(frozen=True)
class PolicyConfig:
    """Policy network configuration. Presets: ``ppuu()``, ``tiny()``; ``for_model`` matches a forward model."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig.ppuu(in_channels=4, dropout=0.0))
    """The trunk: 4 input channels (3 view channels + the ego mask), the forward model's frame geometry."""
    kind: str = "deterministic"
    """``"deterministic"`` or ``"gaussian"``."""
    hidden: int = 256
    """Width of the head's hidden layers (PPUU: 3 x 256)."""
    layers: int = 3
    """Hidden layers of the head."""
    action_clamp: float = 3.0
    """Normalised actions are clamped to [-action_clamp, action_clamp] (PPUU: 3 sigma), unless ``action_limits``."""
    action_limits: tuple[tuple[float, float], tuple[float, float]] | None = None
    """SI bounds ``((accel_low, curvature_low), (accel_high, curvature_high))`` [m/s^2, 1/m] of the actions,
    replacing the sigma clamp (None: the sigma clamp)."""
    log_std_bounds: tuple[float, float] = (-5.0, 1.0)
    """Range of the Gaussian policy's log-std (normalised action units)."""

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"PolicyConfig.kind must be one of {POLICY_KINDS}, got {self.kind!r}")
        if self.backbone.in_channels != 4:
            raise ValueError(f"PolicyConfig: the backbone needs 4 input channels (view + ego mask), "
                             f"got {self.backbone.in_channels}")  # fmt: skip
        if self.layers < 1 or self.hidden < 1 or not self.action_clamp > 0:
            raise ValueError("PolicyConfig: layers >= 1, hidden >= 1 and action_clamp > 0")
        object.__setattr__(self, "action_limits", check_action_limits(self))

    @classmethod
    def for_model(cls, model_backbone: BackboneConfig, **overrides) -> PolicyConfig:
        """A policy whose trunk has the widths and context of a forward model's backbone (and no dropout)."""
        backbone = replace(model_backbone, in_channels=4, dropout=0.0)
        return cls(**({"backbone": backbone, "hidden": model_backbone.hidden} | overrides))

    @classmethod
    def ppuu(cls, **overrides) -> PolicyConfig:
        return cls.for_model(BackboneConfig.ppuu(), **overrides)

    @classmethod
    def tiny(cls, **overrides) -> PolicyConfig:
        return cls.for_model(BackboneConfig.tiny(), **overrides)

    @property
    def context_frames(self) -> int:
        return self.backbone.context_frames

    def to_dict(self) -> dict:
        limits = None if self.action_limits is None else [list(bound) for bound in self.action_limits]
        return dict(self.__dict__) | {"backbone": self.backbone.to_dict(), "log_std_bounds": list(self.log_std_bounds),
                                      "action_limits": limits}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping) -> PolicyConfig:
        d = dict(d)
        d["backbone"] = BackboneConfig.from_dict(d["backbone"])
        d["log_std_bounds"] = tuple(d["log_std_bounds"])
        if d.get("action_limits") is not None:
            d["action_limits"] = tuple(tuple(bound) for bound in d["action_limits"])
        return cls(**d)


class PolicyCache(NamedTuple):
    """The policy's current window."""

    features: tuple[Tensor, ...]
    """Tc tensors [B, F, h1, w1]: per-frame features of the window's frames (with the ego mask), oldest first."""
    states: Tensor
    """[B, Tc, S] normalised states."""
    ego_mask: Tensor
    """[B, 1, H, W] in [0, 1]: the constant 4th channel."""


def clamp_straight_through(x: Tensor, low: float | Tensor, high: float | Tensor) -> Tensor:
    """``clamp(x, low, high)`` in value; identity gradient (so a saturated policy can still learn)."""
    return x + (x.clamp(low, high) - x).detach()


class BoundedActions(NormalisedIO):
    """The action range of a policy whose config has ``action_limits`` (SI bounds, or None) and
    ``action_clamp`` (normalised bound used when there are no limits)."""

    def action_bounds(self) -> tuple[Tensor, Tensor]:
        """The lowest and highest normalised action the policy outputs: two [2] tensors."""
        if self.config.action_limits is None:
            bound = torch.full_like(self.action_std, self.config.action_clamp)
            return -bound, bound
        low, high = (self.normalise_actions(self.action_std.new_tensor(b)) for b in self.config.action_limits)
        return low, high

    def clamp_actions(self, actions: Tensor) -> Tensor:
        """Normalised actions [..., 2] clamped to ``action_bounds`` (straight-through gradient)."""
        low, high = self.action_bounds()
        return clamp_straight_through(actions, low, high)


def check_action_limits(config) -> tuple | None:
    """``config.action_limits`` as ``((accel_low, curvature_low), (accel_high, curvature_high))`` floats (None
    stays None); ValueError unless each low is below its high."""
    if config.action_limits is None:
        return None
    low, high = (tuple(float(v) for v in bound) for bound in config.action_limits)
    if len(low) != 2 or len(high) != 2 or not all(lo < hi for lo, hi in zip(low, high, strict=True)):
        raise ValueError(f"{type(config).__name__}.action_limits: ((accel_low, curvature_low), (accel_high, "
                         f"curvature_high)) with low < high, got {config.action_limits}")  # fmt: skip
    return low, high


class Policy(SelfContainedCheckpoint, BoundedActions, nn.Module):
    """A driving policy on a ``Backbone`` (4 channels), with an MLP head. ``backbone``: an existing one to
    share (its config must equal ``config.backbone``)."""

    checkpoint_kind = CHECKPOINT_KIND
    config_class = PolicyConfig

    def __init__(self, config: PolicyConfig, backbone: Backbone | None = None):
        super().__init__()
        self.config = config
        c = config.backbone
        if backbone is not None and backbone.config != c:
            raise ValueError(f"Policy: the backbone's config {backbone.config} differs from {c}")
        self.backbone = Backbone(c) if backbone is None else backbone
        n_out = 2 if config.kind == "deterministic" else 4
        sizes = [c.map_numel] + [config.hidden] * config.layers + [n_out]
        self.head = mlp(sizes, c.dropout, c.negative_slope)
        self.register_normalisation(c.state_dim)

    # ------------------------------------------------------------------ the window
    def _frames(self, images: Tensor, ego_mask: Tensor) -> Tensor:
        """images [B, T, 3, H, W], ego_mask [B, 1, H, W] -> [B, T, 4, H, W]."""
        mask = ego_mask[:, None].expand(-1, images.shape[1], -1, -1, -1)
        return torch.cat([images, mask], dim=2)

    def init_cache(self, images: Tensor, states: Tensor, ego_mask: Tensor) -> PolicyCache:
        """images: [B, T, 3, H, W] in [0, 1], states: [B, T, S] normalised (the last Tc are used), ego_mask:
        [B, H, W] in [0, 1]."""
        tc = self.config.context_frames
        if images.shape[1] < tc or states.shape[1] < tc:
            raise ValueError(f"Policy: needs {tc} context frames, got {images.shape[1]}")
        mask = ego_mask[:, None].to(images.dtype)
        features = self.backbone.encode_frames(self._frames(images[:, -tc:], mask))
        return PolicyCache(features.unbind(1), states[:, -tc:], mask)

    def encode_frame(self, image: Tensor, ego_mask: Tensor) -> Tensor:
        """Per-frame features [B, F, h1, w1] of one frame: image [B, 3, H, W] in [0, 1], ego_mask [B, 1, H, W]."""
        return self.backbone.encode_frames(self._frames(image[:, None], ego_mask))[:, 0]

    def push(self, cache: PolicyCache, image: Tensor, state: Tensor) -> PolicyCache:
        """Slide the window by one frame: image [B, 3, H, W], state [B, S]."""
        features = self.encode_frame(image, cache.ego_mask)
        states = torch.cat([cache.states[:, 1:], state[:, None]], dim=1)
        return PolicyCache((*cache.features[1:], features), states, cache.ego_mask)

    # ------------------------------------------------------------------ acting
    def reanchor(self, states: Tensor) -> Tensor:
        """Normalised states [B, Tc, S] with positions relative to any anchor -> relative to the window's last
        frame (the policy sees where it is going, never where the rollout or the road started)."""
        si = states * self.state_std + self.state_mean
        xy = si[..., :2] - si[:, -1:, :2]
        return torch.cat([xy, si[..., 2:]], dim=-1).sub(self.state_mean).div(self.state_std)

    def forward(
        self,
        cache: PolicyCache | Sequence[PolicyCache],
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict:
        """The action of the window's last frame: ``action`` [B, 2] normalised and clamped; ``mean`` [B, 2]
        (before clamping); ``log_std`` [B, 2] (Gaussian policies only). The window's states are re-anchored at
        its last frame (``reanchor``), so the same window gives the same action wherever the anchor was.

        ``cache`` may be a sequence of caches (e.g. of episodes driven in lockstep): each window is mixed over
        time on its own, then all of them go through the rest of the network as one batch, in order."""
        caches = [cache] if isinstance(cache, PolicyCache) else list(cache)
        # each window mixed on its own (it reads all Tc frames: from cache, one window at a time), then one batch:
        # for 16 windows 1.3x (tiny) / 1.2x (ppuu) faster than concatenating the frames first
        mixed = [self.backbone.mix_window(c.features) for c in caches]
        states = [self.reanchor(c.states) for c in caches]
        if len(caches) > 1:
            mixed, states = [torch.cat(mixed)], [torch.cat(states)]
        h = self.backbone.fuse_mixed(mixed[0], states[0])
        return self._outputs(self.head(h.flatten(1)), sample, generator)

    def _outputs(self, out: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> dict:
        """The head's output [..., 2 or 4] as ``forward``'s dict."""
        if self.config.kind == "deterministic":
            return {"action": self.clamp_actions(out), "mean": out}
        mean, log_std = out.chunk(2, dim=-1)
        lo, hi = self.config.log_std_bounds
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1.0)
        action = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            action = mean + log_std.exp() * noise
        return {"action": self.clamp_actions(action), "mean": mean, "log_std": log_std}

    def forward_sequence(self, images: Tensor, states: Tensor, ego_mask: Tensor) -> dict:
        """The outputs of every window of a sequence of L >= Tc frames, each frame encoded once (training on
        episodes: Tc x fewer frame encodings than windows one by one): images [B, L, 3, H, W] in [0, 1], states
        [B, L, S] normalised (positions relative to any anchor: each window is re-anchored), ego_mask [B, H, W].
        Returns ``forward``'s keys with [B, T, ...] tensors for the T = L - Tc + 1 windows ending at frames
        Tc - 1, ..., L - 1 (the mean actions: no sampling)."""
        tc = self.config.context_frames
        b, length = images.shape[:2]
        if length < tc:
            raise ValueError(f"Policy.forward_sequence: needs at least {tc} frames, got {length}")
        features = self.backbone.encode_frames(self._frames(images, ego_mask[:, None].to(images.dtype)))
        windows = rearrange(features.unfold(1, tc, 1), "b t f h w k -> (b t) k f h w")  # [B T, Tc, F, h1, w1]
        window_states = rearrange(states.unfold(1, tc, 1), "b t s k -> (b t) k s")
        h = self.backbone.fuse_mixed(self.backbone.mix_window(windows), self.reanchor(window_states))
        return self._outputs(self.head(h.flatten(1)).unflatten(0, (b, length - tc + 1)))

    def act(self, images: Tensor, states: Tensor, ego_mask: Tensor, sample: bool = False) -> Tensor:
        """One action [B, 2] (normalised) from a window: images [B, Tc, 3, H, W], states [B, Tc, S], ego_mask
        [B, H, W]."""
        return self(self.init_cache(images, states, ego_mask), sample=sample)["action"]

    # ------------------------------------------------------------------ checkpoints
    def load_backbone_weights(self, state_dict: Mapping[str, Tensor]) -> None:
        """Initialise the trunk from a 3-channel backbone's weights (SSL or forward model): every matching
        tensor is copied; the first conv's weights for the 4th (ego-mask) channel start at zero."""
        own = self.backbone.state_dict()
        for name, value in state_dict.items():
            if name not in own:
                continue
            target = own[name]
            if value.shape == target.shape:
                target.copy_(value)
            elif (
                value.dim() == 4 and value.shape[1] == 3 and target.shape[1] == 4 and value.shape[0] == target.shape[0]
            ):
                target.zero_()
                target[:, :3].copy_(value)
            else:
                raise ValueError(f"Policy.load_backbone_weights: {name} has shape {tuple(value.shape)}, "
                                 f"the policy's {tuple(target.shape)}")  # fmt: skip

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"kind={self.config.kind!r}, parameters={n / 1e6:.2f}M"


__all__ = [
    "POLICY_KINDS",
    "BoundedActions",
    "Policy",
    "PolicyCache",
    "PolicyConfig",
    "check_action_limits",
    "clamp_straight_through",
]
