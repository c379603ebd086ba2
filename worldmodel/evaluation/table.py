"""Drivers compared in one markdown table, from ``worldmodel eval policy`` JSON files:
``python -m worldmodel.evaluation.table RUNS.json ... --reference bot.json [--names NAME ...]``.

One row per file: PPUU's success (arrived) % with its 95 % Wilson interval; the not-at-fault success % (arrived,
or rear-ended while at or above the recorded speed) with its interval; the success % on the cars the reference
driver (the bot) brings to the end of the evaluated zone ("on bot's arrivals": over the driver's episodes whose
vehicle the reference run marked ``success``); the mean distance [m]; the rates of collisions ahead / behind,
off-road and stuck episodes. Rates other than the one on the reference's arrivals are the files' summaries
(``driving.summarise``); one a file lacks (an older evaluation) is None in the rows and "-" in the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worldmodel.driving.closed_loop import wilson_interval

#: Summary keys copied into a row (None where a file lacks them).
SUMMARY_KEYS = ("episodes", "success_rate", "success_rate_ci95", "success_not_at_fault_rate",
                "success_not_at_fault_rate_ci95", "mean_distance_m", "collision_ahead_rate", "collision_behind_rate",
                "offroad_rate", "stuck_rate")  # fmt: skip
#: The rates of the table's last column, in its order.
FAILURE_KEYS = ("collision_ahead_rate", "collision_behind_rate", "offroad_rate", "stuck_rate")


def load_run(path: str | Path) -> dict:
    """An evaluation JSON (``evaluate_driving``'s output). Raises ``ValueError`` (one line) when it is not one."""
    result = json.loads(Path(path).read_text())
    if not isinstance(result, dict) or not isinstance(result.get("per_episode"), list):
        raise ValueError(f"{path}: not an evaluation JSON (no per_episode records; see worldmodel eval policy)")
    return result


def success_on(records: list[dict], vehicles: set[int]) -> tuple[float | None, list[float], int]:
    """Success rate over the ``records`` whose ``vehicle`` is in ``vehicles``: ``(rate or None, 95 % Wilson
    interval [lo, hi], episodes counted)``."""
    chosen = [bool(r["success"]) for r in records if int(r["vehicle"]) in vehicles]
    n = len(chosen)
    return (sum(chosen) / n if n else None), list(wilson_interval(sum(chosen), n)), n


def table_rows(runs: dict[str, dict], reference: dict) -> list[dict]:
    """One row per run (``{driver name: evaluation JSON}``, in that order): ``driver``, the ``SUMMARY_KEYS``
    and ``success_on_reference_completed`` (with ``..._ci95`` and ``reference_completed_episodes``: the
    run's episodes on the vehicles where ``reference`` succeeded)."""
    completed = {int(r["vehicle"]) for r in reference["per_episode"] if r["success"]}
    rows = []
    for name, result in runs.items():
        rate, ci, n = success_on(result["per_episode"], completed)
        row = {"driver": name} | {key: result.get(key) for key in SUMMARY_KEYS}
        row |= {"success_on_reference_completed": rate, "success_on_reference_completed_ci95": ci,
                "reference_completed_episodes": n}  # fmt: skip
        rows.append(row)
    return rows


def percent(rate: float | None, ci95: list[float] | None = None) -> str:
    """``"45.0"`` (``"45.0 [38.2, 52.1]"`` with an interval), ``"-"`` for None."""
    if rate is None:
        return "-"
    return f"{100 * rate:.1f}" + (f" [{100 * ci95[0]:.1f}, {100 * ci95[1]:.1f}]" if ci95 is not None else "")


def markdown(rows: list[dict], reference_name: str = "bot") -> str:
    """The rows of ``table_rows`` as a markdown table."""
    lines = [
        f"| driver | success % (95 % CI) | not-at-fault % (95 % CI) | on {reference_name}'s arrivals % | distance m "
        "| ahead / behind / off-road / stuck % |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        distance = "-" if r["mean_distance_m"] is None else f"{r['mean_distance_m']:.1f}"
        cells = [
            r["driver"],
            percent(r["success_rate"], r["success_rate_ci95"]),
            percent(r["success_not_at_fault_rate"], r["success_not_at_fault_rate_ci95"]),
            f"{percent(r['success_on_reference_completed'])} (n = {r['reference_completed_episodes']})",
            distance,
            " / ".join(percent(r[key]) for key in FAILURE_KEYS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worldmodel.evaluation.table", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="evaluation JSON files (worldmodel eval policy --out)")
    parser.add_argument("--reference", required=True, help="the reference driver's evaluation JSON (the bot's)")
    parser.add_argument("--names", nargs="+", help="driver names, one per run (default: the file names' stems)")
    args = parser.parse_args(argv)
    names = args.names or [Path(p).stem for p in args.runs]
    if len(names) != len(args.runs) or len(set(names)) != len(names):
        parser.error(f"--names must give {len(args.runs)} different names, one per run, got {names}")
    try:
        runs = {name: load_run(path) for name, path in zip(names, args.runs, strict=True)}
        reference = load_run(args.reference)
    except (OSError, ValueError) as e:
        parser.error(str(e).splitlines()[0])
    print(markdown(table_rows(runs, reference), Path(args.reference).stem))


if __name__ == "__main__":
    main()
