"""Reading checkpoints, the one way: ``load_checkpoint``; and self-contained checkpoints of a configured module.

A checkpoint is ``{"format": 1, "kind", "config", "state_dict", "step", **extra}``: plain tensors, dicts and
numbers. ``load_checkpoint`` reads it with ``torch.load(..., weights_only=True)`` (a pickled object is never
built, so a malicious file runs nothing) and checks its structure; ``SelfContainedCheckpoint.from_checkpoint``
rebuilds the module from its config and loads its weights.

Every problem (a missing, empty, truncated, foreign or refused file, another kind, a missing or invalid
config key, weights that do not fit the config, a damaged training state) is a ``CheckpointError``: a
``ValueError`` whose message is one line, ``<file>: <what is wrong>; <what to do>``. The CLI prints it, exit 1.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from worldmodel.files import FileError

CHECKPOINT_FORMAT = 1
#: What to do about a bad checkpoint of each kind: pass one that its command wrote.
ADVICE = {
    "forward_model": "pass a checkpoint written by `worldmodel train fm`",
    "policy": "pass a checkpoint written by `worldmodel train policy`",
    "ssl": "pass the checkpoints/last.pt of `worldmodel train ssl`",
    "backbone": "pass the backbone.pt written by `worldmodel train ssl`",
}
_DETAIL_CHARS = 160  # of a library's error text quoted in a message
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive


class CheckpointError(FileError):
    """A checkpoint that cannot be used: one line, ``<path>: <problem>; <advice>``."""

    def __init__(self, path: str | os.PathLike | None, problem: str, advice: str | None = None) -> None:
        super().__init__(path, f"{problem}; {advice}" if advice else problem)


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file at the checkpoint's path (a ``FileNotFoundError`` too)."""


class Checkpoint(dict):
    """A loaded checkpoint: the dict, and ``path``, the file it was read from (named by later errors)."""

    path: Path | None = None


def advice_for(kind: str | None) -> str:
    """What to do about a bad checkpoint of ``kind`` (``ADVICE``; any kind: pass one worldmodel wrote)."""
    return ADVICE.get(kind or "", "pass a checkpoint written by worldmodel")


def describe(exc: BaseException) -> str:
    """A library's exception as a short phrase (first line, at most ``_DETAIL_CHARS`` characters)."""
    if isinstance(exc, KeyError):
        return f"missing key {exc.args[0]!r}" if exc.args else "missing key"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def _read(path: Path, map_location: str | torch.device, advice: str) -> object:
    """``torch.load(path, weights_only=True)``, any failure as a ``CheckpointError``."""
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a pickle protocol: the outcome is what counts
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise CheckpointError(path, f"cannot read it ({exc.strerror or describe(exc)})", advice) from exc
    except Exception as exc:  # a damaged or foreign file fails in many ways (RuntimeError, EOFError, ...)
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        with open(path, "rb") as f:
            is_zip = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
        if refused:
            problem = f"refused: it holds a pickled Python object ({refused.group(1)}); weights-only loading runs none"
        elif is_zip:  # torch.save's archive, cut short or damaged
            problem = f"truncated or corrupted: torch cannot read its zip archive ({type(exc).__name__})"
        elif isinstance(exc, EOFError):
            problem = "truncated: the file ends too early"
        else:
            problem = f"not a torch checkpoint file ({type(exc).__name__} from torch.load)"
        raise CheckpointError(path, problem, advice) from exc


def check_checkpoint(ckpt: object, kind: str | None, path: str | os.PathLike | None = None,
                     advice: str | None = None) -> None:  # fmt: skip
    """Raise ``CheckpointError`` unless ``ckpt`` is a format-1 checkpoint dict (of ``kind``, if given: then its
    ``config`` must be a dict and its ``state_dict`` a dict of tensors)."""
    advice = advice or advice_for(kind)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(path, f"not a format-1 checkpoint (it holds a {type(ckpt).__name__})", advice)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"not a format-1 checkpoint (format {ckpt.get('format')!r})", advice)
    if kind is None:
        return
    if ckpt.get("kind") != kind:
        raise CheckpointError(path, f"a {ckpt.get('kind')!r} checkpoint, expected kind {kind!r}", advice)
    if not isinstance(ckpt.get("config"), Mapping):
        raise CheckpointError(path, f"its config is missing or not a dict ({type(ckpt.get('config')).__name__})",
                              advice)  # fmt: skip
    weights = ckpt.get("state_dict")
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(path, "its state_dict is missing or holds values that are not tensors", advice)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location: str | torch.device = "cpu",
                    advice: str | None = None) -> Checkpoint:  # fmt: skip
    """Read a checkpoint file (``weights_only=True``) and check it (``check_checkpoint``).

    ``kind``: the kind required (None: any format-1 checkpoint); ``advice``: what an error tells the user to
    do (default: pass a checkpoint of the kind's command). Raises ``CheckpointError`` (``CheckpointNotFoundError``
    for a missing file).
    """
    path = Path(path)
    advice = advice or advice_for(kind)
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file", advice)
    if not path.exists():
        raise CheckpointNotFoundError(path, "no such checkpoint file", advice)
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (0 bytes): not a checkpoint", advice)
    ckpt = _read(path, map_location, advice)
    check_checkpoint(ckpt, kind, path, advice)
    loaded = Checkpoint(ckpt)
    loaded.path = path
    return loaded


@contextmanager
def checkpoint_errors(path: str | os.PathLike | None, problem: str, advice: str | None = None) -> Iterator[None]:
    """Turn what using a checkpoint's contents raises (``KeyError``, ``TypeError``, ``RuntimeError``, ...) into a
    ``CheckpointError`` ``<path>: <problem> (<detail>); <advice>``; ``FileError`` passes through."""
    try:
        yield
    except FileError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(path, f"{problem} ({describe(exc)})", advice) from exc


def _some(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                        strict: bool = True) -> str | None:  # fmt: skip
    """How ``found`` fails to fit a module whose state dict is ``expected`` (None if it fits).

    ``strict``: missing weights count too (else only unexpected names and other shapes)."""
    missing = [k for k in expected if k not in found] if strict else []
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_some(unexpected)})")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} of another shape ({k}: {list(found[k].shape)} in the file, "
                     f"{list(expected[k].shape)} in the model)")  # fmt: skip
    return ", ".join(parts) or None


def load_weights(module: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike | None,
                 advice: str | None = None, strict: bool = True) -> None:  # fmt: skip
    """``module.load_state_dict(state_dict, strict)``, or ``CheckpointError`` naming what does not fit."""
    mismatch = state_dict_mismatch(module.state_dict(), state_dict, strict)
    if mismatch:
        raise CheckpointError(path, f"its weights do not fit its config: {mismatch}", advice)
    with checkpoint_errors(path, "its weights cannot be loaded", advice):
        module.load_state_dict(state_dict, strict=strict)


class SelfContainedCheckpoint:
    """Mixin for an ``nn.Module`` whose ``__init__`` takes its config (``self.config``).

    Subclasses set ``checkpoint_kind`` (the ``"kind"`` written and required on load) and ``config_class``
    (a dataclass with ``to_dict`` / ``from_dict``).
    """

    checkpoint_kind: ClassVar[str]
    config_class: ClassVar[type]

    def checkpoint_dict(self, step: int, **extra) -> dict:
        """``{"format": 1, "kind", "config", "state_dict", "step", **extra}`` (weights_only-safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": self.checkpoint_kind,
            "config": self.config.to_dict(),
            "state_dict": self.state_dict(),
            "step": step,
            **extra,
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path | Mapping, map_location: str | torch.device = "cpu"):
        """Rebuild the module from a checkpoint file (or an already loaded checkpoint dict).

        Raises ``CheckpointError`` naming the file (if known) for any problem."""
        kind = cls.checkpoint_kind
        if isinstance(path, Mapping):
            ckpt, where = path, getattr(path, "path", None)
            check_checkpoint(ckpt, kind, where)
        else:
            ckpt = load_checkpoint(path, kind, map_location)
            where = ckpt.path
        advice = advice_for(kind)
        with checkpoint_errors(where, "invalid config", advice):
            module = cls(cls.config_class.from_dict(ckpt["config"]))
        load_weights(module, ckpt["state_dict"], where, advice)
        return module


__all__ = [
    "ADVICE",
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "CheckpointNotFoundError",
    "SelfContainedCheckpoint",
    "advice_for",
    "check_checkpoint",
    "checkpoint_errors",
    "load_checkpoint",
    "load_weights",
    "state_dict_mismatch",
]
