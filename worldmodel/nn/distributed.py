"""Devices, processes and data sharding: one process per device under ``torchrun`` (DESIGN.md §7).

``setup_distributed`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group (NCCL on CUDA, gloo on CPU); without it the
run is one process and every collective below is the identity. The device is chosen here, once.

``ResumableSampler`` is PyTorch's ``DistributedSampler`` (a seeded permutation per epoch, one shard per
rank) that can start an epoch part-way: the data order of a resumed run continues exactly where the
checkpoint left it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA (device ``local_rank``) if available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run."""

    rank: int = 0
    """Global rank of this process (0 writes the logs and checkpoints)."""
    world_size: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this machine (its CUDA device index)."""
    device: torch.device = torch.device("cpu")
    """The device of this process."""
    owns_group: bool = False
    """Whether ``setup_distributed`` joined the process group (and ``teardown_distributed`` leaves it)."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the process group if launched by torchrun (``WORLD_SIZE`` > 1) and choose the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, local_rank)
    owns_group = False
    if world_size > 1:
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
            owns_group = True
        log.info("rank %d of %d on %s (%s)", rank, world_size, chosen, dist.get_backend())
    return DistContext(rank, world_size, local_rank, chosen, owns_group)


def teardown_distributed(ctx: DistContext) -> None:
    """Leave the process group if ``setup_distributed`` joined it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: str = "auto") -> Iterator[DistContext]:
    """``setup_distributed`` for the body; when it finishes, every rank waits for the others (a gloo rank whose
    peer left the group first can abort) before ``teardown_distributed``; when it raises, no waiting."""
    ctx = setup_distributed(device)
    try:
        yield ctx
        barrier(ctx)
    finally:
        teardown_distributed(ctx)


def all_reduce_mean(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of ``x`` over ranks (a new tensor; ``x`` itself when there is one process)."""
    if not ctx.distributed:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / ctx.world_size


def all_reduce_sum(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The sum of ``x`` over ranks."""
    if not ctx.distributed:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def gather_objects(obj: object, ctx: DistContext) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose current epoch can start after ``start`` of this rank's indices.

    Epoch e's order depends only on (seed, e), as in ``DistributedSampler``; ``set_position(e, start)``
    makes the next iteration yield that epoch from index ``start`` on (later epochs start at 0).
    """

    def __init__(self, dataset: Dataset, ctx: DistContext, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, ctx.world_size, ctx.rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.start :]
        self.start = 0
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples


__all__ = [
    "DistContext",
    "ResumableSampler",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "gather_objects",
    "process_group",
    "resolve_device",
    "setup_distributed",
    "teardown_distributed",
]
