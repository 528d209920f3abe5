"""The MicroT table: turns device measurements into report.json, report.md, plots and a terminal
table (accuracy of part / full / staged, counts per stage, energy, saving vs full inference)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from microt_deploy import atomic
from microt_deploy.boards import Board
from microt_deploy.evaluate.session import STAGES, TaskEvaluation

FULL_MODEL_STAGES = ("trunk", "rest", "full_classifier")


def sweep(ratios: Sequence[float], chosen: float) -> list[float]:
    """The ratios to measure: the sweep without repeats and the project's chosen ratio
    (``[device] ratio``) last, so the device is left at it."""
    chosen = float(chosen)
    rest = [r for r in dict.fromkeys(float(x) for x in ratios) if not math.isclose(r, chosen)]
    return [*rest, chosen]


def _is_chosen(report: dict[str, Any], ratio: float) -> bool:
    chosen = report.get("chosen_ratio")
    return chosen is not None and math.isclose(float(ratio), float(chosen))


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def task_summary(ev: TaskEvaluation, board: Board) -> dict[str, Any]:
    """Accuracy, counts and energy of one task for every ratio measured."""
    labels = ev.labels
    full_idx = [STAGES.index(s) for s in FULL_MODEL_STAGES]
    full_counts = ev.forced_counters[:, full_idx].sum(axis=1)
    full_mean = _mean(full_counts)
    per_stage = {s: _mean(ev.forced_counters[:, i]) for i, s in enumerate(STAGES)}
    ratios = {}
    for r in sorted(ev.staged_pred):
        staged_counts = ev.staged_counters[r].sum(axis=1)
        staged_mean = _mean(staged_counts)
        ratios[f"{r:g}"] = {
            "ratio": r,
            "threshold": ev.thresholds[r],
            "accuracy": _mean(ev.staged_pred[r] == labels),
            "exit_at_part": _mean(ev.staged_exit[r] == 0),
            "counts_per_inference": staged_mean,
            "latency_ms": board.latency_ms(staged_mean),
            "energy_mj": board.energy_mj(staged_mean),
            "energy_saved_vs_full": 1.0 - staged_mean / full_mean if full_mean else 0.0,
        }
    return {
        "task": ev.name,
        "samples": int(len(labels)),
        "part_accuracy": _mean(ev.part_pred == labels),
        "full_accuracy": _mean(ev.full_pred == labels),
        "full_model_counts": full_mean,
        "full_model_latency_ms": board.latency_ms(full_mean),
        "full_model_energy_mj": board.energy_mj(full_mean),
        "mean_counts_per_stage": per_stage,
        "ratios": ratios,
    }


def build_report(evals: Sequence[TaskEvaluation], board: Board, extra: dict[str, Any]) -> dict[str, Any]:
    """The whole report as plain data (what report.json holds)."""
    return {
        "board": {"id": board.id, "name": board.name, "counter_unit": board.counter_unit,
                  "clock_hz": board.clock_hz, "active_mw": board.active_mw, "cpi": board.cpi},
        "energy_model": (
            f"energy = {board.counter_unit} x cpi {board.cpi:g} / {board.clock_hz / 1e6:g} MHz x "
            f"{board.active_mw:g} mW (an estimate from the board file, not a measurement)"
        ),
        "tasks": [task_summary(ev, board) for ev in evals],
        **extra,
    }


def terminal_table(report: dict[str, Any]) -> Table:
    """The MicroT table for the terminal."""
    unit = report["board"]["counter_unit"]
    caption = "* the project's ratio (device.ratio in microt.toml)" if report.get("chosen_ratio") is not None else None
    table = Table(title=f"MicroT on {report['board']['id']} ({unit} per inference, estimated energy)",
                  caption=caption)
    for col in ("task", "ratio", "exit@part", "part acc", "full acc", "staged acc",
                f"{unit}/inf", "energy mJ", "full-model mJ", "saved"):
        table.add_column(col, justify="right")
    for task in report["tasks"]:
        for row in task["ratios"].values():
            table.add_row(
                task["task"], f"{row['ratio']:.2f}" + ("*" if _is_chosen(report, row["ratio"]) else ""),
                f"{row['exit_at_part']:.0%}",
                f"{task['part_accuracy']:.1%}", f"{task['full_accuracy']:.1%}", f"{row['accuracy']:.1%}",
                f"{row['counts_per_inference']:,.0f}", f"{row['energy_mj']:.4f}",
                f"{task['full_model_energy_mj']:.4f}", f"{row['energy_saved_vs_full']:.1%}",
            )
    return table


def markdown(report: dict[str, Any]) -> str:
    """report.md: the same table plus per-stage counts and the checks."""
    unit = report["board"]["counter_unit"]
    lines = [
        f"# MicroT report: {report['board']['name']}",
        "",
        f"Counter: {unit}. {report['energy_model']}.",
        "",
        f"| task | ratio | threshold | exit at part | part acc | full acc | staged acc | {unit} / inference "
        "| energy (mJ) | full model (mJ) | saved vs full |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in report["tasks"]:
        for row in task["ratios"].values():
            mark = " (chosen)" if _is_chosen(report, row["ratio"]) else ""
            lines.append(
                f"| {task['task']} | {row['ratio']:.2f}{mark} | {row['threshold']:.4f} | {row['exit_at_part']:.1%} "
                f"| {task['part_accuracy']:.2%} | {task['full_accuracy']:.2%} | {row['accuracy']:.2%} "
                f"| {row['counts_per_inference']:,.0f} | {row['energy_mj']:.4f} "
                f"| {task['full_model_energy_mj']:.4f} | {row['energy_saved_vs_full']:.1%} |"
            )
    if report.get("chosen_ratio") is not None:
        lines += ["", f"(chosen): the project's stage-decision ratio, `device.ratio = {report['chosen_ratio']:g}` "
                  "in microt.toml; eval sets it on the device last."]
    lines += ["", f"## Mean {unit} per stage (full path forced)", "", "| task | " + " | ".join(STAGES) + " |",
              "|---|" + "---|" * len(STAGES)]
    for task in report["tasks"]:
        stage = task["mean_counts_per_stage"]
        lines.append(f"| {task['task']} | " + " | ".join(f"{stage[s]:,.0f}" for s in STAGES) + " |")
    for key in ("firmware", "simulation", "device_training", "extractor"):
        if key in report:
            lines += ["", f"## {key.replace('_', ' ').capitalize()}", "", "```json",
                      json.dumps(report[key], indent=2, default=_json_default), "```"]
    return "\n".join(lines) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def plot(report: dict[str, Any], path: Path) -> None:
    """Accuracy vs energy over the ratio sweep, one line per task, full-model inference marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for task in report["tasks"]:
        rows = list(task["ratios"].values())
        xs = [r["energy_mj"] for r in rows]
        ys = [100 * r["accuracy"] for r in rows]
        line = ax.plot(xs, ys, marker="o", label=f"{task['task']} staged")[0]
        for r in rows:
            label = f"r={r['ratio']:g}" + (" (chosen)" if _is_chosen(report, r["ratio"]) else "")
            ax.annotate(label, (r["energy_mj"], 100 * r["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
        ax.scatter([task["full_model_energy_mj"]], [100 * task["full_accuracy"]], marker="s",
                   color=line.get_color(), label=f"{task['task']} full model")
    ax.set_xlabel("estimated energy per inference (mJ)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MicroT staged inference on {report['board']['id']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_report(report: dict[str, Any], run_dir: Path) -> None:
    """report.json, report.md and accuracy_vs_energy.png in the run folder, each written atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run_dir / "report.json", json.dumps(report, indent=2, default=_json_default))
    atomic.write_text(run_dir / "report.md", markdown(report))
    plot(report, run_dir / "accuracy_vs_energy.png")
