"""The README's SSL table from ``worldmodel eval ssl`` JSON files: ``python -m worldmodel.ssl.table RUNS M...``.

One row per method (``RUNS/M/eval.json``) and a last row for the random baseline (the mean over its seeds,
from the first method's file: every method is probed on the same samples). A cell is
``ridge / few-label ridge / kNN`` R^2, each in bold where it beats the random mean and marked ``=`` where
both are at the ceiling (``verdict``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from worldmodel.ssl.evaluate import PROBES, verdict
from worldmodel.ssl.probes import TARGETS

DIGITS = {"ridge_r2": 4, "ridge_few_r2": 3, "knn_r2": 2}


def cell(probes: dict, random: dict | None) -> str:
    """``ridge / few / kNN`` of one target, bold where it beats ``random`` (the same target's baseline)."""
    parts = []
    for key in PROBES:
        text = f"{probes[key]:.{DIGITS[key]}f}"
        if random is not None:
            v = verdict(probes[key], random[key])
            text = f"**{text}**" if v == "beats" else f"{text}=" if v == "ceiling" else text
        parts.append(text)
    return " / ".join(parts)


def table(results: dict[str, dict]) -> str:
    """Markdown rows: method | one cell per target | representation effective rank; the random mean last."""
    names = {"speed_mps": "speed", "headway_m": "headway", "lane_position": "lane position",
             "neighbours": "neighbours"}  # fmt: skip
    lines = [
        "| method | " + " | ".join(names.get(t, t) for t in TARGETS) + " | rank |",
        "|---" * (len(TARGETS) + 2) + "|",
    ]
    random = next(iter(results.values()))["random"]
    for method, r in results.items():
        cells = [cell(r["ssl"]["probes"][t], random["probes"][t]) for t in TARGETS]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['ssl']['health']['repr_effective_rank']:.1f} |")
    cells = [cell(random["probes"][t], None) for t in TARGETS]
    lines.append(
        "| random (mean of seeds) | " + " | ".join(cells) + f" | {random['health']['repr_effective_rank']:.1f} |"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    runs, methods = Path(argv[0]), argv[1:]
    print(table({m: json.loads((runs / m / "eval.json").read_text()) for m in methods}))


if __name__ == "__main__":
    main(sys.argv[1:])
