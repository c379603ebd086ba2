"""The README's SSL table: bold where a method beats the random mean, '=' at the ceiling."""

from __future__ import annotations

import json

from worldmodel.ssl.probes import TARGETS
from worldmodel.ssl.table import main, table


def _result(r2: float, random_r2: float) -> dict:
    cells = lambda v: {t: {"ridge_r2": v, "ridge_few_r2": v, "knn_r2": v} for t in TARGETS}  # noqa: E731
    probes = cells(r2) | {"speed_mps": {"ridge_r2": 0.9993, "ridge_few_r2": 0.9, "knn_r2": 0.9}}
    random = cells(random_r2) | {"speed_mps": {"ridge_r2": 0.9994, "ridge_few_r2": 0.95, "knn_r2": 0.95}}
    return {"ssl": {"probes": probes, "health": {"repr_effective_rank": 12.0}},
            "random": {"probes": random, "health": {"repr_effective_rank": 4.0}}}  # fmt: skip


def test_table_marks_wins_ties_at_the_ceiling_and_losses(tmp_path, capsys):
    text = table({"good": _result(0.8, 0.7), "bad": _result(0.6, 0.7)})
    rows = text.splitlines()
    assert len(rows) == 5 and rows[-1].startswith("| random")
    good, bad = rows[2], rows[3]
    assert "**0.8000**" in good and "0.9993=" in good and "12.0" in good
    assert "**" not in bad.split("|", 3)[3] and "0.6000" in bad
    assert "**" not in rows[-1] and "4.0" in rows[-1]
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "eval.json").write_text(json.dumps(_result(0.8, 0.7)))
    main([str(tmp_path), "good"])
    assert "| good |" in capsys.readouterr().out
