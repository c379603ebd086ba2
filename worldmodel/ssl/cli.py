"""The SSL part of the ``worldmodel`` command: ``train ssl``, ``eval ssl`` (``bench ssl`` is ``bench_ssl``).

``worldmodel.cli`` adds these parsers to its ``train`` and ``eval`` sub-commands and prints what the
``run_*`` functions return (one JSON object).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

METHODS = ("vicreg", "barlow", "simclr", "byol", "simsiam")
"""``worldmodel.ssl.objectives.METHODS``, repeated so that building the parser imports no torch (tested)."""


def add_train_parser(tsub) -> argparse.ArgumentParser:
    p = tsub.add_parser("ssl", help="pretrain the shared backbone with joint-embedding SSL (runs under torchrun)")
    p.add_argument("--method", choices=METHODS, default="vicreg", help="objective (default vicreg)")
    p.add_argument("--data", required=True, help="episodes.h5 (its train split)")
    p.add_argument("--out", default="runs/ssl", help="run directory (default runs/ssl); backbone.pt is written there")
    p.add_argument("--preset", choices=["tiny", "ppuu"], default="ppuu", help="backbone and head sizes (default ppuu)")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: the preset's)")
    p.add_argument("--stop-at", type=int, default=0, help="stop after this step, resumable (default: run to --steps)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch in windows (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="AdamW peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 1e-5)")
    p.add_argument(
        "--predictor-lr-scale",
        type=float,
        default=None,
        help="predictor learning rate / --lr (BYOL, SimSiam; default 1)",
    )
    p.add_argument("--temperature", type=float, default=None, help="NT-Xent temperature (default 0.2)")
    p.add_argument("--momentum", type=float, default=None, help="BYOL's base EMA momentum (default: the preset's)")
    p.add_argument("--dropout", type=float, default=None, help="backbone dropout while pretraining (default 0)")
    p.add_argument("--pool", choices=["flatten", "mean"], default=None, help="map -> vector (default flatten)")
    p.add_argument(
        "--projector",
        default=None,
        metavar="N,N",
        help="projector layer widths, comma-separated (default: the preset's, tiny 256,256)",
    )
    p.add_argument("--min-offset", type=int, default=None, help="smallest time offset between views [frames]")
    p.add_argument("--max-offset", type=int, default=None, help="largest time offset between views [frames]")
    p.add_argument("--max-shift-rows", type=int, default=None, help="largest shift along the heading [px]")
    p.add_argument("--erase-prob", type=float, default=None, help="probability of an erased rectangle per view")
    p.add_argument("--drop-vehicles", type=float, default=None,
                   help="probability of a view without the vehicles channel (default 0)")  # fmt: skip
    p.add_argument("--drop-states", type=float, default=None, help="probability of zeroed states per view")
    p.add_argument(
        "--drop-states-per",
        choices=["view", "pair"],
        default=None,
        help="state dropout drawn per view or per pair of views (default: the preset's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--workers", type=int, default=1, help="data loader workers per process (default 1)")
    p.add_argument("--log-every", type=int, default=1, help="steps between metrics.jsonl lines (default 1)")
    p.add_argument("--ckpt-every", type=int, default=None, help="steps between checkpoints/last.pt writes")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from checkpoints/last.pt if it exists (default yes)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def train_config(args: argparse.Namespace):
    """The ``TrainSSLConfig`` of parsed ``train ssl`` arguments."""
    from worldmodel.ssl.train import TrainSSLConfig
    from worldmodel.ssl.views import ViewConfig

    if args.preset == "tiny":
        config = TrainSSLConfig.tiny(args.method)
    else:
        config = TrainSSLConfig.ppuu(args.method)
    projector = None if args.projector is None else tuple(int(n) for n in args.projector.split(","))
    ssl = {k: v for k, v in (("temperature", args.temperature), ("pool", args.pool), ("projector", projector),
                                             ("momentum", args.momentum))
           if v is not None}  # fmt: skip
    views = {k: v for k, v in (("min_offset", args.min_offset), ("max_offset", args.max_offset), ("max_shift_rows", args.max_shift_rows),
                                ("erase_prob", args.erase_prob), ("drop_states", args.drop_states),
                                ("drop_vehicles", args.drop_vehicles), ("drop_states_per", args.drop_states_per))
             if v is not None}  # fmt: skip
    run = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                              ("ckpt_every", args.ckpt_every), ("weight_decay", args.weight_decay),
                              ("predictor_lr_scale", args.predictor_lr_scale)) if v is not None}  # fmt: skip
    if args.dropout is not None:
        config = replace(config, backbone=replace(config.backbone, dropout=args.dropout))
    return replace(config, data=args.data, out=args.out, ssl=replace(config.ssl, **ssl),
                   views=ViewConfig(**(config.views.__dict__ | views)), stop_at=args.stop_at, seed=args.seed,
                   device=args.device, workers=args.workers, log_every=args.log_every, resume=args.resume,
                   progress=not args.no_progress, **run)  # fmt: skip


def run_train(args: argparse.Namespace) -> dict:
    from worldmodel.ssl.train import train_ssl

    return train_ssl(train_config(args))


def add_eval_parser(esub) -> argparse.ArgumentParser:
    p = esub.add_parser("ssl", help="probe R^2 and health of an SSL encoder vs a random backbone (JSON)")
    p.add_argument("--checkpoint", required=True, help="SSL run checkpoint (checkpoints/last.pt)")
    p.add_argument("--data", required=True, help="episodes.h5 (probes: fit on train, lambda / k on val, R^2 on test)")
    p.add_argument("--samples", type=int, default=None, help="windows per split (default 4000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first random baseline backbone (default 0)")
    p.add_argument("--random-seeds", type=int, default=3, help="random backbones averaged as the baseline (default 3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p


def run_eval(args: argparse.Namespace) -> dict:
    from worldmodel.data.hdf5 import write_json
    from worldmodel.ssl.evaluate import evaluate_ssl
    from worldmodel.ssl.probes import ProbeConfig

    probes = ProbeConfig() if args.samples is None else ProbeConfig(samples_per_split=args.samples)
    result = evaluate_ssl(args.checkpoint, args.data, probes, seed=args.seed, device=args.device,
                          random_seeds=args.random_seeds)  # fmt: skip
    if args.out:
        write_json(result, args.out)
    return result


__all__ = ["add_eval_parser", "add_train_parser", "run_eval", "run_train", "train_config"]
