"""Smoke tests of ``worldmodel train fm``, ``eval fm``, ``render predictions`` and ``bench fm``."""

import json

import imageio.v2 as imageio

from worldmodel.bench import fm as bench_fm
from worldmodel.cli import main


def test_train_eval_render_on_tiny_settings(micro_data, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "fm", "--data", str(micro_data), "--out", str(run), "--preset", "tiny", "--mode", "vae",
               "--steps", "3", "--batch-size", "4", "--predict-frames", "2", "--lr", "1e-3", "--beta", "1e-4",
               "--val-every", "3", "--val-windows", "8", "--log-every", "1", "--workers", "0", "--no-progress"])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 3 and summary["val"]["split"] == "val"
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["beta"] == 1e-4 and config["batch_size"] == 4 and config["lr"] == 1e-3
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4  # 3 train lines + 1 val line

    out = tmp_path / "eval.json"
    rc = main(["eval", "fm", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--data", str(micro_data),
               "--k", "2", "--horizon", "2", "--windows", "4", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["protocol"]["windows_evaluated"] == 4 and out.exists() and out.with_suffix(".png").exists()

    video = tmp_path / "pred.gif"
    rc = main(["render", "predictions", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--data",
               str(micro_data), "--out", str(video), "--windows", "1", "--k", "1", "--scale", "1"])  # fmt: skip
    assert rc == 0 and len(imageio.mimread(video)) == 4 + 2


def test_bad_input_is_one_line_and_exit_code_1(tmp_path, capsys):
    rc = main(["train", "fm", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "r"), "--preset", "tiny",
               "--steps", "1", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "missing.h5" in err
    rc = main(["eval", "fm", "--checkpoint", str(tmp_path / "none.pt"), "--data", "x.h5", "--no-progress"])
    assert rc == 1 and "none.pt" in capsys.readouterr().err


def test_bench_fm_prints_one_json_object_with_the_machine(monkeypatch, capsys):
    monkeypatch.setattr(bench_fm, "bench_fm", lambda quick: {"train_windows_per_s_tiny": 1.0, "quick": quick})
    assert main(["bench", "fm", "--quick"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quick"] is True and result["machine"]["cores"] >= 1
