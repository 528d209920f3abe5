"""The report's figures, drawn from report.json's data alone (so `microt-deploy report` can redraw
them): latency per stage, the part head's confidence histogram with the thresholds, and accuracy vs
energy. Each is a matplotlib Figure on the Agg canvas (no pyplot, no global backend switch) with one
panel per task; :func:`write_png` renders it and writes the PNG atomically."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from microt_deploy import atomic
from microt_deploy.evaluate.report import configurations, is_chosen, latency_basis
from microt_deploy.evaluate.session import STAGES

DPI = 120
WIDTH = 9.0  # inches; the legends sit right of the panels
STAGE_COLORS = dict(zip(STAGES, ("#4C72B0", "#DD8452", "#C44E52", "#55A868", "#8172B3"), strict=True))
CORRECT, WRONG = "#55A868", "#C44E52"
# threshold lines: neither the correct nor the wrong colour, distinct dash patterns as well
THRESHOLD_STYLES = [("#1f77b4", "-"), ("#ff7f0e", "--"), ("#9467bd", "-."), ("#8c564b", ":"),
                    ("#17becf", "-"), ("#7f7f7f", "--"), ("#bcbd22", "-."), ("#e377c2", ":")]
ACCURACY_PAD = 2.5  # percentage points around equal accuracies
ACCURACY_MIN_PAD = 1.0  # at least this much around a spread of accuracies


def write_png(fig: Figure, path: Path) -> None:
    """Render ``fig`` to PNG and write it atomically (temporary file in the same folder, rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic.write_bytes(path, buf.getvalue())


def _figure(rows: int, row_height: float) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(WIDTH, 0.9 + rows * row_height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    return fig, list(axes)


def _ratio_rows(task: dict[str, Any]) -> list[dict[str, Any]]:
    return list(task["ratios"].values())


# ---------------------------------------------------------------- latency per stage


def latency_per_stage(report: dict[str, Any]) -> Figure:
    """Horizontal stacked bars: mean ms per stage of part only, the full model and staged inference
    at each ratio, with the mean and p99 of the whole inference written after each bar."""
    tasks = report["tasks"]
    n_configs = max(len(configurations(report, t)) for t in tasks)
    fig, axes = _figure(len(tasks), 0.9 + 0.38 * n_configs)
    basis = latency_basis(report)
    for ax, task in zip(axes, tasks, strict=True):
        configs = configurations(report, task)
        ys = range(len(configs))
        left = [0.0] * len(configs)
        for stage in STAGES:
            widths = [c["stages"].get(stage, 0.0) for c in configs]
            ax.barh(ys, widths, left=left, height=0.6, color=STAGE_COLORS[stage], label=stage.replace("_", " "))
            left = [a + b for a, b in zip(left, widths, strict=True)]
        top = max((c["mean"] for c in configs), default=0.0) or 1.0
        for y, c in zip(ys, configs, strict=True):
            text = f"{_sig(c['mean'])} ms"
            if c["stats"]:
                text += f" (p99 {_sig(c['stats']['p99'])})"
            ax.text(c["mean"] + 0.01 * top, y, text, va="center", fontsize=8)
        ax.set_xlim(0, top * 1.32)  # room for the text after the longest bar
        ax.set_yticks(list(ys), [c["label"] for c in configs], fontsize=9)
        ax.invert_yaxis()
        ax.set_title(f"{task['task']} ({task.get('samples', '?')} test inferences)", fontsize=10)
        ax.set_xlabel(f"mean latency per inference (ms, {basis})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(title="stage", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"Latency per stage on {report['board']['id']}", fontsize=11)
    return fig


# ---------------------------------------------------------------- confidence histogram


def confidence_histogram(report: dict[str, Any]) -> Figure:
    """Stacked histogram of the part head's confidence (right / wrong part answers) on a logit axis,
    a vertical line per ratio at its threshold; the legend names ratio, threshold and exit fraction
    (a threshold off the axis, e.g. ratio 0's 2.0, is listed but not drawn)."""
    tasks = report["tasks"]
    fig, axes = _figure(len(tasks), 2.9)
    for ax, task in zip(axes, tasks, strict=True):
        hist = task["confidence_histogram"]
        edges = hist["bin_edges"]
        lefts, widths = edges[:-1], [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        logit = hist.get("spacing") == "logit" and 0.0 < edges[0] and edges[-1] < 1.0
        ax.bar(lefts, hist["correct"], width=widths, align="edge", color=CORRECT, edgecolor="white",
               linewidth=0.4, label=f"part head right ({sum(hist['correct'])})")
        ax.bar(lefts, hist["wrong"], width=widths, bottom=hist["correct"], align="edge", color=WRONG,
               edgecolor="white", linewidth=0.4, label=f"part head wrong ({sum(hist['wrong'])})")
        if logit:
            ax.set_xscale("logit")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(edges[0], edges[-1])
        # set, not autoscaled: with the logit axis the autoscale cut the tallest bars off
        tallest = max((c + w for c, w in zip(hist["correct"], hist["wrong"], strict=True)), default=0)
        ax.set_ylim(0, max(1.0, tallest * 1.08))
        exits = hist.get("exit_at_part", {})
        for i, (key, threshold) in enumerate(hist.get("thresholds", {}).items()):
            color, style = THRESHOLD_STYLES[i % len(THRESHOLD_STYLES)]
            chosen = " (chosen)" if is_chosen(report, float(key)) else ""
            exit_text = f", {exits[key]:.0%} exit at part" if key in exits else ""
            label = f"r={key}{chosen}: threshold {threshold:.6g}{exit_text}"
            if edges[0] <= threshold <= edges[-1]:
                ax.axvline(threshold, color=color, linestyle=style, linewidth=1.4, label=label)
            else:
                ax.add_line(Line2D([], [], color=color, linestyle=style, label=label + " (off the axis)"))
        ax.set_title(f"{task['task']}: part-head confidence on {task.get('samples', '?')} test samples", fontsize=10)
        ax.set_xlabel("part-head confidence (max softmax" + (", logit scale)" if logit else ")"), fontsize=9)
        ax.set_ylabel("test samples", fontsize=9)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        bars = [i for i, h in enumerate(handles) if not isinstance(h, Line2D)]  # the bars first
        order = bars + [i for i in range(len(handles)) if i not in bars]
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"Stage decision on {report['board']['id']}: samples at or above a threshold exit after the part",
                 fontsize=11)
    return fig


# ---------------------------------------------------------------- accuracy vs energy


def accuracy_limits(accuracies: Sequence[float]) -> tuple[float, float]:
    """y-axis limits (in %) for accuracies given in %: the data's range padded by 10 % of it (at
    least ACCURACY_MIN_PAD points), ACCURACY_PAD points either side when all are equal; kept within
    0..100 but never flush with a point at 0 or 100 %."""
    lo, hi = min(accuracies), max(accuracies)
    pad = ACCURACY_PAD if math.isclose(lo, hi, abs_tol=1e-9) else max(0.1 * (hi - lo), ACCURACY_MIN_PAD)
    bottom = max(lo - pad, 0.0)
    top = min(hi + pad, 100.0)
    margin = 0.15 * pad  # a marker at 0 or 100 % stays visible
    return min(bottom, lo - margin), max(top, hi + margin)


def _points(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's accuracy/energy points; derived from the ratio rows for an older report.json."""
    if "accuracy_energy" in task:
        return list(task["accuracy_energy"])
    points = [{"config": "full-only", "ratio": None, "accuracy": task["full_accuracy"],
               "energy_mj": task["full_model_energy_mj"]}]
    points += [{"config": "staged", "ratio": r["ratio"], "accuracy": r["accuracy"], "energy_mj": r["energy_mj"]}
               for r in _ratio_rows(task)]
    return points


def accuracy_vs_energy(report: dict[str, Any]) -> Figure:
    """Energy per inference (x) vs accuracy (y) of part only, the full model and staged inference at
    each ratio, a panel per task; points are named in the legend, not next to them, so nothing
    overlaps. The y range comes from the data (:func:`accuracy_limits`)."""
    tasks = report["tasks"]
    fig, axes = _figure(len(tasks), 3.1)
    for ax, task in zip(axes, tasks, strict=True):
        points = _points(task)
        accs = [100 * p["accuracy"] for p in points]
        staged = sorted((p for p in points if p["config"] == "staged"), key=lambda p: p["energy_mj"])
        exits = {f"{r['ratio']:g}": r.get("exit_at_part") for r in _ratio_rows(task)}
        if staged:
            ax.plot([p["energy_mj"] for p in staged], [100 * p["accuracy"] for p in staged], color="0.6",
                    linewidth=1, zorder=1)
        colors = _ratio_colors(len(staged))
        for color, p in zip(colors, sorted(staged, key=lambda p: p["ratio"]), strict=True):
            key = f"{p['ratio']:g}"
            chosen = " (chosen)" if is_chosen(report, p["ratio"]) else ""
            exit_text = f", {exits[key]:.0%} exit" if exits.get(key) is not None else ""
            ax.scatter([p["energy_mj"]], [100 * p["accuracy"]], s=46, color=color, edgecolor="black",
                       linewidth=0.5 if not chosen else 1.6, zorder=3,
                       label=f"staged r={key}{chosen}: {100 * p['accuracy']:.1f} %{exit_text}")
        # hollow markers, drawn on top: a staged point at the same place (ratio 0) stays visible
        for config, marker, color, name in (("full-only", "s", "black", "full model"),
                                            ("part-only", "^", "0.3", "part only")):
            for p in (q for q in points if q["config"] == config):
                ax.scatter([p["energy_mj"]], [100 * p["accuracy"]], s=110, marker=marker, facecolors="none",
                           edgecolors=color, linewidths=1.6, zorder=4, label=f"{name}: {100 * p['accuracy']:.1f} %")
        ax.set_ylim(*accuracy_limits(accs))
        ax.margins(x=0.08)
        title = f"{task['task']} ({task.get('samples', '?')} test samples)"
        if max(accs) - min(accs) < 1e-9:
            title += f": all configurations at {accs[0]:.1f} % accuracy"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("energy per inference (mJ, estimated)", fontsize=9)
        ax.set_ylabel("test accuracy (%)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"MicroT staged inference on {report['board']['id']}: accuracy vs energy", fontsize=11)
    return fig


def _sig(value: float) -> str:
    """Three significant digits, trailing zeros kept (17.0, 9.11, 0.0581, 123)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def _ratio_colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.15 + 0.7 * i / max(n - 1, 1)) for i in range(n)]


FIGURES: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "latency_per_stage.png": latency_per_stage,
    "confidence_histogram.png": confidence_histogram,
    "accuracy_vs_energy.png": accuracy_vs_energy,
}
