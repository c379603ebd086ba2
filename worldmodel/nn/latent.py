"""The forward model's latent z: a diagonal Gaussian head (posterior or learned prior) and the KL between
two diagonal Gaussians.

Shapes: B batch, T time, D fused features, F per-frame features, Z latent; h, w the fused map's size.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from worldmodel.nn.backbone import BackboneConfig, activation, conv_stack, mlp


class LatentHead(nn.Module):
    """A diagonal Gaussian over z from the fused map (and, for a posterior, from the target frame).

    context: [B, D, h, w] -> 1x1 conv to ``latent_channels``; target (posterior only): per-frame features
    [B, F, h1, w1] -> convs down to [latent_channels, h, w] (``encode_targets``, batched over time);
    then an MLP on both, flattened -> (mu, logvar), each [B, Z].
    """

    def __init__(self, config: BackboneConfig, n_z: int, channels: int, posterior: bool):
        super().__init__()
        c = config
        h, w = c.map_size
        act = activation(c.dropout, c.negative_slope, maps=True)
        self.context = nn.Sequential(nn.Conv2d(c.feature_dim, channels, 1), *act)
        self.target = None
        if posterior:
            n_down = len(c.widths) - c.frame_layers
            if n_down > 0:
                layers = conv_stack([c.frame_channels] + [channels] * n_down, c.dropout, c.negative_slope, False)
            else:
                layers = [nn.Conv2d(c.frame_channels, channels, 1), *activation(c.dropout, c.negative_slope, True)]
            self.target = nn.Sequential(*layers)
        n_in = (2 if posterior else 1) * channels * h * w
        self.net = mlp([n_in, c.hidden, c.hidden, 2 * n_z], c.dropout, c.negative_slope)

    def encode_targets(self, features: Tensor) -> Tensor:
        """features: [B, T, F, h1, w1] (target frames) -> [B, T, latent_channels, h, w]."""
        b = features.shape[0]
        x = self.target(rearrange(features, "b t f h w -> (b t) f h w"))
        return rearrange(x, "(b t) c h w -> b t c h w", b=b)

    def forward(self, h: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """h: [B, D, h, w]; target: [B, latent_channels, h, w] from ``encode_targets`` (posterior)."""
        x = self.context(h).flatten(1)
        if target is not None:
            x = torch.cat([x, target.flatten(1)], dim=1)
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) per unit, same shape as the inputs [nats]."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)
