"""The ``worldmodel`` command: parse, call one library function, print. ``worldmodel <command> --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from worldmodel.data.hdf5 import DataError
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


def _print(obj: dict) -> int:
    print(json.dumps(obj, indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    progress = not args.no_progress
    if args.data_command == "record":
        from worldmodel.data.record import RecordConfig, record

        _mkdir_for(args.out)
        config = RecordConfig(scenario=args.scenario, minutes=args.minutes, warmup_s=args.warmup, seed=args.seed,
                              progress=progress)  # fmt: skip
        return _print(record(config, args.out))
    if args.data_command == "import-ngsim":
        from worldmodel.data.ngsim import import_ngsim
        from worldmodel.traffic.road import Road
        from worldmodel.traffic.scenario import resolve_scenario

        _mkdir_for(args.out)
        road = Road(resolve_scenario(args.scenario).road).to_dict() if args.scenario else None
        return _print(import_ngsim(args.file, args.out, road=road, smoothing_s=args.smoothing))
    if args.data_command == "import-ppuu":
        from worldmodel.data.ppuu import import_ppuu

        _mkdir_for(args.out)
        return _print(import_ppuu(args.dir, args.out, state_shift=not args.no_state_shift, old_channels=args.old_channels))
    if args.data_command == "extract":
        from worldmodel.data.extract import ExtractConfig, extract

        _mkdir_for(args.out)
        return _print(extract(args.files, args.out, ExtractConfig(workers=args.workers, progress=progress)))
    if args.data_command == "build":
        from worldmodel.data.recipes import build

        return _print(build(args.recipe, args.out_dir, rebuild=args.rebuild, progress=progress))
    if args.data_command == "inspect":
        from worldmodel.data.inspect import inspect_file

        return _print(inspect_file(args.file))
    raise UserError(f"unknown data command {args.data_command}")


def _mkdir_for(path: str) -> None:
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)


def _cmd_bench(args: argparse.Namespace) -> int:
    from worldmodel import bench

    runners: dict[str, Callable[[bool], dict]] = {"sim": bench.bench_sim, "data": bench.bench_data}
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

    data = sub.add_parser("data", help="datasets: record, import, extract, build, inspect")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("record", help="simulate a scenario and record every car in its section (trajectories.h5)")
    p.add_argument("--scenario", default="i80", help="scenario name in envs/ or a TOML path")
    p.add_argument("--minutes", type=float, default=15.0, help="recorded minutes (after the warm-up)")
    p.add_argument("--warmup", type=float, default=120.0, help="warm-up seconds before recording")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output trajectories.h5")
    p = dsub.add_parser("import-ngsim", help="import an NGSIM trajectory text file (trajectories.h5)")
    p.add_argument("file", help="NGSIM trajectories .txt (18 columns, feet)")
    p.add_argument("--out", required=True, help="output trajectories.h5")
    p.add_argument("--scenario", default=None, help="take the road geometry from this scenario (else inferred)")
    p.add_argument("--smoothing", type=float, default=1.5, help="position smoothing window [s] (PPUU: 1.5)")
    p = dsub.add_parser("import-ppuu", help="convert PPUU per-car dumps (car*.pkl) to episodes.h5")
    p.add_argument("dir", help="directory of car{id}.pkl files (one recording)")
    p.add_argument("--out", required=True, help="output episodes.h5")
    p.add_argument("--no-state-shift", action="store_true", help="the dumps have no one-step state shift")
    p.add_argument("--old-channels", action="store_true", help="PPUU's old channel layout (blue = ego)")
    p = dsub.add_parser("extract", help="trajectories -> episodes (views, states, actions, costs)")
    p.add_argument("files", nargs="+", help="trajectories.h5 file(s)")
    p.add_argument("--out", required=True, help="output episodes.h5")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p = dsub.add_parser("build", help="build a dataset from a recipe (datasets/<name>.toml)")
    p.add_argument("recipe", help="recipe TOML")
    p.add_argument("--out-dir", default=None, help="output directory (default: datasets/<name>/)")
    p.add_argument("--rebuild", action="store_true", help="re-record recordings that exist")
    p = dsub.add_parser("inspect", help="validate a trajectories.h5 or episodes.h5 and print its summary")
    p.add_argument("file")
    for p in dsub.choices.values():
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    data.set_defaults(func=_cmd_data)

    p = sub.add_parser("bench", help="throughput benchmarks, one JSON object on stdout")
    p.add_argument("what", choices=["sim", "data"], help="what to measure")
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
    except (UserError, ScenarioError, DataError, FileNotFoundError, ValueError) as e:
        print(f"worldmodel {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
