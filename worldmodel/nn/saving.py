"""Checkpoint files and random-number-generator states (DESIGN.md §5).

A checkpoint is a dict ``{"format": 1, "kind", "config", "state_dict", "step", ...}`` of tensors, numbers,
strings, lists and dicts only, so that ``torch.load(path, weights_only=True)`` reads it. Files are written
atomically: to a temporary file in the same folder, then renamed over the target, so a crash never leaves
a half-written ``last.pt``. Reading is ``load_checkpoint`` (from ``worldmodel.nn.checkpointing``, the one
reader; every problem is a one-line ``CheckpointError``).

RNG states (torch CPU and CUDA, numpy's global generator, Python's ``random``) are captured as plain
containers of tensors and numbers, for the same reason.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from worldmodel.files import atomic_open


def save_checkpoint(checkpoint: Mapping, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (``files.atomic_open``: a unique temporary file, flushed,
    renamed); missing directories are made. Returns the path."""
    with atomic_open(path) as f:
        torch.save(dict(checkpoint), f)
    return Path(path)


def capture_rng_state() -> dict:
    """The state of every global generator this process uses, as weights-only-loadable containers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    return state


def restore_rng_state(state: Mapping) -> None:
    """Restore the generators from ``capture_rng_state`` (CUDA states only where the devices exist)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators (at the entry of a run only)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = [
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
]
