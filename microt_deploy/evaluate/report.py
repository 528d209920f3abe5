"""The MicroT table: turns device measurements into report.json, report.md, plots and a terminal
table (accuracy of part / full / staged, counts and latency per stage, p50 / p99 / max latency,
the part head's confidence histogram, energy, saving vs full inference). The plots are drawn by
:mod:`microt_deploy.evaluate.plots` from the report's data alone."""

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
PART_MODEL_STAGES = ("trunk", "part_head", "part_classifier")
PERCENTILES = ("p50", "p99")
PERCENTILE_METHOD = "linear"  # numpy.percentile's default: linear interpolation between order statistics
HISTOGRAM_BINS = 24
# Max-softmax confidences crowd against 1.0, so the histogram's bins are evenly spaced in logit(conf)
# between the lowest confidence and 1 - CONF_EPS; a confidence of exactly 1.0 counts in the last bin.
CONF_EPS = 1e-6

# The plots write_report draws: file name -> what the report must hold for it.
PLOT_FILES = ("latency_per_stage.png", "confidence_histogram.png", "accuracy_vs_energy.png")


def sweep(ratios: Sequence[float], chosen: float) -> list[float]:
    """The ratios to measure: the sweep without repeats and the project's chosen ratio
    (``[device] ratio``) last, so the device is left at it."""
    chosen = float(chosen)
    rest = [r for r in dict.fromkeys(float(x) for x in ratios) if not math.isclose(r, chosen)]
    return [*rest, chosen]


def _is_chosen(report: dict[str, Any], ratio: float) -> bool:
    chosen = report.get("chosen_ratio")
    return chosen is not None and math.isclose(float(ratio), float(chosen))


is_chosen = _is_chosen


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def count_stats(counts: np.ndarray) -> dict[str, float]:
    """mean / p50 / p99 / max of per-inference counter sums (numpy.percentile, method "linear");
    all 0.0 without samples."""
    counts = np.asarray(counts, dtype=np.float64)
    if not len(counts):
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    p50, p99 = np.percentile(counts, [50, 99], method=PERCENTILE_METHOD)
    return {"mean": float(np.mean(counts)), "p50": float(p50), "p99": float(p99), "max": float(np.max(counts))}


def latency_stats(counts: np.ndarray, board: Board) -> dict[str, float]:
    """:func:`count_stats` turned into milliseconds by the board (a linear map, so the percentiles of
    the latencies are the latencies of the count percentiles)."""
    return {k: float(board.latency_ms(v)) for k, v in count_stats(counts).items()}


def _stage_sum(counters: np.ndarray, stages: Sequence[str]) -> np.ndarray:
    return counters[:, [STAGES.index(s) for s in stages]].sum(axis=1)


def confidence_histogram(ev: TaskEvaluation) -> dict[str, Any]:
    """Histogram of the part head's confidence on the test split, split by whether its answer was
    right; bins evenly spaced in logit(confidence) (see CONF_EPS), values outside the edges clipped
    into the first / last bin, so ``correct + wrong`` sums to the finite confidences."""
    conf = np.asarray(ev.part_conf, dtype=np.float64)
    right = np.asarray(ev.part_pred) == np.asarray(ev.labels)
    finite = np.isfinite(conf)
    conf, right = conf[finite], right[finite]
    hi = 1.0 - CONF_EPS
    lo = float(np.clip(conf.min(), CONF_EPS, hi)) if len(conf) else 0.5
    llo, lhi = _logit(lo), _logit(hi)
    if lhi - llo < 1.0:  # all confidences (nearly) equal: a window of one logit unit around them
        llo = max(_logit(CONF_EPS), min(llo, lhi) - 0.5)
        lhi = min(_logit(hi), llo + 1.0)
    edges = 1.0 / (1.0 + np.exp(-np.linspace(llo, lhi, HISTOGRAM_BINS + 1)))
    clipped = np.clip(conf, edges[0], edges[-1])
    correct, _ = np.histogram(clipped[right], bins=edges)
    wrong, _ = np.histogram(clipped[~right], bins=edges)
    return {
        "bin_edges": [float(e) for e in edges],
        "spacing": "logit",
        "correct": [int(c) for c in correct],
        "wrong": [int(c) for c in wrong],
        "thresholds": {f"{r:g}": float(ev.thresholds[r]) for r in sorted(ev.thresholds)},
        "exit_at_part": {f"{r:g}": _mean(ev.staged_exit[r] == 0) for r in sorted(ev.staged_exit)},
    }


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _point(config: str, ratio: float | None, accuracy: float, counts: float, board: Board) -> dict[str, Any]:
    return {"config": config, "ratio": ratio, "accuracy": accuracy, "counts_per_inference": counts,
            "latency_ms": board.latency_ms(counts), "energy_mj": board.energy_mj(counts)}


def task_summary(ev: TaskEvaluation, board: Board) -> dict[str, Any]:
    """Accuracy, counts, latency and energy of one task for every ratio measured.

    Latency statistics are over the test inferences: the counts of one inference are the sum of its
    five stage counters (stages that did not run count 0); ``*_stats`` hold mean / p50 / p99 / max
    (numpy.percentile, method "linear"), the ``latency_ms*`` ones in the board's estimated ms."""
    labels = ev.labels
    full_counts = _stage_sum(ev.forced_counters, FULL_MODEL_STAGES)
    part_counts = _stage_sum(ev.forced_counters, PART_MODEL_STAGES)
    full_mean = _mean(full_counts)
    part_mean = _mean(part_counts)
    per_stage = {s: _mean(ev.forced_counters[:, i]) for i, s in enumerate(STAGES)}
    part_accuracy = _mean(ev.part_pred == labels)
    full_accuracy = _mean(ev.full_pred == labels)
    points = [_point("part-only", None, part_accuracy, part_mean, board),
              _point("full-only", None, full_accuracy, full_mean, board)]
    ratios = {}
    for r in sorted(ev.staged_pred):
        staged_counts = ev.staged_counters[r].sum(axis=1)
        staged_mean = _mean(staged_counts)
        staged_stage = {s: _mean(ev.staged_counters[r][:, i]) for i, s in enumerate(STAGES)}
        accuracy = _mean(ev.staged_pred[r] == labels)
        ratios[f"{r:g}"] = {
            "ratio": r,
            "threshold": ev.thresholds[r],
            "accuracy": accuracy,
            "exit_at_part": _mean(ev.staged_exit[r] == 0),
            "counts_per_inference": staged_mean,
            "latency_ms": board.latency_ms(staged_mean),
            "energy_mj": board.energy_mj(staged_mean),
            "energy_saved_vs_full": 1.0 - staged_mean / full_mean if full_mean else 0.0,
            "counts_stats": count_stats(staged_counts),
            "latency_ms_stats": latency_stats(staged_counts, board),
            "mean_counts_per_stage": staged_stage,
            "mean_latency_ms_per_stage": {s: board.latency_ms(v) for s, v in staged_stage.items()},
        }
        points.append(_point("staged", r, accuracy, staged_mean, board))
    return {
        "task": ev.name,
        "samples": int(len(labels)),
        "part_accuracy": part_accuracy,
        "full_accuracy": full_accuracy,
        "full_model_counts": full_mean,
        "full_model_latency_ms": board.latency_ms(full_mean),
        "full_model_energy_mj": board.energy_mj(full_mean),
        "full_model_counts_stats": count_stats(full_counts),
        "full_model_latency_ms_stats": latency_stats(full_counts, board),
        "part_model_counts": part_mean,
        "part_model_latency_ms": board.latency_ms(part_mean),
        "part_model_energy_mj": board.energy_mj(part_mean),
        "part_model_counts_stats": count_stats(part_counts),
        "part_model_latency_ms_stats": latency_stats(part_counts, board),
        "mean_counts_per_stage": per_stage,
        "mean_latency_ms_per_stage": {s: board.latency_ms(v) for s, v in per_stage.items()},
        "confidence_histogram": confidence_histogram(ev),
        "accuracy_energy": points,
        "ratios": ratios,
    }


def build_report(evals: Sequence[TaskEvaluation], board: Board, extra: dict[str, Any]) -> dict[str, Any]:
    """The whole report as plain data (what report.json holds)."""
    return {
        "board": {"id": board.id, "name": board.name, "counter_unit": board.counter_unit,
                  "clock_hz": board.clock_hz, "active_mw": board.active_mw, "cpi": board.cpi,
                  "flash_bytes": board.flash_bytes, "ram_bytes": board.ram_bytes},
        "energy_model": (
            f"energy = {board.counter_unit} x cpi {board.cpi:g} / {board.clock_hz / 1e6:g} MHz x "
            f"{board.active_mw:g} mW (an estimate from the board file, not a measurement)"
        ),
        "latency_stats": (
            "per test inference: counts = sum of the five stage counters, latency_ms = the board's "
            f"estimate from counts; p50/p99 = numpy.percentile(method='{PERCENTILE_METHOD}'), max = largest"
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


def latency_basis(report: dict[str, Any]) -> str:
    """How the ms were obtained from the counter, in words (an estimate unless the counter is ns)."""
    board = report["board"]
    unit = board["counter_unit"]
    if unit == "ns":
        return "measured (ns timer)"
    return f"estimated: {unit} x CPI {board['cpi']:g} / {board['clock_hz'] / 1e6:g} MHz"


def configurations(report: dict[str, Any], task: dict[str, Any]) -> list[dict[str, Any]]:
    """The inference configurations of one task for the latency table and plot: part only, full model
    and staged at each ratio, each with its mean ms per stage (stages it never runs absent) and its
    latency statistics (None where the report has none). Empty for a report written before per-stage
    latency was recorded."""
    stage_ms = task.get("mean_latency_ms_per_stage")
    if not stage_ms or not all("mean_latency_ms_per_stage" in row for row in task["ratios"].values()):
        return []
    configs = [
        {"label": "part only", "stages": {s: stage_ms[s] for s in PART_MODEL_STAGES},
         "stats": task.get("part_model_latency_ms_stats")},
        {"label": "full model", "stages": {s: stage_ms[s] for s in FULL_MODEL_STAGES},
         "stats": task.get("full_model_latency_ms_stats")},
    ]
    for row in task["ratios"].values():
        mark = " (chosen)" if _is_chosen(report, row["ratio"]) else ""
        configs.append({"label": f"staged r={row['ratio']:g}{mark}", "stages": dict(row["mean_latency_ms_per_stage"]),
                        "stats": row.get("latency_ms_stats")})
    for c in configs:
        c["mean"] = float(sum(c["stages"].values()))
    return configs


def plot_files(report: dict[str, Any]) -> list[str]:
    """The plots the report's data allows (a report.json from before this version lacks some)."""
    tasks = report.get("tasks", [])
    have = {
        "latency_per_stage.png": bool(tasks) and all(configurations(report, t) for t in tasks),
        "confidence_histogram.png": bool(tasks) and all("confidence_histogram" in t for t in tasks),
        "accuracy_vs_energy.png": bool(tasks),
    }
    return [name for name in PLOT_FILES if have[name]]


PLOT_TITLES = {
    "latency_per_stage.png": "Mean latency per stage",
    "confidence_histogram.png": "Part-head confidence and thresholds",
    "accuracy_vs_energy.png": "Accuracy vs energy",
}


def _ms(value: float) -> str:
    return f"{value:,.3f}"


def _partial_note(report: dict[str, Any]) -> list[str]:
    """The warning at the top of a run the device did not finish."""
    partial = report.get("partial")
    if not partial:
        return []
    return [f"**PARTIAL RUN: not a measurement.** The device stopped after {partial.get('samples_evaluated')} of "
            f"{partial.get('samples_planned')} test samples ({partial.get('error', 'no answer')}); the figures "
            "below cover those samples only.", ""]


def markdown(report: dict[str, Any]) -> str:
    """report.md: the MicroT table, latency per stage and percentiles, the plots, the device and
    firmware facts, the host-simulation check and the extractor's training summary."""
    unit = report["board"]["counter_unit"]
    lines = [
        f"# MicroT report: {report['board']['name']}",
        "",
        f"Counter: {unit}. {report['energy_model']}.",
        "",
        *_partial_note(report),
        "## Summary",
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
    lines += _latency_section(report)
    lines += ["", f"## Mean {unit} per stage (full path forced)", "", "| task | " + " | ".join(STAGES) + " |",
              "|---|" + "---|" * len(STAGES)]
    for task in report["tasks"]:
        stage = task["mean_counts_per_stage"]
        lines.append(f"| {task['task']} | " + " | ".join(f"{stage[s]:,.0f}" for s in STAGES) + " |")
    if plot_files(report):
        lines += ["", "## Plots"]
        for name in plot_files(report):
            lines += ["", f"![{PLOT_TITLES[name]}]({name})"]
    lines += _device_section(report)
    if "simulation" in report:
        lines += ["", "## Simulation", "", _simulation_text(report["simulation"])]
    if isinstance(report.get("device_training"), dict) and report["device_training"]:
        lines += ["", "## Device training", "", "The heads trained on the device, on the train split:", "",
                  *_dict_table("task", report["device_training"])]
    if "extractor" in report:
        lines += ["", "## Extractor", "", *_extractor_lines(report["extractor"])]
    return "\n".join(lines) + "\n"


def _latency_section(report: dict[str, Any]) -> list[str]:
    tasks = [(t, configurations(report, t)) for t in report["tasks"]]
    if not tasks or not all(c for _, c in tasks):
        return []
    names = [s.replace("_", " ") for s in STAGES]
    lines = ["", "## Latency per inference (ms)", "",
             f"Mean ms per stage and p50 / p99 / max of the whole inference over the test samples; ms "
             f"{latency_basis(report)}; percentiles: numpy.percentile, method '{PERCENTILE_METHOD}'.", "",
             "| task | configuration | " + " | ".join(names) + " | mean | p50 | p99 | max |",
             "|---|---|" + "---|" * (len(STAGES) + 4)]
    for task, configs in tasks:
        for c in configs:
            stats = c["stats"] or {}
            cells = [_ms(c["stages"][s]) if s in c["stages"] else "-" for s in STAGES]
            cells.append(_ms(c["mean"]))
            cells += [_ms(stats[k]) if k in stats else "-" for k in ("p50", "p99", "max")]
            lines.append(f"| {task['task']} | {c['label']} | " + " | ".join(cells) + " |")
    return lines


def _bytes(value: Any) -> str:
    return f"{value:,} B" if isinstance(value, int) else "?"


def _device_section(report: dict[str, Any]) -> list[str]:
    board = report["board"]
    device = report.get("device") if isinstance(report.get("device"), dict) else {}
    firmware = report.get("firmware") if isinstance(report.get("firmware"), dict) else {}
    clock = f"{board['clock_hz'] / 1e6:g} MHz"
    if device.get("clock_hz") and device["clock_hz"] != board["clock_hz"]:
        clock += f" (the device reports {device['clock_hz'] / 1e6:g} MHz)"
    lines = ["", "## Device and firmware", "",
             f"- Board: {board['name']} (`{board['id']}`); counter: {board['counter_unit']}; clock: {clock}"]
    built = (firmware.get("build") or {}).get("result") if isinstance(firmware.get("build"), dict) else None
    if isinstance(built, dict) and isinstance(built.get("flash_bytes"), int):
        estimate = " (estimated, not linked)" if built.get("estimate") else ""
        lines.append(f"- Image: flash {_bytes(built.get('flash_bytes'))} of {_bytes(built.get('flash_total'))}, "
                     f"RAM {_bytes(built.get('ram_bytes'))} of {_bytes(built.get('ram_total'))}{estimate}"
                     + (f", built by {built['built_by']}" if built.get("built_by") else ""))
    elif "flash_bytes" in board:
        lines.append(f"- Board memory: flash {_bytes(board['flash_bytes'])}, RAM {_bytes(board['ram_bytes'])}")
    arena = firmware.get("arena_bytes", device.get("arena_bytes"))
    if arena is not None or firmware.get("const_bytes") is not None:
        lines.append(f"- Model: tensor arena {_bytes(arena)}, constants {_bytes(firmware.get('const_bytes'))}")
    if device:
        keys = ("protocol_version", "max_tasks", "max_classes", "max_slots", "max_payload")
        lines.append("- Device: " + ", ".join(f"{k.replace('_', ' ')} {device[k]}" for k in keys if k in device))
    samples = report.get("samples")
    if isinstance(samples, dict):
        text = ", ".join(f"{k} {v:,}" for k, v in samples.items() if isinstance(v, int))
        if "device_seconds" in report:
            text += f"; {report['device_seconds']:g} s on the device"
        lines.append(f"- Samples: {text}")
    return lines


def simulation_line(sim: dict[str, Any]) -> str:
    """How many device answers the host simulation predicted exactly (as eval prints it)."""
    total = agree = ties = 0
    for task in sim.values():
        for cmp in [task["part"], task["full"], *task["staged"].values()]:
            total += cmp["samples"]
            agree += cmp["agree"]
            ties += len(cmp["threshold_ties"])
    unexplained = total - agree - ties
    return (f"{agree:,} of {total:,} device answers predicted exactly, {ties} threshold ties, "
            f"{unexplained} unexplained")


def _simulation_text(sim: Any) -> str:
    try:
        return f"Host simulation: {simulation_line(sim)}."
    except (AttributeError, KeyError, TypeError):
        return "```json\n" + json.dumps(sim, indent=2, default=_json_default) + "\n```"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def _dict_table(first: str, rows: dict[str, Any]) -> list[str]:
    """A table of ``{row name: {column: value}}``; anything else as JSON."""
    if not all(isinstance(v, dict) for v in rows.values()):
        return ["```json", json.dumps(rows, indent=2, default=_json_default), "```"]
    columns = list(dict.fromkeys(k for v in rows.values() for k in v))
    out = [f"| {first} | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
           "|---|" + "---|" * len(columns)]
    for name, row in rows.items():
        out.append(f"| {name} | " + " | ".join(_number(row.get(c, "-")) for c in columns) + " |")
    return out


def _last(losses: Any) -> str | None:
    if isinstance(losses, list) and losses:
        last = losses[-1]
        if isinstance(last, dict):
            return ", ".join(f"{k} {_number(v)}" for k, v in last.items())
        return _number(last)
    return None


def _pct(row: Any, key: str) -> str:
    value = row.get(key) if isinstance(row, dict) else None
    return f"{value:.1%}" if isinstance(value, int | float) else "-"


def _extractor_lines(ext: Any) -> list[str]:
    """The numbers of checkpoints/train.json: MACs, probe accuracies, final losses, times."""
    if not isinstance(ext, dict):
        return ["```json", json.dumps(ext, indent=2, default=_json_default), "```"]
    lines = []
    macs = ext.get("macs")
    if isinstance(macs, dict) and "full" in macs:
        share = macs.get("part_share")
        lines.append(f"- MACs: full model {_number(macs['full'])}"
                     + (f", part {share:.1%} of it" if isinstance(share, float) else ""))
    if isinstance(ext.get("samples"), dict):
        lines.append("- Samples: " + ", ".join(f"{k} {_number(v)}" for k, v in ext["samples"].items()))
    for name, key in (("teacher", "teacher"), ("SSKD", "sskd"), ("joint", "joint")):
        part = ext.get(key)
        last = _last(part.get("losses")) if isinstance(part, dict) else None
        if last is not None:
            spec = f" ({part['spec']})" if key == "teacher" and part.get("spec") else ""
            lines.append(f"- Final {name} loss{spec}: {last}")
    seconds = ext.get("seconds")
    if isinstance(seconds, dict):
        lines.append("- Training time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in seconds.items()
                                                      if isinstance(v, int | float)))
    probe = ext.get("probe")
    if isinstance(probe, dict) and isinstance(probe.get("after_joint"), dict):
        before = probe.get("before_joint") or {}
        fit, scored = probe.get("fit", "train"), probe.get("scored_on", "calib")
        lines += ["", f"Linear-probe accuracy (fit on {fit}, scored on {scored}):", "",
                  "| task | part before joint | part after | full before joint | full after |", "|---|---|---|---|---|"]
        for task, after in probe["after_joint"].items():
            b = before.get(task, {})
            cells = [_pct(b, "part"), _pct(after, "part"), _pct(b, "full"), _pct(after, "full")]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines or ["```json", json.dumps(ext, indent=2, default=_json_default), "```"]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_report(report: dict[str, Any], run_dir: Path) -> None:
    """report.json, the plots (latency_per_stage.png, confidence_histogram.png,
    accuracy_vs_energy.png, as far as the report's data allows) and report.md in the run folder,
    each written atomically."""
    from microt_deploy.evaluate import plots

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run_dir / "report.json", json.dumps(report, indent=2, default=_json_default))
    for name in plot_files(report):
        plots.write_png(plots.FIGURES[name](report), run_dir / name)
    atomic.write_text(run_dir / "report.md", markdown(report))


def plot(report: dict[str, Any], path: Path) -> None:
    """accuracy_vs_energy.png alone (kept for callers of the single plot of earlier versions)."""
    from microt_deploy.evaluate import plots

    plots.write_png(plots.accuracy_vs_energy(report), path)
