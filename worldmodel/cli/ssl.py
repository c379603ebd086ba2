"""The SSL part of the ``worldmodel`` command: ``train ssl``, ``eval ssl`` (``bench ssl`` is ``bench_ssl``).

``worldmodel.cli`` adds these parsers to its ``train`` and ``eval`` sub-commands and prints what the
``run_*`` functions return (one JSON object). The flags of ``train ssl`` are made from ``TrainSSLConfig`` and
its ``SSLConfig``, ``ViewConfig`` and backbone ``dropout`` (``worldmodel.cli.config``); they override the
``--preset`` of ``--method``.
"""

from __future__ import annotations

import argparse
import functools

from worldmodel.cli.config import ConfigFlags, build, differences, show
from worldmodel.ssl.objectives import METHODS

PRESETS = ("tiny", "ppuu")


def preset(name: str, method: str = "vicreg"):
    """The ``TrainSSLConfig`` of ``--preset name --method method`` before the other flags."""
    from worldmodel.ssl.train import TrainSSLConfig

    return getattr(TrainSSLConfig, name)(method)


@functools.cache
def train_flags() -> tuple[ConfigFlags, ...]:
    """The flags of ``train ssl``: the method, then the run's, the objective's, the views' and the backbone's."""
    from worldmodel.nn.backbone import BackboneConfig
    from worldmodel.ssl.heads import POOLS
    from worldmodel.ssl.objectives import SSLConfig
    from worldmodel.ssl.train import TrainSSLConfig
    from worldmodel.ssl.views import ViewConfig

    presets = {name: functools.partial(preset, name) for name in PRESETS}
    return (
        ConfigFlags(SSLConfig, at="ssl", include=("method",), choices={"method": METHODS}),
        ConfigFlags(TrainSSLConfig, required=("data",), presets=presets),
        ConfigFlags(SSLConfig, at="ssl", exclude=("method",), choices={"pool": POOLS}, presets=presets),
        ConfigFlags(ViewConfig, at="views", choices={"drop_states_per": ("view", "pair")}, presets=presets),
        ConfigFlags(BackboneConfig, at="backbone", include=("dropout",), presets=presets),
    )


def method_note() -> str:
    """What each method changes in a preset (``method_defaults``), from the configs themselves."""
    base = preset("ppuu")
    changes = {m: differences(base, preset("ppuu", m)) for m in METHODS}
    lines = [
        f"{m}: " + ", ".join(f"{k} {show(v)}" for k, v in c.items() if k != "ssl.method") for m, c in changes.items()
    ]
    return "--method changes these defaults of both presets: " + "; ".join(x for x in lines if not x.endswith(": "))


def add_train_parser(tsub) -> argparse.ArgumentParser:
    p = tsub.add_parser("ssl", help="pretrain the shared backbone with joint-embedding SSL (runs under torchrun)",
                        epilog=method_note())  # fmt: skip
    method, run, objective, views, backbone = train_flags()
    method.add_to(p)
    p.add_argument("--preset", choices=PRESETS, default="ppuu",
                   help="backbone and head sizes, batch and steps: tiny (CPU minutes) or ppuu (default: ppuu)")  # fmt: skip
    run.add_to(p)
    objective.add_to(p, "the objective (over --preset)")
    views.add_to(p, "the views (over --preset)")
    backbone.add_to(p, "the backbone (over --preset)")
    return p


def train_config(args: argparse.Namespace):
    """The ``TrainSSLConfig`` of parsed ``train ssl`` arguments."""
    return build(preset(args.preset, args.method), args, *train_flags()[1:])


def run_train(args: argparse.Namespace) -> dict:
    from worldmodel.ssl.train import train_ssl

    return train_ssl(train_config(args))


@functools.cache
def probe_flags() -> ConfigFlags:
    from worldmodel.ssl.probes import ProbeConfig

    return ConfigFlags(ProbeConfig, include=("samples_per_split", "few_labels", "knn_k", "batch_size"),
                       rename={"samples_per_split": "samples"})  # fmt: skip


def add_eval_parser(esub) -> argparse.ArgumentParser:
    p = esub.add_parser("ssl", help="probe R^2 and health of an SSL encoder vs a random backbone (JSON)")
    p.add_argument("--checkpoint", required=True, help="SSL run checkpoint (checkpoints/last.pt)")
    p.add_argument("--data", required=True, help="episodes.h5 (probes: fit on train, lambda / k on val, R^2 on test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first random baseline backbone (default 0)")
    p.add_argument("--random-seeds", type=int, default=3, help="random backbones averaged as the baseline (default 3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="also write the JSON here")
    probe_flags().add_to(p, "the probes")
    return p


def run_eval(args: argparse.Namespace) -> dict:
    from worldmodel.data.hdf5 import write_json
    from worldmodel.ssl.evaluate import evaluate_ssl

    result = evaluate_ssl(args.checkpoint, args.data, probe_flags().config(args), seed=args.seed, device=args.device,
                          random_seeds=args.random_seeds)  # fmt: skip
    if args.out:
        write_json(result, args.out)
    return result


__all__ = ["METHODS", "add_eval_parser", "add_train_parser", "method_note", "run_eval", "run_train", "train_config"]
