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


# ---------------------------------------------------------------- latency, histogram, points


def _varied(n: int = 11) -> TaskEvaluation:
    """n samples with counters that differ per sample, so the percentiles are not trivial."""
    i = np.arange(n)
    forced = np.stack([1000 + 10 * i, np.full(n, 50), 5 + i, 800 + 20 * i**2, np.full(n, 7)], axis=1)
    labels = i % 3
    part_right = np.array([True, True, False, True, True, False, True, True, True, False, True])[:n]
    ev = TaskEvaluation(name="digits", labels=labels, part_pred=np.where(part_right, labels, (labels + 1) % 3),
                        part_conf=np.array([1.0, 0.99, 0.4, 0.9999, 0.95, 0.6, 0.999, 0.8, 0.97, 0.5, 0.35])[:n],
                        full_pred=labels.copy(), forced_counters=forced)
    for r, exits in ((0.3, i < 3), (0.6, i % 2 == 0)):
        staged = forced.copy()
        staged[exits, 3:] = 0
        ev.thresholds[r] = 0.9 if r == 0.3 else 0.7
        ev.staged_exit[r] = np.where(exits, 0, 1)
        ev.staged_pred[r] = np.where(exits, ev.part_pred, ev.full_pred)
        ev.staged_counters[r] = staged
    return ev


def test_latency_statistics_are_numpy_linear_percentiles_of_the_per_inference_sums() -> None:
    board = load_board("qemu_mps2_an386")
    ev = _varied()
    task = build_report([ev], board, {})["tasks"][0]
    for r in (0.3, 0.6):
        sums = ev.staged_counters[r].sum(axis=1).astype(float)
        row = task["ratios"][f"{r:g}"]
        p50, p99 = np.percentile(sums, [50, 99])  # numpy's default method, "linear"
        ordered = np.sort(sums)
        assert p50 == ordered[5]  # 11 samples: the median is the 6th
        assert row["counts_stats"] == {"mean": sums.mean(), "p50": p50, "p99": p99, "max": sums.max()}
        assert row["latency_ms_stats"] == {k: board.latency_ms(v) for k, v in row["counts_stats"].items()}
        assert row["latency_ms"] == board.latency_ms(sums.mean())  # still the mean, a float
        assert row["mean_counts_per_stage"]["rest"] == ev.staged_counters[r][:, 3].mean()
        assert row["mean_latency_ms_per_stage"]["trunk"] == board.latency_ms(ev.staged_counters[r][:, 0].mean())
    full = ev.forced_counters[:, [0, 3, 4]].sum(axis=1).astype(float)  # trunk, rest, full classifier
    part = ev.forced_counters[:, [0, 1, 2]].sum(axis=1).astype(float)  # trunk, part head, part classifier
    assert task["full_model_counts_stats"]["p99"] == np.percentile(full, 99)
    assert task["full_model_latency_ms_stats"]["max"] == board.latency_ms(full.max())
    assert task["part_model_counts_stats"]["p50"] == np.percentile(part, 50)
    assert task["part_model_counts"] == part.mean()
    assert task["mean_latency_ms_per_stage"]["rest"] == board.latency_ms(ev.forced_counters[:, 3].mean())


def test_confidence_histogram_counts_every_sample_once_split_by_the_part_answer() -> None:
    ev = _varied()
    hist = build_report([ev], load_board("qemu_mps2_an386"), {})["tasks"][0]["confidence_histogram"]
    edges = np.array(hist["bin_edges"])
    assert len(edges) == len(hist["correct"]) + 1 == len(hist["wrong"]) + 1
    assert np.all(np.diff(edges) > 0) and edges[0] <= 0.35 and edges[-1] < 1.0
    right = ev.part_pred == ev.labels
    assert sum(hist["correct"]) == right.sum() == 8 and sum(hist["wrong"]) == 3
    # each confidence in its bin; 1.0 (above the last edge) in the last one
    bins = np.clip(np.searchsorted(edges, ev.part_conf, side="right") - 1, 0, len(edges) - 2)
    assert hist["correct"] == np.bincount(bins[right], minlength=len(edges) - 1).tolist()
    assert hist["wrong"] == np.bincount(bins[~right], minlength=len(edges) - 1).tolist()
    assert hist["correct"][-1] >= 1
    assert hist["thresholds"] == {"0.3": 0.9, "0.6": 0.7}
    assert hist["exit_at_part"] == {"0.3": 3 / 11, "0.6": 6 / 11}


def test_accuracy_energy_points_and_plain_json() -> None:
    board = load_board("qemu_mps2_an386")
    report = build_report([_varied()], board, {"chosen_ratio": 0.6})
    task = report["tasks"][0]
    points = task["accuracy_energy"]
    assert [(p["config"], p["ratio"]) for p in points] == [("part-only", None), ("full-only", None),
                                                            ("staged", 0.3), ("staged", 0.6)]
    assert points[0]["accuracy"] == 8 / 11 and points[1]["accuracy"] == 1.0
    assert points[1]["energy_mj"] == task["full_model_energy_mj"]
    assert points[3]["energy_mj"] == task["ratios"]["0.6"]["energy_mj"]
    assert report["board"]["flash_bytes"] == board.flash_bytes and report["board"]["ram_bytes"] == board.ram_bytes
    assert json.loads(json.dumps(report)) == report  # plain JSON, no numpy values


def test_report_md_has_the_sections_numbers_and_plot_links(tmp_path: Path) -> None:
    board = load_board("qemu_mps2_an386")
    sim = {"digits": {"part": {"samples": 11, "agree": 11, "threshold_ties": []},
                      "full": {"samples": 11, "agree": 11, "threshold_ties": []},
                      "staged": {"0.3": {"samples": 11, "agree": 10, "threshold_ties": [4]}}}}
    extra = {
        "chosen_ratio": 0.6, "simulation": sim, "samples": {"train": 40, "calib": 12, "test": 11},
        "device": {"protocol_version": 1, "clock_hz": board.clock_hz, "max_slots": 64, "arena_bytes": 18560},
        "firmware": {"arena_bytes": 18560, "const_bytes": 41000,
                     "build": {"result": {"flash_bytes": 93968, "flash_total": 2097152, "ram_bytes": 202416,
                                          "ram_total": 655360, "built_by": "arm-none-eabi-gcc"}}},
        "device_training": {"digits": {"part_loss": 0.25, "part_accuracy": 0.875}},
        "extractor": {"macs": {"full": 843776, "part_share": 0.444}, "seconds": {"total_s": 84.0},
                      "probe": {"before_joint": {"digits": {"part": 0.736, "full": 0.866}},
                                "after_joint": {"digits": {"part": 0.955, "full": 0.970}}}},
    }
    report = build_report([_varied()], board, extra)
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert markdown(report) == md
    for name in ("latency_per_stage.png", "confidence_histogram.png", "accuracy_vs_energy.png"):
        assert f"]({name})" in md and (tmp_path / name).is_file()
    for section in ("## Summary", "## Latency per inference (ms)", "## Plots", "## Device and firmware",
                    "## Simulation", "## Device training", "## Extractor"):
        assert section in md
    stats = report["tasks"][0]["ratios"]["0.6"]["latency_ms_stats"]
    row = next(line for line in md.splitlines() if line.startswith("| digits | staged r=0.6 (chosen) |"))
    assert row.endswith(f"| {stats['mean']:,.3f} | {stats['p50']:,.3f} | {stats['p99']:,.3f} | {stats['max']:,.3f} |")
    assert "| digits | 0.60 (chosen) |" in md
    assert "estimated: instructions x CPI 1 / 120 MHz" in md
    assert "32 of 33 device answers predicted exactly, 1 threshold ties, 0 unexplained" in md
    assert "flash 93,968 B of 2,097,152 B, RAM 202,416 B of 655,360 B" in md
    assert "tensor arena 18,560 B, constants 41,000 B" in md
    assert "MACs: full model 843,776, part 44.4% of it" in md and "| digits | 73.6% | 95.5% | 86.6% | 97.0% |" in md
    assert "| digits | 0.25 | 0.875 |" in md
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_report_json_from_before_the_latency_keys_still_renders(tmp_path: Path) -> None:
    report = build_report([_evaluation()], load_board("qemu_mps2_an386"), {})
    old = json.loads(json.dumps(report))
    task = old["tasks"][0]
    for key in [k for k in task if k.startswith("part_model") or k.endswith("_stats")]:
        del task[key]
    for key in ("mean_latency_ms_per_stage", "confidence_histogram", "accuracy_energy"):
        del task[key]
    for row in task["ratios"].values():
        for key in ("counts_stats", "latency_ms_stats", "mean_counts_per_stage", "mean_latency_ms_per_stage"):
            del row[key]
    del old["board"]["flash_bytes"], old["board"]["ram_bytes"]
    write_report(old, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "](accuracy_vs_energy.png)" in md and "latency_per_stage" not in md and "confidence_histogram" not in md
    assert (tmp_path / "accuracy_vs_energy.png").is_file()
    assert not (tmp_path / "latency_per_stage.png").exists()
