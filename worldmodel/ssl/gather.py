"""All-gather with gradient: batch-wide losses under DDP equal the one-process loss on the whole batch.

``gather_with_grad(x)`` concatenates every rank's ``x`` [B_r, D] in rank order ([sum_r B_r, D]); its
backward sums the incoming gradients over the ranks and returns this rank's slice. Every rank then holds
the same full-batch loss L; the gradient reaching rank r's embeddings is ``world * dL/dz_r``, and DDP's
average over the ranks gives exactly ``dL/dtheta`` of one process on the whole batch.

Called by the training step on the objective's outputs, never inside a module's ``forward``. Without an
initialised process group (or with one process) it is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
        sizes_list = [int(s.item()) for s in sizes]
        if len(set(sizes_list)) != 1:
            raise ValueError(f"gather_with_grad: every rank needs the same batch size, got {sizes_list}")
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.size = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(x: Tensor) -> Tensor:
    """x: [B_r, ...] on each rank -> [world * B_r, ...] (rank order), differentiable (see module doc)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


__all__ = ["gather_with_grad"]
