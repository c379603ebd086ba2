"""``worldmodel eval ssl``: probes and health of a pretrained encoder, against a random backbone.

The baseline is a randomly initialised backbone of the same config (seeded), measured in the same run on
the same samples, so the comparison needs nothing else on disk.
"""

from __future__ import annotations

import os

import torch

from worldmodel.nn.backbone import Backbone
from worldmodel.ssl.heads import Encoder
from worldmodel.ssl.probes import TARGETS, ProbeConfig, evaluate_probes, load_probe_split
from worldmodel.ssl.train import load_objective
from worldmodel.training.distributed import resolve_device


def evaluate_ssl(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    config: ProbeConfig | None = None,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Probe R^2 (ridge, kNN) and representation health of the SSL run's encoder and of a random one.

    Returns ``{"method", "step", "samples", "ssl": {"probes", "health"}, "random": {...},
    "beats_random": {target: ridge R^2 of ssl > random}, "beats_random_knn": {target: same for kNN}}``.
    """
    config = config or ProbeConfig()
    dev = resolve_device(device)
    objective, run_config, extra = load_objective(checkpoint)
    encoder = objective.encoder.to(dev)
    tc = run_config.backbone.context_frames
    splits = {s: load_probe_split(data, s, tc, extra["state_mean"], extra["state_std"], config.samples_per_split)
              for s in ("train", "val", "test")}  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random_encoder = Encoder(Backbone(run_config.backbone), run_config.ssl.pool).to(dev)
    trained = evaluate_probes(encoder, splits, config)
    random = evaluate_probes(random_encoder, splits, config)
    return {
        "checkpoint": str(checkpoint),
        "method": run_config.ssl.method,
        "step": int(extra["step"]),
        "data": str(data),
        "samples": {s: len(d["states"]) for s, d in splits.items()},
        "ssl": trained,
        "random": random,
        "beats_random": {t: trained["probes"][t]["ridge_r2"] > random["probes"][t]["ridge_r2"] for t in TARGETS},
        "beats_random_knn": {t: trained["probes"][t]["knn_r2"] > random["probes"][t]["knn_r2"] for t in TARGETS},
    }


__all__ = ["evaluate_ssl"]
