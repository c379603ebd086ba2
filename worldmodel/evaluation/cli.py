"""The closed-loop part of the ``worldmodel`` command: ``eval policy``, ``eval worlds`` and ``render rollout``.

``worldmodel.cli`` adds these parsers to its ``eval`` and ``render`` sub-commands; each parser sets ``func``,
which runs the command, prints one JSON object and returns the exit code. Building the parsers imports
nothing heavy; bad input raises ``DataError`` / ``ValueError`` / ``FileNotFoundError``, which the main
command prints as one line.
"""

from __future__ import annotations

import argparse
import json

from worldmodel.data.episodes import SPLITS

DRIVER_HELP = 'driver: "no-action", "expert", "bot", a policy checkpoint (.pt), "plan:grad" or "plan:cem"'
#: Planner options with a flag of their own (``--world``, ``--objective``); the rest go by ``--option``.
PLANNER_FLAGS = ("world", "objective")


def parse_options(items: list[str] | None) -> dict:
    """``["key=value", ...]`` -> dict; values read as JSON when they parse (numbers, true/false), else
    strings. Raises ValueError on an item without "="."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def _add_driver_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--driver", required=True, help=DRIVER_HELP)
    p.add_argument("--data", required=True, help="dataset directory (episodes.h5 + trajectories-*.h5)")
    p.add_argument("--fm", default=None, help="forward-model checkpoint (model-based drivers)")
    p.add_argument("--device", default="cpu", help="torch device of model-based drivers (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--context-frames", type=int, default=20, help="frames following the recording (default 20)")
    p.add_argument("--max-steps", type=int, default=None, help="truncate after this many steps (default: none)")
    p.add_argument("--world", choices=["oracle", "cv", "model"], default=None,
                   help="planners: the world they plan in: the recorded future (privileged), constant velocity, "
                        "or the forward model --fm (default cv)")  # fmt: skip
    p.add_argument(
        "--objective",
        choices=["drive", "ppuu"],
        default=None,
        help="planners: the objective preset (default drive; ppuu: PPUU's costs only)",
    )
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="driver option (repeatable), e.g. --option lane_changes=true for the bot, --option "
                        "horizon=20 for a planner")  # fmt: skip


def driver_options(args: argparse.Namespace) -> dict:
    """The driver options of the command line: ``--option`` items, ``--world`` and ``--objective``."""
    options = parse_options(args.option)
    for name in PLANNER_FLAGS:
        value = getattr(args, name)
        if value is not None:
            if not args.driver.startswith("plan:"):
                raise ValueError(f"--{name} is for the planners (plan:grad, plan:cem), not {args.driver!r}")
            options[name] = value
    return options


def add_eval_policy_parser(esub) -> argparse.ArgumentParser:
    p = esub.add_parser("policy", help="closed-loop driving in Replay-v0, one episode per car (JSON + CSV)")
    _add_driver_arguments(p)
    p.add_argument("--split", choices=list(SPLITS), default="test")
    p.add_argument("--episodes", type=int, default=None, help="evaluate a seeded choice of N cars (default: all)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--batch",
        type=int,
        default=16,
        help="episodes a worker drives in lockstep, one batched policy forward per step (default 16)",
    )
    p.add_argument("--stuck-factor", type=float, default=2.0,
                   help="end an episode as stuck after this many times the recorded car's steps to the zone end "
                        "(default 2; 0: no cap)")  # fmt: skip
    p.add_argument("--out", default="runs/eval.json", help="output JSON; a CSV of the episodes goes beside it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval_policy)
    return p


def run_eval_policy(args: argparse.Namespace) -> int:
    from worldmodel.evaluation.driving import EvalPolicyConfig, evaluate_driving

    config = EvalPolicyConfig(driver=args.driver, data=args.data, split=args.split, episodes=args.episodes,
                              workers=args.workers, batch=args.batch, seed=args.seed, out=args.out, fm=args.fm,
                              device=args.device, context_frames=args.context_frames, max_steps=args.max_steps,
                              stuck_factor=args.stuck_factor or None, driver_options=driver_options(args),
                              progress=not args.no_progress)  # fmt: skip
    result = evaluate_driving(config)
    keys = ("selection", "episodes", "success_rate", "success_rate_ci95", "success_not_at_fault_rate",
            "success_not_at_fault_rate_ci95", "mean_distance_m", "collision_rate", "collision_ahead_rate",
            "collision_behind_rate", "offroad_rate", "stuck_rate", "mean_costs", "events", "diagnostics",
            "episodes_per_s", "wall_s", "csv")  # fmt: skip
    print(json.dumps({"out": args.out, "driver": args.driver, **{k: result[k] for k in keys}}, indent=2))
    return 0


def add_eval_worlds_parser(esub) -> argparse.ArgumentParser:
    p = esub.add_parser("worlds", help="offline error of the world providers (cv, model) against the recorded "
                        "future views, per horizon step (JSON)")  # fmt: skip
    p.add_argument("--data", required=True, help="dataset directory (episodes.h5 + trajectories-*.h5)")
    p.add_argument("--fm", default=None, help="forward-model checkpoint: also score the model world")
    p.add_argument("--split", choices=list(SPLITS), default="test")
    p.add_argument("--windows", type=int, default=200, help="windows compared (default 200)")
    p.add_argument("--horizon", type=int, default=20, help="predicted steps (default 20)")
    p.add_argument("--context-frames", type=int, default=None,
                   help="context frames (default: the model's; 20 without --fm)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the window choice")
    p.add_argument("--device", default="cpu", help="torch device of the forward model (default cpu)")
    p.add_argument("--out", default="runs/worlds.json", help="output JSON (default runs/worlds.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval_worlds)
    return p


def run_eval_worlds(args: argparse.Namespace) -> int:
    from worldmodel.driving.world_error import WorldErrorConfig, compare_worlds

    config = WorldErrorConfig(data=args.data, fm=args.fm, split=args.split, windows=args.windows,
                              horizon=args.horizon, seed=args.seed, device=args.device, out=args.out,
                              context_frames=args.context_frames, progress=not args.no_progress)  # fmt: skip
    result = compare_worlds(config)
    keys = ("protocol", "summary", "render_check", "oracle_proximity_mean")
    print(json.dumps({"out": args.out, **{k: result[k] for k in keys}}, indent=2))
    return 0


def add_render_rollout_parser(rsub) -> argparse.ArgumentParser:
    p = rsub.add_parser("rollout", help="video of one car driven in Replay-v0: top-down view, costs, uncertainty")
    _add_driver_arguments(p)
    p.add_argument("--vehicle", type=int, required=True, help="episode vehicle id (as in episodes.h5 and the eval CSV)")
    p.add_argument("--out", default="runs/rollout.mp4", help="output video (.mp4 or .gif)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10: real time)")
    p.set_defaults(func=run_render_rollout)
    return p


def run_render_rollout(args: argparse.Namespace) -> int:
    from worldmodel.evaluation.rollout_video import render_rollout

    result = render_rollout(args.driver, args.data, args.vehicle, args.out, fm=args.fm, device=args.device,
                            seed=args.seed, context_frames=args.context_frames, max_steps=args.max_steps,
                            fps=args.fps, driver_options=driver_options(args))  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0
