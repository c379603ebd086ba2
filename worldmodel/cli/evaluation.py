"""The closed-loop part of the ``worldmodel`` command: ``eval policy``, ``eval worlds`` and ``render rollout``.

``worldmodel.cli`` adds these parsers to its ``eval`` and ``render`` sub-commands; each parser sets ``func``,
which runs the command, prints one JSON object and returns the exit code. Building the parsers imports
nothing heavy; bad input raises ``DataError`` / ``ValueError`` / ``FileNotFoundError``, which the main
command prints as one line. The flags of config fields are made from ``EvalPolicyConfig`` and
``WorldErrorConfig`` (``worldmodel.cli.config``); ``render rollout`` takes ``eval policy``'s flags of a driven
episode.
"""

from __future__ import annotations

import argparse
import functools
import json

from worldmodel.cli.config import ConfigFlags
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


#: The ``EvalPolicyConfig`` fields of a driven episode (``eval policy`` and ``render rollout``).
DRIVER_FIELDS = ("driver", "data", "fm", "device", "seed", "context_frames", "max_steps")


@functools.cache
def policy_flags() -> tuple[ConfigFlags, ConfigFlags]:
    """The flags of a driven episode (``DRIVER_FIELDS``) and the rest of ``eval policy``'s."""
    from worldmodel.driving.closed_loop import EvalPolicyConfig

    driving = ConfigFlags(EvalPolicyConfig, include=DRIVER_FIELDS, required=("driver", "data"),
                          notes={"driver": "(plan:grad, plan:cem: see --world, --objective, --option)"})  # fmt: skip
    rest = ConfigFlags(EvalPolicyConfig, exclude=DRIVER_FIELDS, choices={"split": SPLITS},
                       notes={"stuck_factor": "0 is None too."})  # fmt: skip
    return driving, rest


def _add_driver_arguments(p: argparse.ArgumentParser) -> None:
    from worldmodel.driving.worlds import WORLDS

    policy_flags()[0].add_to(p)
    p.add_argument("--world", choices=WORLDS, default=None,
                   help="planners: the world they plan in: the recorded future (privileged), constant velocity, "
                        "the forward model --fm, or the traffic model --fm (train traffic) (default cv)")  # fmt: skip
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
    policy_flags()[1].add_to(p)
    p.set_defaults(func=run_eval_policy)
    return p


def run_eval_policy(args: argparse.Namespace) -> int:
    from worldmodel.driving.closed_loop import evaluate_driving

    driving, rest = policy_flags()
    config = rest.config(args, **driving.values(args), stuck_factor=rest.values(args)["stuck_factor"] or None,
                         driver_options=driver_options(args))  # fmt: skip
    result = evaluate_driving(config)
    keys = ("selection", "episodes", "success_rate", "success_rate_ci95", "success_not_at_fault_rate",
            "success_not_at_fault_rate_ci95", "mean_distance_m", "collision_rate", "collision_ahead_rate",
            "collision_behind_rate", "offroad_rate", "stuck_rate", "mean_costs", "events", "diagnostics",
            "episodes_per_s", "wall_s", "csv")  # fmt: skip
    print(json.dumps({"out": config.out, "driver": config.driver, **{k: result[k] for k in keys}}, indent=2))
    return 0


@functools.cache
def worlds_flags() -> ConfigFlags:
    from worldmodel.driving.world_error import WorldErrorConfig

    return ConfigFlags(WorldErrorConfig, required=("data",), choices={"split": SPLITS},
                       defaults={"out": "runs/worlds.json"})  # fmt: skip


def add_eval_worlds_parser(esub) -> argparse.ArgumentParser:
    p = esub.add_parser("worlds", help="offline error of the world providers (cv, model, traffic) against the recorded "
                        "future views, per horizon step (JSON)")  # fmt: skip
    worlds_flags().add_to(p)
    p.set_defaults(func=run_eval_worlds)
    return p


def run_eval_worlds(args: argparse.Namespace) -> int:
    from worldmodel.driving.world_error import compare_worlds

    config = worlds_flags().config(args)
    result = compare_worlds(config)
    keys = ("protocol", "summary", "render_check", "oracle_proximity_mean")
    print(json.dumps({"out": config.out, **{k: result[k] for k in keys}}, indent=2))
    return 0


def add_render_rollout_parser(rsub) -> argparse.ArgumentParser:
    p = rsub.add_parser("rollout", help="video of one car driven in Replay-v0: top-down view with the planned path, "
                        "imagined vs actual future, costs, uncertainty")  # fmt: skip
    _add_driver_arguments(p)
    p.add_argument("--vehicle", type=int, required=True, help="episode vehicle id (as in episodes.h5 and the eval CSV)")
    p.add_argument("--out", default="runs/rollout.mp4", help="output video (.mp4 or .gif)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10: real time)")
    p.add_argument("--imagined-step", type=int, default=None, metavar="K",
                   help="drivers that imagine (planners, a policy with --fm): the panel shows what they imagined K "
                        "steps ago for now beside what happened (default: their imagined step nearest 1 s; 0: no "
                        "panel)")  # fmt: skip
    p.set_defaults(func=run_render_rollout)
    return p


def run_render_rollout(args: argparse.Namespace) -> int:
    from worldmodel.viz.rollout_video import render_rollout

    result = render_rollout(args.driver, args.data, args.vehicle, args.out, fm=args.fm, device=args.device,
                            seed=args.seed, context_frames=args.context_frames, max_steps=args.max_steps,
                            fps=args.fps, driver_options=driver_options(args),
                            imagined_step=args.imagined_step)  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0
