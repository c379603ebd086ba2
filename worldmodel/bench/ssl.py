"""``worldmodel bench ssl``: training throughput of every SSL method on the same backbone, side by side.

One process; each method's objective is built around its own ``ppuu()`` backbone; steps are interleaved
(round-robin over the methods, after one warm-up step each) so that a load change on the machine hits
every method alike. A step is forward + backward + AdamW step on a batch of 32 windows, two views each of
Tc = 20 frames, views already drawn (the view transform is timed apart, ``views_per_s``).
``images_per_s`` counts input frames: 2 views x 32 windows x Tc frames per step.
"""

from __future__ import annotations

import time

import torch

from worldmodel.bench.pipeline import machine
from worldmodel.nn.backbone import Backbone, BackboneConfig
from worldmodel.ssl.objectives import METHODS, SSLConfig, build_objective
from worldmodel.ssl.train import SSL_DROPOUT
from worldmodel.ssl.views import ViewConfig, make_views


def bench_ssl(quick: bool = False, batch_size: int = 32, seed: int = 0, backbone: BackboneConfig | None = None) -> dict:
    """{"images_per_s": {method: ...}, "step_s": {method: ...}, "views_per_s", "batch_size", "machine", ...}."""
    config = backbone or BackboneConfig.ppuu(dropout=SSL_DROPOUT)
    tc, b = config.context_frames, batch_size
    g = torch.Generator().manual_seed(seed)
    view_config = ViewConfig()
    images = torch.rand(b, tc + view_config.max_offset, config.in_channels, config.height, config.width, generator=g)
    states = torch.randn(b, tc + view_config.max_offset, config.state_dim, generator=g)
    tick = time.perf_counter()
    view_a, view_b = make_views(images, states, tc, torch.zeros(4), torch.ones(4), view_config, g)
    views_s = time.perf_counter() - tick
    torch.manual_seed(seed)
    runs = {}
    for method in METHODS:
        objective = build_objective(Backbone(config), SSLConfig(method=method))
        runs[method] = (objective, torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], 1e-4))

    def step(method: str) -> float:
        objective, optimizer = runs[method]
        start = time.perf_counter()
        terms = objective.loss(objective(view_a, view_b))
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        objective.after_step(1, 100)
        return time.perf_counter() - start

    for method in METHODS:  # warm-up
        step(method)
    rounds = 1 if quick else 3
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(rounds):
        for method in METHODS:
            times[method].append(step(method))
    step_s = {m: min(t) for m, t in times.items()}
    return {
        "images_per_s": {m: 2 * b * tc / s for m, s in step_s.items()},
        "step_s": step_s,
        "views_per_s": 2 * b / views_s,
        "batch_size": b,
        "context_frames": tc,
        "preset": "ppuu" if backbone is None else "custom",
        "rounds": rounds,
        "quick": quick,
        "machine": machine(),
    }


__all__ = ["bench_ssl"]
