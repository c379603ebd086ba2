"""Writing output files safely: atomically, under unique temporary names, with one-line errors.

Every file the package writes goes through here (datasets, checkpoints, JSON, metrics, videos):

- ``AtomicPath(path)`` reserves a fresh temporary file beside ``path`` (hidden and unique:
  ``.<stem>.<pid>-<random>.tmp<suffix>``, created with ``O_EXCL``; the suffix stays last because some
  writers pick the format from it) that ``commit()`` renames over ``path`` (atomic on POSIX) and
  ``abort()`` removes. Two processes writing the same output never share a temporary file: each writes
  its own and the last to commit wins, whole.
- ``atomic_output`` (a temporary path to write), ``atomic_open`` (an open binary file, flushed to disk
  before the rename), ``write_text`` and ``write_json`` are the usual ways in; ``make_dir`` is ``mkdir -p``.

A problem with an output (its directory cannot be created or written, the path is a directory) raises an
``OutputError`` whose message is one line naming the output path, never the temporary file. ``FileError``,
its base, is the package's one-line error about a file (``<path>: <problem>``); the CLI prints it, exit 1.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_RESERVE_ATTEMPTS = 8


def _restore(cls: type, message: str) -> FileError:
    error = cls.__new__(cls, message)  # no __init__: the message is already whole
    error.args = (message,)
    return error


class FileError(ValueError):
    """A problem with one file: the message is one line, ``<path>: <problem>`` (just the problem without path)."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        text = " ".join(str(problem).split())  # one line, whatever the problem text held
        super().__init__(f"{path}: {text}" if path is not None else text)

    def __reduce__(self):  # crosses process boundaries (worker pools) with its message intact
        return _restore, (type(self), str(self))


class OutputError(FileError):
    """An output that cannot be written: its directory cannot be made or written, or the path is a directory."""


def _reason(exc: OSError) -> str:
    return "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc)).lower()


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) if it is not a directory."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def make_dir(folder: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """``mkdir -p folder``; ``OutputError`` naming ``output`` (default: the folder) if it cannot be made."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _blocking_file(folder)
        if blocker == folder:
            problem = f"{folder} is a file, not a directory"
        elif blocker is not None:
            problem = f"cannot create directory {folder}: {blocker} is a file, not a directory"
        else:
            problem = f"cannot create directory {folder}: {_reason(exc)}"
        raise OutputError(output if output is not None else folder, problem) from exc
    return folder


class AtomicPath:
    """A fresh temporary file beside ``path`` that becomes ``path`` on ``commit()``, or vanishes on ``abort()``.

    ``tmp`` exists (empty) from the start, so the name is this writer's alone; write it with any writer
    that truncates (``open(tmp, "w")``, ``h5py.File(tmp, "w")``). ``make_parents``: create the missing
    directories of ``path`` (else a missing directory is an ``OutputError``).
    """

    def __init__(self, path: str | os.PathLike, make_parents: bool = False) -> None:
        self.path = Path(path)
        folder = self.path.parent
        if make_parents:
            make_dir(folder, self.path)
        elif not folder.is_dir():
            blocker = _blocking_file(folder)
            problem = f"{blocker} is a file, not a directory" if blocker else f"directory {folder} does not exist"
            raise OutputError(self.path, problem)
        if self.path.is_dir():
            raise OutputError(self.path, "is a directory; expected a file name")
        self.tmp = self._reserve()

    def _reserve(self) -> Path:
        for _ in range(_RESERVE_ATTEMPTS):
            tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{self.path.suffix}")
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            except FileExistsError:
                continue
            except OSError as exc:
                raise OutputError(self.path, f"cannot write in {self.path.parent}: {_reason(exc)}") from exc
            return tmp
        raise OutputError(self.path, f"cannot reserve a temporary file in {self.path.parent}")

    def commit(self) -> None:
        """Rename the temporary file over ``path``."""
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise OutputError(self.path, f"cannot replace it with the new file: {_reason(exc)}") from exc

    def abort(self) -> None:
        """Remove the temporary file (nothing happens to ``path``)."""
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | os.PathLike, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` on success, remove it on any exception."""
    atomic = AtomicPath(path, make_parents)
    try:
        yield atomic.tmp
    except BaseException:
        atomic.abort()
        raise
    atomic.commit()


@contextmanager
def atomic_open(path: str | os.PathLike, make_parents: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file open for writing; on success it is flushed to disk (fsync) and renamed to ``path``."""
    with atomic_output(path, make_parents) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str, make_parents: bool = True) -> Path:
    """``text`` at ``path``, atomically; missing parent directories are made. Returns the path."""
    with atomic_output(path, make_parents) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(obj: dict, path: str | os.PathLike, sort_keys: bool = False) -> Path:
    """``obj`` as indented JSON at ``path``, atomically; missing parent directories are made."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


__all__ = [
    "AtomicPath",
    "FileError",
    "OutputError",
    "atomic_open",
    "atomic_output",
    "make_dir",
    "write_json",
    "write_text",
]
