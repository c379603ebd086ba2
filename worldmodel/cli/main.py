"""The ``worldmodel`` command: parse, call one library function, print. ``worldmodel <command> --help``.

The flags of config fields are made from the config dataclasses (``worldmodel.cli.config``: a flag's type,
default and help are its field's); the others (presets, paths, benchmarks) are written by hand.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from worldmodel.cli.config import ConfigFlags, command_list
from worldmodel.cli.evaluation import add_eval_policy_parser as _add_eval_policy_parser
from worldmodel.cli.evaluation import add_eval_worlds_parser as _add_eval_worlds_parser
from worldmodel.cli.evaluation import add_render_rollout_parser as _add_render_rollout_parser
from worldmodel.cli.fm import add_eval_parser as _add_fm_eval_parser
from worldmodel.cli.fm import add_train_parser as _add_fm_train_parser
from worldmodel.cli.policy import add_train_parser as _add_policy_train_parser
from worldmodel.cli.ssl import add_eval_parser as _add_ssl_eval_parser
from worldmodel.cli.ssl import add_train_parser as _add_ssl_train_parser
from worldmodel.cli.traffic import add_train_parser as _add_traffic_train_parser
from worldmodel.data.hdf5 import DataError
from worldmodel.traffic.scenario import ScenarioError


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 1."""


@functools.cache
def _sim_flags() -> ConfigFlags:
    from worldmodel.viz.sim_run import SimRunConfig

    return ConfigFlags(SimRunConfig, rename={"warmup_s": "warmup"})


@functools.cache
def _data_flags() -> dict[str, ConfigFlags]:
    """The config flags of ``data record`` and ``data extract`` (``--no-progress`` is every data command's)."""
    from worldmodel.data.extract import ExtractConfig
    from worldmodel.data.record import RecordConfig

    return {"record": ConfigFlags(RecordConfig, rename={"warmup_s": "warmup"}, exclude=("progress",)),
            "extract": ConfigFlags(ExtractConfig, exclude=("progress",))}  # fmt: skip


def _cmd_sim(args: argparse.Namespace) -> int:
    from worldmodel.viz.sim_run import run_simulation

    return _print(run_simulation(_sim_flags().config(args)))


def _print(obj: dict) -> int:
    print(json.dumps(obj, indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    progress = not args.no_progress
    if args.data_command == "record":
        from worldmodel.data.record import record

        config = _data_flags()["record"].config(args, progress=progress)
        _mkdir_for(args.out)
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
        return _print(
            import_ppuu(args.dir, args.out, state_shift=not args.no_state_shift, old_channels=args.old_channels)
        )
    if args.data_command == "extract":
        from worldmodel.data.extract import extract

        config = _data_flags()["extract"].config(args, progress=progress)
        _mkdir_for(args.out)
        return _print(extract(args.files, args.out, config))
    if args.data_command == "build":
        from worldmodel.data.recipes import build

        return _print(build(args.recipe, args.out_dir, rebuild=args.rebuild, progress=progress))
    if args.data_command == "inspect":
        from worldmodel.data.inspect import inspect_file

        return _print(inspect_file(args.file))
    raise UserError(f"unknown data command {args.data_command}")


def _mkdir_for(path: str) -> None:
    """Make the directory of an output file (``OutputError``, one line naming ``path``, if impossible)."""
    from worldmodel.files import make_dir

    make_dir(Path(path).parent, path)


def _cmd_bench(args: argparse.Namespace) -> int:
    from worldmodel.bench import pipeline as bench

    runners: dict[str, Callable[[bool], dict]] = {"sim": bench.bench_sim, "data": bench.bench_data, "fm": _bench_fm,
                                                  "ssl": _bench_ssl, "policy": _bench_policy,
                                                  "planner": _bench_planner}  # fmt: skip
    print(json.dumps(runners[args.what](args.quick)))
    return 0


def _bench_fm(quick: bool) -> dict:
    from worldmodel.bench import pipeline as bench
    from worldmodel.bench.fm import bench_fm

    result = bench_fm(quick)
    return result if "machine" in result else result | {"machine": bench.machine()}


def _bench_policy(quick: bool) -> dict:
    from worldmodel.bench.policy import bench_policy

    return bench_policy(quick)


def _bench_planner(quick: bool) -> dict:
    from worldmodel.bench import pipeline as bench
    from worldmodel.bench.planner import bench_planner

    return bench_planner(quick) | {"machine": bench.machine()}


def _cmd_train(args: argparse.Namespace) -> int:
    from worldmodel.cli.fm import run_train

    return _print_summary(run_train(args))


def _print_summary(summary: dict) -> int:
    """Print a training summary as JSON from rank 0 only (under torchrun, rank 0 speaks)."""
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from worldmodel.cli.fm import run_eval

    return _print(run_eval(args))


def _bench_ssl(quick: bool) -> dict:
    from worldmodel.bench.ssl import bench_ssl

    return bench_ssl(quick)


def _cmd_train_policy(args: argparse.Namespace) -> int:
    from worldmodel.cli.policy import run_train

    return run_train(args)


def _cmd_train_traffic(args: argparse.Namespace) -> int:
    from worldmodel.cli.traffic import run_train

    return run_train(args)


def _cmd_train_ssl(args: argparse.Namespace) -> int:
    from worldmodel.cli.ssl import run_train

    return _print_summary(run_train(args))


def _cmd_eval_ssl(args: argparse.Namespace) -> int:
    from worldmodel.cli.ssl import run_eval

    return _print(run_eval(args))


def _cmd_render(args: argparse.Namespace) -> int:
    from worldmodel.viz.render import render_predictions

    if args.render_command != "predictions":
        raise UserError(f"unknown render command {args.render_command}")
    return _print(render_predictions(args.checkpoint, args.data, args.out, windows=args.windows, k=args.k,
                                     split=args.split, horizon=args.horizon, seed=args.seed, scale=args.scale,
                                     fps=args.fps, device=args.device))  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldmodel", description="World models for model-based control on traffic.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sim", help="run a scenario: top-down video + realism summary (JSON)")
    _sim_flags().add_to(p)
    p.set_defaults(func=_cmd_sim)
    _add_data_parser(sub)
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_render_parser(sub)

    p = sub.add_parser("bench", help="throughput benchmarks, one JSON object on stdout")
    p.add_argument("what", choices=["sim", "data", "fm", "ssl", "policy", "planner"], help="what to measure")
    p.add_argument("--quick", action="store_true", help="a shorter run (fewer rounds, smaller recordings)")
    p.set_defaults(func=_cmd_bench)

    commands = command_list(parser)
    width = max(len(path) for path, _ in commands) + 2
    parser.epilog = "commands (worldmodel COMMAND --help for its flags):\n" + "\n".join(
        f"  {path:<{width}}{text}" for path, text in commands
    )
    return parser


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="datasets: record, import, extract, build, inspect")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("record", help="simulate a scenario and record every car in its section (trajectories.h5)")
    _data_flags()["record"].add_to(p)
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
    _data_flags()["extract"].add_to(p)
    p = dsub.add_parser("build", help="build a dataset from a recipe (datasets/<name>.toml)")
    p.add_argument("recipe", help="recipe TOML")
    p.add_argument("--out-dir", default=None, help="output directory (default: datasets/<name>/)")
    p.add_argument("--rebuild", action="store_true", help="re-record recordings that exist")
    p = dsub.add_parser("inspect", help="validate a trajectories.h5 or episodes.h5 and print its summary")
    p.add_argument("file")
    for p in dsub.choices.values():
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    data.set_defaults(func=_cmd_data)


def _add_train_parser(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train models: fm (forward model), ssl (backbone), policy (in imagination), "
        "traffic (the other cars' motion)",
    )
    tsub = train.add_subparsers(dest="train_command", required=True)
    _add_fm_train_parser(tsub).set_defaults(func=_cmd_train)
    _add_ssl_train_parser(tsub).set_defaults(func=_cmd_train_ssl)
    _add_policy_train_parser(tsub).set_defaults(func=_cmd_train_policy)
    _add_traffic_train_parser(tsub).set_defaults(func=_cmd_train_traffic)


def _add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate: fm (predictions), ssl (probes), policy (driving), worlds (planners')")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    _add_fm_eval_parser(esub).set_defaults(func=_cmd_eval)
    _add_ssl_eval_parser(esub).set_defaults(func=_cmd_eval_ssl)
    _add_eval_policy_parser(esub)  # sets its own func
    _add_eval_worlds_parser(esub)  # sets its own func


def _add_render_parser(sub) -> None:
    render = sub.add_parser("render", help="videos: predictions (forward model), rollout (a driven car)")
    rsub = render.add_subparsers(dest="render_command", required=True)
    p = rsub.add_parser("predictions", help="video of true vs predicted futures of a few windows")
    p.add_argument("--checkpoint", required=True, help="forward-model checkpoint (.pt)")
    p.add_argument("--data", required=True, help="episodes.h5")
    p.add_argument("--out", required=True, help="output video (.mp4 or .gif)")
    p.add_argument("--windows", type=int, default=4, help="windows shown side by side (default 4)")
    p.add_argument("--k", type=int, default=3, help="sampled futures shown (default 3)")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--horizon", type=int, default=None, help="predicted steps (default: as trained)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=3, help="upscaling factor of the views (default 3)")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second (default 5)")
    p.add_argument("--device", default="auto")
    render.set_defaults(func=_cmd_render)
    _add_render_rollout_parser(rsub)  # sets its own func


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from worldmodel.traffic.raster import single_threaded_opencv

    single_threaded_opencv()  # many small images: OpenCV's thread pool costs more than it gives
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
