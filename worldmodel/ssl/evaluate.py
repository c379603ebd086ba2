"""``worldmodel eval ssl``: probes and health of a pretrained encoder, against random backbones.

The baseline is the mean over ``random_seeds`` randomly initialised backbones of the same config, measured
in the same run on the same samples, so the comparison needs nothing else on disk. One random draw is not
a baseline: on ``tiny`` three seeds' ridge R^2 spread over 0.76-0.78 (headway) and 0.82-0.84 (neighbours),
about the gap a few CPU minutes of pretraining opens.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from worldmodel.nn.backbone import Backbone
from worldmodel.nn.distributed import resolve_device
from worldmodel.ssl.heads import Encoder
from worldmodel.ssl.probes import TARGETS, ProbeConfig, evaluate_probes, load_probe_split
from worldmodel.ssl.train import load_objective

PROBES = ("ridge_r2", "ridge_few_r2", "knn_r2")
"""The R^2 columns compared with the random baseline."""
CEILING_R2 = 0.999
"""Where both the SSL encoder and the random baseline read a target at R^2 >= this (speed, which the
encoder gets as input), a difference either way says nothing about the features: the verdict is
``"ceiling"``."""


def verdict(ssl_r2: float, random_r2: float) -> str:
    """``"ceiling"`` (both >= ``CEILING_R2``), else ``"beats"`` (ssl > random) or ``"below"``."""
    if min(ssl_r2, random_r2) >= CEILING_R2:
        return "ceiling"
    return "beats" if ssl_r2 > random_r2 else "below"


def mean_over_seeds(results: list[dict]) -> dict:
    """The per-seed ``evaluate_probes`` results as one: each R^2 and health value averaged, with the
    per-seed values under ``<name>_seeds``."""
    probes = {}
    for t in TARGETS:
        probes[t] = {}
        for key in PROBES:
            values = [r["probes"][t][key] for r in results]
            probes[t] |= {key: float(np.mean(values)), f"{key}_seeds": values}
    health = {k: float(np.mean([r["health"][k] for r in results])) for k in results[0]["health"]}
    return {"probes": probes, "health": health}


def evaluate_ssl(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    config: ProbeConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    random_seeds: int = 3,
) -> dict:
    """Probe R^2 (ridge, few-label ridge, kNN) and representation health of the SSL run's encoder and of
    ``random_seeds`` random ones (seeds ``seed``, ``seed + 1``, ...).

    Returns ``{"method", "step", "samples", "ssl": {"probes", "health"}, "random": {"probes", "health"}
    (means over the seeds, per-seed values in ``*_seeds``), "beats_random": {target: ridge R^2 of ssl >
    the random mean}, "beats_random_few" and "beats_random_knn": the same for the other probes,
    "verdict": {probe: {target: ``verdict(...)``}}}``.
    """
    if random_seeds < 1:
        raise ValueError(f"evaluate_ssl: random_seeds must be >= 1, got {random_seeds}")
    config = config or ProbeConfig()
    dev = resolve_device(device)
    objective, run_config, extra = load_objective(checkpoint)
    encoder = objective.encoder.to(dev)
    tc = run_config.backbone.context_frames
    splits = {s: load_probe_split(data, s, tc, extra["state_mean"], extra["state_std"], config.samples_per_split)
              for s in ("train", "val", "test")}  # fmt: skip
    trained = evaluate_probes(encoder, splits, config)
    randoms = []
    for k in range(random_seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            random_encoder = Encoder(Backbone(run_config.backbone), run_config.ssl.pool).to(dev)
        randoms.append(evaluate_probes(random_encoder, splits, config))
    random = mean_over_seeds(randoms)

    def beats(key: str) -> dict[str, bool]:
        return {t: trained["probes"][t][key] > random["probes"][t][key] for t in TARGETS}

    return {
        "checkpoint": str(checkpoint),
        "method": run_config.ssl.method,
        "step": int(extra["step"]),
        "data": str(data),
        "samples": {s: len(d["states"]) for s, d in splits.items()},
        "random_seeds": [seed + k for k in range(random_seeds)],
        "ssl": trained,
        "random": random,
        "beats_random": beats("ridge_r2"),
        "beats_random_few": beats("ridge_few_r2"),
        "beats_random_knn": beats("knn_r2"),
        "verdict": {
            key: {t: verdict(trained["probes"][t][key], random["probes"][t][key]) for t in TARGETS} for key in PROBES
        },
    }


__all__ = ["CEILING_R2", "PROBES", "evaluate_ssl", "mean_over_seeds", "verdict"]
