"""The encoder (shared backbone + pooling) and the projector / predictor heads of the SSL objectives.

``Encoder`` runs the shared ``Backbone`` on a view (``encode_frames`` then ``fuse``) and pools its map
``[B, D, h, w]`` to the representation ``[B, D_r]``: the mean over the map (``"mean"``, D_r = D) or the
flattened map (``"flatten"``, D_r = D h w). The representation is what the probes read and what the
forward model later reuses (through the backbone); the heads exist for the loss only and are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from einops import reduce
from torch import Tensor, nn

from worldmodel.nn.backbone import Backbone

POOLS = ("mean", "flatten")


class Encoder(nn.Module):
    """Frames + states -> representation vector, through the shared backbone (received, not built)."""

    def __init__(self, backbone: Backbone, pool: str = "mean") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"Encoder: pool must be one of {POOLS}, got {pool!r}")
        self.backbone, self.pool = backbone, pool
        c = backbone.config
        self.dim = c.feature_dim if pool == "mean" else c.map_numel

    def forward(self, images: Tensor, states: Tensor) -> Tensor:
        """images: [B, Tc, C, H, W] in [0, 1]; states: [B, Tc, S] normalised -> [B, D_r]."""
        x = self.backbone.fuse(self.backbone.encode_frames(images), states)  # B D h w
        if self.pool == "mean":
            return reduce(x, "b d h w -> b d", "mean")
        return x.flatten(1)


def mlp_head(sizes: Sequence[int], last_norm: bool = False) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU for each hidden layer, then a Linear (VICReg / BYOL / SimSiam heads).

    ``last_norm``: end with a BatchNorm1d without affine (SimSiam's projector output).
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(n_in, n_out, bias=last))
        if not last:
            layers += [nn.BatchNorm1d(n_out), nn.ReLU(inplace=True)]
    if last_norm:
        layers.append(nn.BatchNorm1d(sizes[-1], affine=False))
    return nn.Sequential(*layers)


__all__ = ["POOLS", "Encoder", "mlp_head"]
