"""The report's figures: written as valid PNGs, one panel per task, a y range from the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.lines import Line2D

from microt_deploy.boards import load_board
from microt_deploy.evaluate import plots
from microt_deploy.evaluate.report import build_report, write_report
from microt_deploy.evaluate.session import TaskEvaluation

PNGS = ("latency_per_stage.png", "confidence_histogram.png", "accuracy_vs_energy.png")


def _task(name: str, n: int = 20, *, all_right: bool = False, ratios: tuple[float, ...] = (0.0, 0.5)) -> TaskEvaluation:
    i = np.arange(n)
    labels = i % 4
    wrong = np.zeros(n, bool) if all_right else (i % 5 == 0)
    conf = np.linspace(0.3, 0.99999, n)
    forced = np.stack([2000 + i, np.full(n, 30), np.full(n, 4), 1500 + 3 * i, np.full(n, 6)], axis=1)
    ev = TaskEvaluation(name=name, labels=labels, part_pred=np.where(wrong, (labels + 1) % 4, labels),
                        part_conf=conf, full_pred=labels.copy(), forced_counters=forced)
    for r in ratios:
        threshold = 2.0 if r == 0 else float(np.sort(conf)[int((1 - r) * (n - 1))])
        exits = conf >= threshold
        staged = forced.copy()
        staged[exits, 3:] = 0
        ev.thresholds[r] = threshold
        ev.staged_exit[r] = np.where(exits, 0, 1)
        ev.staged_pred[r] = np.where(exits, ev.part_pred, ev.full_pred)
        ev.staged_counters[r] = staged
    return ev


def _report(*evals: TaskEvaluation) -> dict:
    return build_report(list(evals), load_board("qemu_mps2_an386"), {"chosen_ratio": 0.5})


@pytest.mark.parametrize("n_tasks", [1, 4])
def test_the_three_plots_are_valid_pngs_with_a_panel_per_task(tmp_path: Path, n_tasks: int) -> None:
    report = _report(*[_task(f"task{k}") for k in range(n_tasks)])
    write_report(report, tmp_path)
    for name in PNGS:
        image = imread(tmp_path / name)
        height, width, channels = image.shape
        assert channels in (3, 4) and 600 <= width <= 2000 and 250 <= height <= 3000, (name, image.shape)
        assert image[..., :3].std() > 0.05  # not a blank canvas
    for figure in plots.FIGURES.values():
        fig = figure(report)
        panels = [ax for ax in fig.axes if ax.get_title()]
        assert len(panels) == n_tasks
        assert fig.get_suptitle()
        assert all(ax.get_xlabel() for ax in panels)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("value", [0.0, 50.0, 75.0, 99.0, 100.0])
def test_equal_accuracies_get_a_narrow_axis_around_them(value: float) -> None:
    lo, hi = plots.accuracy_limits([value] * 4)
    assert (lo, hi) != (94.0, 104.0)
    assert lo < value < hi and hi - lo <= 2 * plots.ACCURACY_PAD
    assert lo >= -1.0 and hi <= 101.0


def test_spread_accuracies_are_padded_within_0_to_100() -> None:
    lo, hi = plots.accuracy_limits([93.3, 98.3, 99.7])
    assert 92.0 <= lo < 93.3 and 99.7 < hi <= 100.2
    lo, hi = plots.accuracy_limits([20.0, 80.0])
    assert lo == 14.0 and hi == 86.0


def test_accuracy_plot_uses_the_data_range_and_says_when_all_are_equal() -> None:
    report = _report(_task("same", all_right=True))  # part, full and staged all at 100 %
    ax = next(ax for ax in plots.accuracy_vs_energy(report).axes if ax.get_title())
    assert ax.get_ylim() == pytest.approx(plots.accuracy_limits([100.0]))
    assert "all configurations at 100.0 % accuracy" in ax.get_title()
    assert ax.get_ylabel() == "test accuracy (%)" and "mJ" in ax.get_xlabel()
    labels = ax.get_legend_handles_labels()[1]
    assert labels[0].startswith("staged r=0: 100.0 %") and any("(chosen)" in t for t in labels)
    assert labels[-2:] == ["full model: 100.0 %", "part only: 100.0 %"]
    assert not [t for t in ax.texts]  # named in the legend, no per-point text to overlap


def test_histogram_draws_a_line_per_threshold_on_the_axis_and_lists_the_rest() -> None:
    report = _report(_task("digits"))
    ax = next(ax for ax in plots.confidence_histogram(report).axes if ax.get_title())
    hist = report["tasks"][0]["confidence_histogram"]
    vlines = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    assert [line.get_xdata()[0] for line in vlines] == [hist["thresholds"]["0.5"]]
    labels = ax.get_legend().get_texts()
    texts = [t.get_text() for t in labels]
    assert texts[0] == f"part head right ({sum(hist['correct'])})" and texts[1] == "part head wrong (4)"
    assert "r=0: threshold 2, 0% exit at part (off the axis)" in texts
    assert any(t.startswith("r=0.5 (chosen): threshold") and "55% exit at part" in t for t in texts)
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == 20  # stacked right + wrong bars hold every sample


def test_latency_bars_stack_the_stage_means() -> None:
    report = _report(_task("digits"))
    task = report["tasks"][0]
    ax = next(ax for ax in plots.latency_per_stage(report).axes if ax.get_title())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["part only", "full model", "staged r=0",
                                                           "staged r=0.5 (chosen)"]
    ends: dict[float, float] = {}
    for bar in ax.patches:
        y = round(bar.get_y() + bar.get_height() / 2, 6)
        ends[y] = max(ends.get(y, 0.0), bar.get_x() + bar.get_width())
    board = load_board("qemu_mps2_an386")
    assert ends[0] == pytest.approx(task["part_model_latency_ms"])
    assert ends[1] == pytest.approx(task["full_model_latency_ms"])
    assert ends[3] == pytest.approx(board.latency_ms(task["ratios"]["0.5"]["counts_per_inference"]))
    assert "ms, estimated: instructions" in ax.get_xlabel()
    assert not any(isinstance(a, Line2D) for a in ax.get_legend_handles_labels()[0])


def test_the_confidence_histogram_shows_its_tallest_bar_whole() -> None:
    from microt_deploy.evaluate import plots

    edges = [0.5, 0.9, 0.99, 0.999]
    report = {"board": {"id": "b"}, "chosen_ratio": 0.5, "tasks": [{
        "task": "t", "samples": 60, "confidence_histogram": {
            "bin_edges": edges, "spacing": "logit", "correct": [5, 40, 10], "wrong": [3, 2, 0],
            "thresholds": {"0.5": 0.95}, "exit_at_part": {"0.5": 0.5}}}]}
    fig = plots.confidence_histogram(report)
    bottom, top = fig.axes[0].get_ylim()
    assert bottom == 0 and top >= 42  # the 40 + 2 bar
