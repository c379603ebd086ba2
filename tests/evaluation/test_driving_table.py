"""The drivers' markdown table (``worldmodel.evaluation.table``) on hand-made evaluation JSON files."""

import json

import pytest

from worldmodel.driving.closed_loop import summarise, wilson_interval
from worldmodel.evaluation.table import main, markdown, table_rows


def record(vehicle: int, event: str, not_at_fault: bool = False, distance_m: float = 100.0) -> dict:
    """An episode record as ``evaluate_driving`` writes it (the fields ``summarise`` reads)."""
    return {"vehicle": vehicle, "event": event, "success": event == "arrived",
            "rear_ended_not_at_fault": not_at_fault, "success_not_at_fault": event == "arrived" or not_at_fault,
            "stuck": event == "stuck", "distance_m": distance_m, "steps": 10,
            "collision_ahead": event == "collision_ahead", "collision_behind": event == "collision_behind",
            "offroad": event == "offroad"}  # fmt: skip


def evaluation(records: list[dict]) -> dict:
    return {**summarise(records), "per_episode": records}


#: The bot arrives with vehicles 1, 2, 3, 5 (of 1-6).
BOT = evaluation([record(1, "arrived"), record(2, "arrived"), record(3, "arrived"), record(4, "collision_behind"),
                  record(5, "arrived"), record(6, "stuck")])  # fmt: skip
#: Arrives with 1 and 4 (not one of the bot's), rear-ended not at fault with 2, stuck with 3 and 6.
POLICY = evaluation([record(1, "arrived", distance_m=200.0), record(2, "collision_behind", not_at_fault=True),
                     record(3, "stuck"), record(4, "arrived", distance_m=200.0), record(5, "offroad"),
                     record(6, "stuck")])  # fmt: skip


def test_success_on_the_reference_arrivals():
    rows = table_rows({"policy": POLICY, "bot": BOT}, reference=BOT)
    policy, bot = rows
    assert policy["driver"] == "policy" and policy["episodes"] == 6
    assert policy["success_on_reference_completed"] == pytest.approx(1 / 4)  # vehicle 1 of 1, 2, 3, 5
    assert policy["reference_completed_episodes"] == 4
    assert policy["success_on_reference_completed_ci95"] == pytest.approx(list(wilson_interval(1, 4)))
    assert policy["success_rate"] == pytest.approx(2 / 6) and policy["success_not_at_fault_rate"] == pytest.approx(
        3 / 6
    )
    assert policy["stuck_rate"] == pytest.approx(2 / 6) and policy["offroad_rate"] == pytest.approx(1 / 6)
    assert policy["mean_distance_m"] == pytest.approx(800 / 6)
    assert bot["success_on_reference_completed"] == 1.0 and bot["success_rate"] == pytest.approx(4 / 6)


def test_only_the_shared_vehicles_count_and_older_files_show_dashes():
    subset = {"per_episode": [r for r in POLICY["per_episode"] if r["vehicle"] in (3, 4, 5)]}  # no summary keys
    row = table_rows({"subset": subset}, reference=BOT)[0]
    assert row["success_on_reference_completed"] == 0.0 and row["reference_completed_episodes"] == 2  # 3, 5
    assert row["stuck_rate"] is None
    none = table_rows({"none": {"per_episode": [record(4, "arrived")]}}, reference=BOT)[0]
    assert none["success_on_reference_completed"] is None and none["reference_completed_episodes"] == 0
    text = markdown([row, none])
    assert "| subset | - | - | 0.0 (n = 2) | - | - / - / - / - |" in text
    assert "| none | - | - | - (n = 0) |" in text


def test_cli_prints_a_markdown_table(tmp_path, capsys):
    paths = {}
    for name, result in (("policy", POLICY), ("bot", BOT)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(result))
    main([str(paths["policy"]), str(paths["bot"]), "--reference", str(paths["bot"]), "--names", "MPUR", "bot"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and "on bot's arrivals %" in lines[0] and lines[1].startswith("|---")
    lo, hi = wilson_interval(2, 6)
    nlo, nhi = wilson_interval(3, 6)
    assert lines[2] == (f"| MPUR | 33.3 [{100 * lo:.1f}, {100 * hi:.1f}] | 50.0 [{100 * nlo:.1f}, {100 * nhi:.1f}] | "
                        "25.0 (n = 4) | 133.3 | 0.0 / 16.7 / 16.7 / 33.3 |")  # fmt: skip
    assert lines[3].startswith("| bot | 66.7 [") and "| 100.0 (n = 4) |" in lines[3]
    main([str(paths["policy"]), "--reference", str(paths["bot"])])
    assert "| policy |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(paths["policy"]), "--reference", str(paths["bot"]), "--names", "a", "b"])
    assert "--names" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.json"), "--reference", str(paths["bot"])])
    assert "missing.json" in capsys.readouterr().err
