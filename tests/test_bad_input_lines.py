"""Misleading lines fixed: each bad input says what is wrong, naming the path or the flag (one line, exit 1)."""

from __future__ import annotations

import pytest

from worldmodel.cli import main


def run(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_inspect_of_a_directory_says_it_is_a_directory(tmp_path, capsys):
    err = run(["data", "inspect", str(tmp_path)], capsys)
    assert f"{tmp_path}: is a directory, not an HDF5 file" in err and "no such" not in err
    (tmp_path / "episodes.h5").write_bytes(b"")
    assert f"did you mean {tmp_path / 'episodes.h5'}" in run(["data", "inspect", str(tmp_path)], capsys)


def test_import_ppuu_of_a_file_says_it_is_a_file(tmp_path, capsys):
    dump = tmp_path / "car1.pkl"
    dump.write_bytes(b"")
    err = run(["data", "import-ppuu", str(dump), "--out", str(tmp_path / "e.h5")], capsys)
    assert f"{dump}: is a file, not a directory" in err and "no such" not in err


@pytest.mark.parametrize("lr", ["nan", "inf", "0", "-1e-3"])
def test_a_bad_learning_rate_names_the_flag(tmp_path, capsys, lr):
    fm = ["train", "fm", "--data", str(tmp_path / "e.h5"), "--out", str(tmp_path / "r"), "--preset", "tiny"]
    policy = ["train", "policy", "--fm", str(tmp_path / "fm.pt"), "--data", str(tmp_path / "e.h5")]
    for argv in (fm, policy):
        err = run([*argv, f"--lr={lr}", "--no-progress"], capsys)
        assert "(--lr) must be a finite number > 0" in err, err


def test_train_ssl_names_the_learning_rate_flag():
    from worldmodel.ssl.train import TrainSSLConfig

    with pytest.raises(ValueError, match=r"lr \(--lr\) must be a finite number > 0, got nan"):
        TrainSSLConfig(lr=float("nan"))
