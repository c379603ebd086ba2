"""``worldmodel train policy``: the parser and the call (``worldmodel.cli`` wires it under ``train``)."""

from __future__ import annotations

import argparse
import json


def add_train_parser(tsub) -> argparse.ArgumentParser:
    p = tsub.add_parser("policy", help="train a driving policy in imagination through a forward model (MPUR/MPER/IL)")
    p.add_argument("--method", choices=["mpur", "mper", "il"], default="mpur", help="objective (default mpur)")
    p.add_argument("--fm", required=True, help="forward-model checkpoint (frozen)")
    p.add_argument("--data", required=True,
                   help="dataset directory (episodes.h5 + trajectories-*.h5 for closed-loop validation) or episodes.h5")  # fmt: skip
    p.add_argument("--out", default="runs/policy", help="run directory (default runs/policy)")
    p.add_argument("--policy", choices=["deterministic", "gaussian"], default="deterministic", help="policy kind")
    p.add_argument("--horizon", type=int, default=30, help="imagined steps per rollout (default 30)")
    p.add_argument("--replicas", type=int, default=10, help="dropout replicas of the uncertainty cost (default 10)")
    p.add_argument("--uncertainty-weight", type=float, default=0.05,
                   help="weight of the uncertainty cost (default 0.05; 0: PPUU's ablation without it)")  # fmt: skip
    p.add_argument("--steps", type=int, default=100_000, help="total optimiser steps (default 100000)")
    p.add_argument("--batch-size", type=int, default=6, help="windows per update (default 6)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--grad-clip", type=float, default=50.0, help="gradient-norm clip (default 50)")
    p.add_argument("--init-backbone", default="fm",
                   help="policy trunk initialisation: fm (the model's backbone), a backbone.pt, or none")  # fmt: skip
    p.add_argument("--val-every", type=int, default=500, help="steps between validations (0: never)")
    p.add_argument("--val-episodes", type=int, default=20, help="val cars driven in Replay-v0 per validation")
    p.add_argument("--val-windows", type=int, default=60, help="val windows of the model-predicted objective")
    p.add_argument("--ckpt-every", type=int, default=100, help="steps between checkpoints/last.pt writes")
    p.add_argument("--log-every", type=int, default=10, help="steps between metrics.jsonl lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--workers", type=int, default=1, help="data loader workers (default 1)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from checkpoints/last.pt if it exists (default yes)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def train_config(args: argparse.Namespace):
    """The ``TrainPolicyConfig`` of parsed arguments."""
    from worldmodel.costs import CostConfig
    from worldmodel.training.policy import TrainPolicyConfig

    return TrainPolicyConfig(
        data=args.data, fm=args.fm, out=args.out, method=args.method, policy_kind=args.policy, horizon=args.horizon,
        replicas=args.replicas, costs=CostConfig(uncertainty_weight=args.uncertainty_weight), steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, grad_clip=args.grad_clip,
        init_backbone=None if args.init_backbone == "none" else args.init_backbone, val_every=args.val_every,
        val_episodes=args.val_episodes, val_windows=args.val_windows, ckpt_every=args.ckpt_every,
        log_every=args.log_every, seed=args.seed, device=args.device, workers=args.workers, resume=args.resume,
        progress=not args.no_progress,
    )  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    from worldmodel.training.policy import train_policy

    print(json.dumps(train_policy(train_config(args)), indent=2))
    return 0
