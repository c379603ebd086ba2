"""Safe output files (``worldmodel.files``): unique temporary names, atomic rename, one-line errors naming the
output (never the temporary file), through the library and the ``worldmodel`` command."""

from __future__ import annotations

import os
import pickle

import pytest

from worldmodel.cli import main
from worldmodel.data.hdf5 import DataError
from worldmodel.files import AtomicPath, FileError, OutputError, atomic_open, make_dir, write_json, write_text


def one_line(error: BaseException, path, *words: str) -> str:
    message = str(error)
    assert "\n" not in message and str(path) in message and ".tmp" not in message, message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def test_two_writers_of_one_output_get_their_own_temporary_files(tmp_path):
    out = tmp_path / "out.h5"
    first, second = AtomicPath(out), AtomicPath(out)
    assert first.tmp != second.tmp and first.tmp.exists() and second.tmp.exists()
    assert first.tmp.parent == tmp_path and first.tmp.name.startswith(".") and first.tmp.suffix == ".h5"
    first.tmp.write_text("first")
    second.tmp.write_text("second")
    first.commit()
    second.commit()  # the last one wins, whole: nothing was shared or lost half-way
    assert out.read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = write_text(tmp_path / "a" / "b" / "x.json", "old")  # missing directories are made
    with pytest.raises(RuntimeError), atomic_open(out) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert out.read_text() == "old" and sorted(p.name for p in out.parent.iterdir()) == ["x.json"]
    write_json({"a": 1}, out)
    assert out.read_text() == '{\n  "a": 1\n}\n'


def test_output_under_a_regular_file_is_one_line_naming_the_output(tmp_path):
    (tmp_path / "somefile.txt").write_text("x")
    out = tmp_path / "somefile.txt" / "sub" / "x.h5"
    for attempt in (lambda: make_dir(out.parent, out), lambda: AtomicPath(out, make_parents=True),
                    lambda: write_json({}, out), lambda: AtomicPath(out)):  # fmt: skip
        with pytest.raises(OutputError) as info:
            attempt()
        one_line(info.value, out, "somefile.txt is a file, not a directory")


def test_unwritable_directory_is_one_line_naming_the_output(tmp_path, monkeypatch):
    real_open = os.open

    def denied(path, flags, *args):
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", denied)  # root ignores file modes: deny the way a read-only folder would
    with pytest.raises(OutputError) as info:
        write_json({}, tmp_path / "x.json")
    one_line(info.value, tmp_path / "x.json", "cannot write in", "permission denied")


def test_output_that_is_a_directory_and_missing_directory(tmp_path):
    with pytest.raises(OutputError) as info:
        AtomicPath(tmp_path)
    one_line(info.value, tmp_path, "is a directory")
    with pytest.raises(DataError) as info:  # the data layer's error: every file error is one
        AtomicPath(tmp_path / "missing" / "x.h5")
    one_line(info.value, tmp_path / "missing" / "x.h5", "does not exist")


def test_file_errors_survive_a_process_boundary():
    for error in (OutputError("out.h5", "cannot\nwrite"), DataError(None, "bad")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error) and isinstance(again, FileError)


def test_cli_out_under_a_regular_file_is_one_line_exit_1(tmp_path, capsys):
    (tmp_path / "somefile.txt").write_text("x")
    ngsim = tmp_path / "t.txt"
    ngsim.write_text("")
    out = tmp_path / "somefile.txt" / "sub" / "x.h5"
    for argv in (["data", "import-ngsim", str(ngsim), "--out", str(out)],
                 ["data", "extract", str(ngsim), "--out", str(out)],
                 ["data", "import-ppuu", str(tmp_path), "--out", str(out)]):  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        one_line(err, out, "somefile.txt is a file, not a directory")
