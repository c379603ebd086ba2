"""The ``worldmodel`` command: parse, call one library function, print. ``worldmodel <command> --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from worldmodel.data.hdf5 import DataError
from worldmodel.evaluation.cli import add_eval_policy_parser as _add_eval_policy_parser
from worldmodel.evaluation.cli import add_eval_worlds_parser as _add_eval_worlds_parser
from worldmodel.evaluation.cli import add_render_rollout_parser as _add_render_rollout_parser
from worldmodel.ssl.cli import add_eval_parser as _add_ssl_eval_parser
from worldmodel.ssl.cli import add_train_parser as _add_ssl_train_parser
from worldmodel.traffic.scenario import ScenarioError
from worldmodel.training.policy_cli import add_train_parser as _add_policy_train_parser


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
        return _print(
            import_ppuu(args.dir, args.out, state_shift=not args.no_state_shift, old_channels=args.old_channels)
        )
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
    """Make the directory of an output file (``OutputError``, one line naming ``path``, if impossible)."""
    from worldmodel.files import make_dir

    make_dir(Path(path).parent, path)


def _cmd_bench(args: argparse.Namespace) -> int:
    from worldmodel import bench

    runners: dict[str, Callable[[bool], dict]] = {"sim": bench.bench_sim, "data": bench.bench_data, "fm": _bench_fm,
                                                  "ssl": _bench_ssl, "policy": _bench_policy}  # fmt: skip
    print(json.dumps(runners[args.what](args.quick)))
    return 0


def _bench_fm(quick: bool) -> dict:
    from worldmodel import bench
    from worldmodel.bench_fm import bench_fm

    result = bench_fm(quick)
    return result if "machine" in result else result | {"machine": bench.machine()}


def _bench_policy(quick: bool) -> dict:
    from worldmodel.bench_policy import bench_policy

    return bench_policy(quick)


def _cmd_train(args: argparse.Namespace) -> int:
    from worldmodel.nn.forward_model import ForwardModelConfig
    from worldmodel.training.fm import TrainFMConfig, train_fm

    if args.train_command != "fm":
        raise UserError(f"unknown train command {args.train_command}")
    overrides = {
        name: getattr(args, name)
        for name in ("beta", "prior_beta", "dropout", "z_dropout", "free_bits", "kl_anneal_steps", "image_update")
    }
    overrides = {name: value for name, value in overrides.items() if value is not None}
    preset = {"tiny": ForwardModelConfig.tiny, "ppuu": ForwardModelConfig.ppuu}[args.preset]
    model = preset(args.mode, **overrides)
    if args.context_frames is not None:
        model = replace(model, backbone=replace(model.backbone, context_frames=args.context_frames))
    config = TrainFMConfig(
        data=args.data,
        out=args.out,
        model=model,
        predict_frames=args.predict_frames,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_warmup_steps=args.lr_warmup,
        lr_schedule=args.lr_schedule,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        val_every=args.val_every,
        val_windows=args.val_windows,
        ckpt_every=args.ckpt_every,
        log_every=args.log_every,
        workers=args.workers,
        warm_start=args.warm_start,
        backbone=args.backbone,
        freeze_backbone=args.freeze_backbone,
        resume=args.resume,
        progress=not args.no_progress,
    )
    summary = train_fm(config)
    if _is_main_process():  # under torchrun, rank 0 speaks
        print(json.dumps(summary, indent=2))
    return 0


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from worldmodel.evaluation.fm import EvalFMConfig, evaluate_fm

    if args.eval_command != "fm":
        raise UserError(f"unknown eval command {args.eval_command}")
    config = EvalFMConfig(checkpoint=args.checkpoint, data=args.data, split=args.split, k=args.k,
                          horizon=args.horizon, windows=args.windows, seed=args.seed, batch_size=args.batch_size,
                          device=args.device, workers=args.workers, progress=not args.no_progress)  # fmt: skip
    result = evaluate_fm(config, out=args.out)
    print(json.dumps({"out": args.out, "plot": str(Path(args.out).with_suffix(".png")) if args.out else None,
                      "protocol": result["protocol"], "summary": result["summary"],
                      "action_sensitivity": result["action_sensitivity"], "uncertainty": result["uncertainty"]},
                     indent=2))  # fmt: skip
    return 0


def _bench_ssl(quick: bool) -> dict:
    from worldmodel.ssl.bench import bench_ssl

    return bench_ssl(quick)


def _cmd_train_policy(args: argparse.Namespace) -> int:
    from worldmodel.training.policy_cli import run_train

    return run_train(args)


def _cmd_train_ssl(args: argparse.Namespace) -> int:
    from worldmodel.ssl.cli import run_train

    summary = run_train(args)
    if _is_main_process():  # under torchrun, rank 0 speaks
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval_ssl(args: argparse.Namespace) -> int:
    from worldmodel.ssl.cli import run_eval

    return _print(run_eval(args))


def _cmd_render(args: argparse.Namespace) -> int:
    from worldmodel.render import render_predictions

    if args.render_command != "predictions":
        raise UserError(f"unknown render command {args.render_command}")
    return _print(render_predictions(args.checkpoint, args.data, args.out, windows=args.windows, k=args.k,
                                     split=args.split, horizon=args.horizon, seed=args.seed, scale=args.scale,
                                     fps=args.fps, device=args.device))  # fmt: skip


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

    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_render_parser(sub)

    p = sub.add_parser("bench", help="throughput benchmarks, one JSON object on stdout")
    p.add_argument("what", choices=["sim", "data", "fm", "ssl", "policy"], help="what to measure")
    p.add_argument("--quick", action="store_true", help="a short run (< 30 s)")
    p.set_defaults(func=_cmd_bench)
    return parser


def _add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="train models: fm (forward model), ssl (backbone pretraining)")
    tsub = train.add_subparsers(dest="train_command", required=True)
    p = tsub.add_parser("fm", help="train the forward model (runs under torchrun for DDP)")
    p.add_argument("--data", required=True, help="episodes.h5 (train split; validation on the val split)")
    p.add_argument("--out", default="runs/fm", help="run directory (default runs/fm)")
    p.add_argument("--preset", choices=["tiny", "ppuu"], default="ppuu", help="model size (default ppuu)")
    p.add_argument("--mode", choices=["deterministic", "vae", "vae-lp"], default="vae")
    p.add_argument("--steps", type=int, default=200_000, help="total optimiser steps (default 200000)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split over processes (default 64)")
    p.add_argument("--predict-frames", type=int, default=20, help="predicted frames per window (default 20)")
    p.add_argument("--context-frames", type=int, default=None,
                   help="context frames Tc (default: the preset's, ppuu 20, tiny 4)")  # fmt: skip
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--lr-warmup", type=int, default=0, help="linear warm-up steps (default 0)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--beta", type=float, default=None, help="KL weight (default: the preset's, 1e-6)")
    p.add_argument("--dropout", type=float, default=None, help="dropout (default: the preset's, 0.1)")
    p.add_argument("--z-dropout", type=float, default=None, help="z-dropout (default: the preset's, 0.5)")
    p.add_argument("--free-bits", type=float, default=None, help="free bits per latent unit [nats] (default 0)")
    p.add_argument("--kl-anneal", dest="kl_anneal_steps", type=int, default=None,
                   help="linear warm-up of beta over this many steps (default 0: none)")  # fmt: skip
    p.add_argument("--prior-beta", type=float, default=None,
                   help="vae-lp: weight of the prior's fit KL(sg(q) || p) (default 1)")  # fmt: skip
    p.add_argument("--image-update", choices=["logit", "pixel"], default=None,
                   help="image update: logit (sigmoid(delta + logit(last))) or pixel (last + delta, clamped); "
                   "default: the preset's")  # fmt: skip
    p.add_argument("--warm-start", default=None, help="initialise from a (deterministic) checkpoint")
    p.add_argument("--backbone", default=None, help="initialise the backbone from a backbone.pt (train ssl)")
    p.add_argument("--freeze-backbone", action="store_true", help="keep the backbone's weights fixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision (CUDA only)")
    p.add_argument("--val-every", type=int, default=1000, help="steps between validation passes (0: never)")
    p.add_argument("--val-windows", type=int, default=512, help="val windows per validation pass")
    p.add_argument("--ckpt-every", type=int, default=1000, help="steps between checkpoints/last.pt writes")
    p.add_argument("--log-every", type=int, default=10, help="steps between metrics.jsonl lines")
    p.add_argument("--workers", type=int, default=2, help="data loader workers per process")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from checkpoints/last.pt if it exists (default yes)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)
    _add_ssl_train_parser(tsub).set_defaults(func=_cmd_train_ssl)
    _add_policy_train_parser(tsub).set_defaults(func=_cmd_train_policy)


def _add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate models: fm (forward model), ssl (probes of a pretrained encoder)")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    p = esub.add_parser("fm", help="per-step prediction metrics of a forward model (JSON + plot)")
    p.add_argument("--checkpoint", required=True, help="forward-model checkpoint (.pt)")
    p.add_argument("--data", required=True, help="episodes.h5")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--k", type=int, default=10, help="sampled futures and dropout replicas (default 10)")
    p.add_argument("--horizon", type=int, default=20, help="predicted steps (default 20)")
    p.add_argument("--windows", type=int, default=200, help="windows evaluated (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="windows per batch (default 16)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--out", default=None, help="output JSON (a .png plot is written next to it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_eval)
    _add_ssl_eval_parser(esub).set_defaults(func=_cmd_eval_ssl)
    _add_eval_policy_parser(esub)  # sets its own func
    _add_eval_worlds_parser(esub)  # sets its own func


def _add_render_parser(sub) -> None:
    render = sub.add_parser("render", help="videos: predictions (forward model)")
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
