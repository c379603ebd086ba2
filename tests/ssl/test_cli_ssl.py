"""Smoke tests of ``worldmodel train ssl``, ``eval ssl`` and ``bench ssl`` on tiny settings."""

from __future__ import annotations

import argparse
import json

from worldmodel.bench.ssl import bench_ssl
from worldmodel.cli import main
from worldmodel.cli import ssl as ssl_cli
from worldmodel.nn.backbone import BackboneConfig
from worldmodel.ssl.objectives import METHODS


def test_train_and_eval_commands(micro_data, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "ssl", "--method", "simclr", "--preset", "tiny", "--data", str(micro_data), "--out", str(run),
               "--steps", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-progress"])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and (run / "backbone.pt").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["ssl"]["method"] == "simclr" and config["batch_size"] == 4
    assert config["backbone"]["dropout"] == 0.0  # pretraining without dropout by default (SSL_DROPOUT)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    out = tmp_path / "eval.json"
    rc = main(["eval", "ssl", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--data", str(micro_data),
               "--samples", "30", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["method"] == "simclr" and json.loads(out.read_text()) == printed
    assert "speed_mps" in printed["random"]["probes"] and "repr_effective_rank" in printed["ssl"]["health"]


def test_bad_input_is_one_line(tmp_path, capsys):
    rc = main(["train", "ssl", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "r"), "--preset",
               "tiny", "--steps", "1", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "missing.h5" in err


def test_parser_methods_match_the_objectives():
    assert ssl_cli.METHODS == METHODS


def test_bench_reports_every_method():
    result = bench_ssl(quick=True, batch_size=4, backbone=BackboneConfig.tiny())
    assert set(result["images_per_s"]) == set(METHODS) and all(v > 0 for v in result["images_per_s"].values())
    assert "cores" in result["machine"]


def test_view_and_dropout_flags_reach_the_config():
    parser = ssl_cli.add_train_parser(argparse.ArgumentParser().add_subparsers())
    args = parser.parse_args(["--data", "d.h5", "--preset", "tiny", "--dropout", "0.2", "--min-offset", "0",
                              "--max-offset", "5", "--drop-vehicles", "0.3", "--projector", "1024,512"])  # fmt: skip
    config = ssl_cli.train_config(args)
    assert config.backbone.dropout == 0.2 and config.ssl.projector == (1024, 512)
    assert (config.views.min_offset, config.views.max_offset, config.views.drop_vehicles) == (0, 5, 0.3)
    assert ssl_cli.train_config(parser.parse_args(["--data", "d.h5"])).backbone.dropout == 0.0  # ppuu preset
