"""Run directories (DESIGN.md §5): ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``videos/``, ``plots/``.

``metrics.jsonl`` holds one JSON object per logged step (``{"step": ..., "split": "train" | "val", ...}``).
A resumed run first drops the lines logged after its checkpoint's step (a crash between a checkpoint and
the next one would otherwise leave them twice), then appends.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from worldmodel.data.hdf5 import write_json


class RunDir:
    """The files of one run under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    def make(self) -> RunDir:
        (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, config: dict) -> None:
        """Write the resolved run configuration (atomically)."""
        write_json(config, self.config, sort_keys=True)

    def truncate_metrics(self, step: int) -> None:
        """Keep only the metrics lines of steps <= ``step`` (before resuming from a checkpoint at ``step``)."""
        if not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                if json.loads(line).get("step", math.inf) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
        tmp = self.metrics.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.metrics)

    def log_metrics(self, record: dict) -> None:
        """Append one JSON line (non-finite floats are written as null)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.metrics.open("a") as f:
            f.write(json.dumps(clean) + "\n")

    def read_metrics(self) -> list[dict]:
        """Every logged line, in order."""
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]


__all__ = ["RunDir"]
