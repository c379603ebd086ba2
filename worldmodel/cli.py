"""The ``worldmodel`` command: parse, call one library function, print. ``worldmodel <command> --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from worldmodel.traffic.scenario import ScenarioError


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 1."""


def _cmd_sim(args: argparse.Namespace) -> int:
    from worldmodel.sim_run import SimRunConfig, run_simulation

    summary = run_simulation(
        SimRunConfig(
            scenario=args.scenario,
            seconds=args.seconds,
            warmup_s=args.warmup,
            seed=args.seed,
            video=args.video,
            video_every=args.video_every,
            summary=args.summary,
            progress=not args.no_progress,
        )  # fmt: skip
    )
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from worldmodel import bench

    runners: dict[str, Callable[[bool], dict]] = {"sim": bench.bench_sim}
    print(json.dumps(runners[args.what](args.quick)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldmodel", description="World models for model-based control on traffic.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sim", help="run a scenario: top-down video + realism summary (JSON)")
    p.add_argument("--scenario", default="i80", help="scenario name in envs/ or a TOML path (default: i80)")
    p.add_argument("--seconds", type=float, default=300.0, help="simulated seconds after the warm-up")
    p.add_argument("--warmup", type=float, default=120.0, help="warm-up seconds, not counted (default 120)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--video", default=None, help="write a top-down video of the section (.mp4 or .gif)")
    p.add_argument("--video-every", type=int, default=1, help="keep every k-th frame in the video")
    p.add_argument("--summary", default=None, help="JSON summary path (default: next to the video)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("bench", help="throughput benchmarks, one JSON object on stdout")
    p.add_argument("what", choices=["sim"], help="what to measure")
    p.add_argument("--quick", action="store_true", help="a short run (< 30 s)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (UserError, ScenarioError, FileNotFoundError, ValueError) as e:
        print(f"worldmodel {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
