"""Normalisation statistics kept inside a model (buffers), so that a checkpoint is all a user needs.

``NormalisedIO`` is a mixin for ``nn.Module``s that read states and actions in normalised units (the forward
model, the policies): call ``register_normalisation(state_dim)`` in ``__init__``; the buffers are
``state_mean``, ``state_std`` [S] and ``action_mean``, ``action_std`` [2], saved with the state dict.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

NORMALISATION_KEYS = ("state_mean", "state_std", "action_mean", "action_std")


class NormalisedIO:
    """States and actions to and from normalised units, with statistics in buffers."""

    state_mean: Tensor
    state_std: Tensor
    action_mean: Tensor
    action_std: Tensor

    def register_normalisation(self, state_dim: int) -> None:
        """Identity statistics (mean 0, std 1) until ``set_normalisation``."""
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("action_mean", torch.zeros(2))
        self.register_buffer("action_std", torch.ones(2))

    def set_normalisation(self, stats: Mapping) -> None:
        """Store ``state_mean``, ``state_std`` [S] and ``action_mean``, ``action_std`` [2] (arrays or tensors)."""
        for name in NORMALISATION_KEYS:
            buf = getattr(self, name)
            buf.copy_(torch.as_tensor(stats[name], dtype=buf.dtype).reshape(buf.shape))

    def normalisation(self) -> dict[str, Tensor]:
        """The four statistics (for ``set_normalisation`` of another model)."""
        return {name: getattr(self, name) for name in NORMALISATION_KEYS}

    def normalise_states(self, states: Tensor) -> Tensor:
        """states: [..., S] in SI units -> normalised."""
        return (states - self.state_mean) / self.state_std

    def unnormalise_states(self, states: Tensor) -> Tensor:
        """states: [..., S] normalised -> SI units (m, m/s)."""
        return states * self.state_std + self.state_mean

    def normalise_actions(self, actions: Tensor) -> Tensor:
        """actions: [..., 2] (m/s^2, 1/m) -> normalised."""
        return (actions - self.action_mean) / self.action_std

    def unnormalise_actions(self, actions: Tensor) -> Tensor:
        """actions: [..., 2] normalised -> (m/s^2, 1/m)."""
        return actions * self.action_std + self.action_mean


__all__ = ["NORMALISATION_KEYS", "NormalisedIO"]
