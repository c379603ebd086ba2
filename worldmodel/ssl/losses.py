"""Joint-embedding losses, written as the papers' named terms (SPEC.md §7).

Every loss takes the two branches' embeddings ``[B (batch), D (features)]`` (already gathered over the
ranks when distributed, see ``worldmodel.ssl.gather``) and returns a dict of named terms with a ``"loss"``
key: the weighted sum that is minimised. The other entries are the unweighted terms, each logged.

- ``nt_xent``: SimCLR's normalised-temperature cross-entropy, symmetric over the 2B views;
- ``barlow_twins``: cross-correlation of batch-normalised embeddings pushed to the identity;
- ``vicreg``: invariance (MSE) + variance (hinge on the std) + covariance (off-diagonal);
- ``byol``: normalised MSE (2 - 2 cos) of the online prediction to the target projection, symmetrised;
- ``simsiam``: negative cosine of the prediction to the stop-gradient projection, symmetrised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix [D, D], flattened: [D * (D - 1)]."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.2) -> dict[str, Tensor]:
    """SimCLR's NT-Xent over 2B views. z_a, z_b: [B, D] (any scale; L2-normalised here).

    For view i with positive j(i) (its other view): ``l_i = -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t))``
    with s the cosine similarity; the loss is the mean of l over all 2B views (both directions).
    Terms: ``nt_xent`` (= loss), ``positive_cosine`` (mean s_ij, logged only).
    """
    b = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)  # 2B D
    logits = z @ z.T / temperature  # 2B 2B
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    loss = F.cross_entropy(logits, positive)
    positive_cosine = (z[:b] * z[b:]).sum(1).mean().detach()
    return {"loss": loss, "nt_xent": loss.detach(), "positive_cosine": positive_cosine}


def batch_norm(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Standardise each feature over the batch (BatchNorm1d without affine, training mode): [B, D]."""
    mean = z.mean(0)
    var = z.var(0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


def barlow_twins(z_a: Tensor, z_b: Tensor, lambd: float = 0.0051) -> dict[str, Tensor]:
    """Barlow Twins. z_a, z_b: [B, D].

    ``C = BN(z_a)^T BN(z_b) / B`` [D, D]; ``on_diag = sum_i (1 - C_ii)^2``; ``off_diag = sum_{i != j} C_ij^2``;
    loss = on_diag + lambda off_diag (lambda = 0.0051).
    """
    b = z_a.shape[0]
    c = batch_norm(z_a).T @ batch_norm(z_b) / b  # D D
    on_diag = (1.0 - torch.diagonal(c)).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    loss = on_diag + lambd * off_diag
    return {"loss": loss, "on_diag": on_diag.detach(), "off_diag": off_diag.detach()}


def variance_term(z: Tensor, eps: float = 1e-4) -> Tensor:
    """VICReg's variance term of one branch: ``mean_d relu(1 - sqrt(Var_b(z_d) + eps))`` (unbiased Var)."""
    std = torch.sqrt(z.var(0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """VICReg's covariance term of one branch: ``sum_{i != j} Cov(z)_ij^2 / D`` (unbiased, centred)."""
    b, d = z.shape
    zc = z - z.mean(0)
    cov = zc.T @ zc / (b - 1)  # D D
    return off_diagonal(cov).pow(2).sum() / d


def vicreg(
    z_a: Tensor,
    z_b: Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    eps: float = 1e-4,
) -> dict[str, Tensor]:
    """VICReg (weights 25 / 25 / 1). z_a, z_b: [B, D].

    ``invariance = mean_{b,d} (z_a - z_b)^2``; ``variance`` and ``covariance`` are **averaged** over the two
    branches: ``(v(z_a) + v(z_b)) / 2``, ``(c(z_a) + c(z_b)) / 2``. The paper's equation sums both branches;
    its code halves the variance (as here) but sums the covariance, which is this convention with a
    covariance weight of 2.
    """
    invariance = F.mse_loss(z_a, z_b)
    variance = 0.5 * (variance_term(z_a, eps) + variance_term(z_b, eps))
    covariance = 0.5 * (covariance_term(z_a) + covariance_term(z_b))
    loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    return {
        "loss": loss,
        "invariance": invariance.detach(),
        "variance": variance.detach(),
        "covariance": covariance.detach(),
    }


def normalised_mse(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss per sample: ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)``. p, z: [B, D] -> [B]."""
    return 2.0 - 2.0 * F.cosine_similarity(p, z, dim=-1)


def byol(p_a: Tensor, p_b: Tensor, t_a: Tensor, t_b: Tensor) -> dict[str, Tensor]:
    """BYOL, symmetrised: online predictions p_a, p_b [B, D]; target projections t_a, t_b [B, D] (no grad).

    loss = mean_b nmse(p_a, t_b) + mean_b nmse(p_b, t_a) (the paper's L + L~).
    """
    ab = normalised_mse(p_a, t_b.detach()).mean()
    ba = normalised_mse(p_b, t_a.detach()).mean()
    return {"loss": ab + ba, "regression_ab": ab.detach(), "regression_ba": ba.detach()}


def simsiam(p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> dict[str, Tensor]:
    """SimSiam: predictions p_a, p_b and projections z_a, z_b [B, D] (the projections are stop-gradient).

    loss = D(p_a, sg(z_b)) / 2 + D(p_b, sg(z_a)) / 2 with D(p, z) = -cos(p, z) (minimum -1).
    """
    ab = -F.cosine_similarity(p_a, z_b.detach(), dim=-1).mean()
    ba = -F.cosine_similarity(p_b, z_a.detach(), dim=-1).mean()
    return {"loss": 0.5 * (ab + ba), "negative_cosine_ab": ab.detach(), "negative_cosine_ba": ba.detach()}


__all__ = [
    "barlow_twins",
    "batch_norm",
    "byol",
    "covariance_term",
    "normalised_mse",
    "nt_xent",
    "off_diagonal",
    "simsiam",
    "variance_term",
    "vicreg",
]
