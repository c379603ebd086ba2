"""Two gloo processes (torch.multiprocessing.spawn on 127.0.0.1) give the one-process loss and gradients."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from worldmodel.ssl import losses
from worldmodel.ssl.gather import gather_with_grad

LOSSES = {
    "vicreg": lambda a, b: losses.vicreg(a, b),
    "nt_xent": lambda a, b: losses.nt_xent(a, b, 0.2),
    "barlow": lambda a, b: losses.barlow_twins(a, b),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loss_and_grads(model, xa, xb, loss_fn, gather):
    model.zero_grad()
    za, zb = model(xa), model(xb)
    if gather:
        za, zb = gather_with_grad(za), gather_with_grad(zb)
    loss = loss_fn(za, zb)["loss"]
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def _worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(0)
        b, d_in, d = 8, 6, 5
        xa, xb = torch.randn(b, d_in, generator=g), torch.randn(b, d_in, generator=g)
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(d_in, 16), torch.nn.Tanh(), torch.nn.Linear(16, d))
        local = slice(rank * b // world, (rank + 1) * b // world)
        for name, loss_fn in LOSSES.items():
            full_loss, full_grads = _loss_and_grads(model, xa, xb, loss_fn, gather=False)
            loss, grads = _loss_and_grads(model, xa[local], xb[local], loss_fn, gather=True)
            for grad in grads:  # what DDP does: average the gradients over the ranks
                dist.all_reduce(grad)
                grad /= world
            assert torch.allclose(loss, full_loss, atol=1e-6), (name, loss, full_loss)
            for g1, g2 in zip(grads, full_grads, strict=True):
                assert torch.allclose(g1, g2, atol=1e-6), (name, (g1 - g2).abs().max())
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one():
    mp.spawn(_worker, args=(2, _free_port()), nprocs=2, join=True)


def test_identity_without_process_group():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x
