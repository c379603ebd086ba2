"""Run directories (DESIGN.md §5): ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``videos/``, ``plots/``.

``metrics.jsonl`` holds one JSON object per logged step (``{"step": ..., "split": "train" | "val", ...}``).
Before its first step a run cuts the file to the step it starts from (``truncate_metrics``): a resumed run
drops the lines logged after its checkpoint's step, a fresh run (step 0) every line, so that the lines of
a crashed attempt (after the last checkpoint, or before the first) never appear twice. Then it appends.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from worldmodel.files import make_dir, write_json, write_text


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
        """Create the run directory and ``checkpoints/`` (``OutputError`` naming the run if impossible)."""
        make_dir(self.root / "checkpoints", output=self.root)
        return self

    def resume_advice(self) -> str:
        """What to do when ``last.pt`` cannot be resumed (the advice of its ``CheckpointError``)."""
        fallback = f"copy {self.best} over it to resume from its step, or " if self.best.exists() else ""
        return f"{fallback}pass --no-resume to start again from step 0 (overwriting this run)"

    def write_config(self, config: dict) -> None:
        """Write the resolved run configuration (atomically)."""
        write_json(config, self.config, sort_keys=True)

    def start(self, config: dict, step: int) -> RunDir:
        """Before a run's first step from ``step``: make the directory, write ``config``, cut the metrics."""
        self.make()
        self.write_config(config)
        self.truncate_metrics(step)  # a fresh run (step 0) starts an empty file
        return self

    def truncate_metrics(self, step: int) -> None:
        """Keep only the metrics lines of steps <= ``step``: before resuming from a checkpoint at ``step``, or
        (``step`` 0) before a fresh start, which drops every line. Atomic."""
        if not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            logged = record.get("step") if isinstance(record, dict) else None
            if isinstance(logged, (int, float)) and logged <= step:
                kept.append(line)
        write_text(self.metrics, "".join(line + "\n" for line in kept))

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
