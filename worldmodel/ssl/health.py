"""Collapse indicators of a batch of embeddings ``[B (batch), D (features)]``, logged every step.

- ``normalised_std``: the std over the batch of the L2-normalised embeddings, averaged over features.
  A collapsed embedding (every sample the same vector) gives 0; embeddings spread evenly over the unit
  sphere give ~ ``1 / sqrt(D)`` (the reference logged beside it, ``normalised_std_ref``).
- ``effective_rank``: ``exp(H(p))`` with p the singular values of the embedding covariance normalised to sum
  to 1 and H the Shannon entropy (Roy & Vetterli 2007; RankMe). 1 for a one-dimensional (collapsed)
  cloud; at most min(B - 1, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def normalised_std(z: Tensor) -> float:
    """Mean over features of the batch std of ``z / |z|``. z: [B, D]."""
    return float(F.normalize(z.float(), dim=1).std(0).mean())


@torch.no_grad()
def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    """exp(entropy of the normalised singular values of Cov(z)). z: [B, D], B >= 2."""
    zc = z.double() - z.double().mean(0)
    # Cov = Zc^T Zc / (B - 1): its singular values are those of Zc squared / (B - 1), so decompose the
    # [B, D] matrix itself (cheap when B << D) rather than the [D, D] covariance.
    s = torch.linalg.svdvals(zc) ** 2 / max(z.shape[0] - 1, 1)
    if float(s.sum()) <= eps:
        return 1.0
    p = s / s.sum()
    entropy = -(p * torch.log(p.clamp_min(eps))).sum()
    return float(torch.exp(entropy))


def health_metrics(z: Tensor, prefix: str = "") -> dict[str, float]:
    """``{prefix}normalised_std``, ``{prefix}normalised_std_ref`` (1/sqrt(D)), ``{prefix}effective_rank``."""
    return {
        f"{prefix}normalised_std": normalised_std(z),
        f"{prefix}normalised_std_ref": 1.0 / math.sqrt(z.shape[1]),
        f"{prefix}effective_rank": effective_rank(z),
    }


__all__ = ["effective_rank", "health_metrics", "normalised_std"]
