"""The MicroT table: energy saving, exit fractions and the written files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from microt_deploy.boards import load_board
from microt_deploy.evaluate.report import build_report, markdown, write_report
from microt_deploy.evaluate.session import TaskEvaluation


def _evaluation() -> TaskEvaluation:
    # 4 samples; stages: trunk, part_head, part_classifier, rest, full_classifier
    forced = np.tile(np.array([600, 10, 5, 400, 5]), (4, 1))
    ev = TaskEvaluation(name="digits", labels=np.array([0, 1, 2, 3]), part_pred=np.array([0, 1, 0, 0]),
                        part_conf=np.array([0.9, 0.8, 0.3, 0.2]), full_pred=np.array([0, 1, 2, 0]),
                        forced_counters=forced)
    ev.thresholds[0.5] = 0.8
    ev.staged_pred[0.5] = np.array([0, 1, 2, 0])
    ev.staged_exit[0.5] = np.array([0, 0, 1, 1])
    staged = forced.copy()
    staged[:2, 3:] = 0  # the two early exits never ran the rest
    ev.staged_counters[0.5] = staged
    return ev


def test_report_numbers() -> None:
    board = load_board("qemu_mps2_an386")
    report = build_report([_evaluation()], board, {})
    task = report["tasks"][0]
    assert task["part_accuracy"] == 0.5 and task["full_accuracy"] == 0.75
    row = task["ratios"]["0.5"]
    assert row["accuracy"] == 0.75 and row["exit_at_part"] == 0.5
    full = 600 + 400 + 5
    staged = (2 * (600 + 10 + 5) + 2 * (600 + 10 + 5 + 400 + 5)) / 4
    assert task["full_model_counts"] == full
    assert row["counts_per_inference"] == staged
    assert abs(row["energy_saved_vs_full"] - (1 - staged / full)) < 1e-12
    assert abs(row["energy_mj"] - staged / board.clock_hz * board.active_mw) < 1e-12


def test_report_files(tmp_path: Path) -> None:
    report = build_report([_evaluation()], load_board("qemu_mps2_an386"), {"simulation": {"x": 1}})
    write_report(report, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["tasks"][0]["task"] == "digits"
    md = (tmp_path / "report.md").read_text()
    assert "| digits | 0.50 |" in md and "## Simulation" in md
    png = (tmp_path / "accuracy_vs_energy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert markdown(report) == md
    assert not list(tmp_path.glob(".*tmp*"))
