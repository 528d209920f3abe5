"""`make bench-paper` (evaluate/paper_bench.py) without running it: the projects it makes are valid
paper-scale configs, and its figures come from the stages' outputs as they are shaped."""

from __future__ import annotations

import json

import pytest

from microt_deploy.errors import MicrotError
from microt_deploy.evaluate import paper_bench
from microt_deploy.model.backbone import macs_per_stage, resolve_model_config, split_shape
from microt_deploy.project import init_project, open_project


@pytest.mark.parametrize("backbone", paper_bench.BACKBONES)
def test_projects_are_the_paper_backbones_at_176_cut_after_block_9(backbone, tmp_path):
    init_project(tmp_path / backbone, paper_bench.project_config(backbone, "full"))
    config = open_project(tmp_path / backbone).config  # checked against the schema on the way
    model = resolve_model_config(config["model"])
    assert (model["input_size"], model["split_block"]) == (176, 9)
    assert split_shape(config["model"])[:2] == (11, 11)
    assert config["device"]["board"] == "qemu_mps2_an386" and config["eval"]["ratios"] == [0.3, 0.5, 0.7]
    assert config["data"]["dataset"] == "digits"  # bundled: nothing to download
    expected = {"mcunet-in3": 81_625_520, "proxyless-w0.3": 36_386_216}[backbone]
    assert abs(sum(macs_per_stage(config["model"])) - expected) / expected < 0.01


def test_unknown_names_are_refused():
    with pytest.raises(MicrotError, match="unknown backbone"):
        paper_bench.project_config("resnet", "full")
    with pytest.raises(MicrotError, match="unknown schedule"):
        paper_bench.project_config("mcunet-in3", "forever")


def _report() -> dict:
    cmp = {"samples": 4, "agree": 4, "threshold_ties": [], "unexplained": []}
    ratios = {f"{r:g}": {"exit_at_part": r, "accuracy": 0.5, "counts_per_inference": 150.0 + 10 * r,
                         "energy_mj": 2.0, "energy_saved_vs_full": 0.1} for r in (0.3, 0.5, 0.7)}
    task = {"task": "digits", "samples": 4, "part_accuracy": 0.5, "full_accuracy": 0.75,
            "mean_counts_per_stage": {"trunk": 100.0, "part_head": 2.0, "part_classifier": 1.0, "rest": 60.0,
                                      "full_classifier": 1.0},
            "full_model_counts": 164.0, "full_model_energy_mj": 3.0, "part_model_energy_mj": 1.5, "ratios": ratios}
    return {"tasks": [task], "simulation": {"digits": {"part": cmp, "full": cmp, "staged": {"0.5": cmp}}},
            "samples": {"train": 8, "calib": 4, "test": 4}, "device_seconds": 1.0,
            "firmware": {"build": {"config": {"fixed_ram_bytes": 5000, "input_size": 300, "max_slots": 9}}}}


def test_summary_takes_the_stages_figures():
    class Built:
        flash_bytes, ram_bytes = 9000, 8000

    config = paper_bench.project_config("mcunet-in3", "quick")
    config["model"]["split_block"] = 9
    parity = {"part_features": {"cosine_mean": 0.999, "cosine_min": 0.99},
              "full_features": {"cosine_mean": 0.998, "cosine_min": 0.98}, "linear_probe": {}}
    plan = {"arena_size": 1000, "const_bytes": 700,
            "graphs": [{"prefix": "trunk", "macs": 10}, {"prefix": "part_head", "macs": 0},
                       {"prefix": "rest", "macs": 5}]}
    stack = {"models": [{"model": f"{g}.tflite", "stack_bytes": s, "bit_exact": True, "bit_exact_naive": True}
                        for g, s in (("trunk", 600), ("part_head", 100), ("rest", 500))]}
    times = {"train": 1.0, "export": 2.0, "compile": 3.0, "stack": 4.0, "build": 5.0, "eval": 6.0}
    row = paper_bench.summarize("mcunet-in3", config, times, {"parity": parity}, plan, stack, Built(), _report())
    assert row["peak_sram_bytes"] == 1000 + 600  # the one arena + the deepest graph's measured stack
    assert row["bit_exact_graphs"] and row["flash_bytes"] == 9000 and row["macs"] == {"trunk": 10, "part_head": 0,
                                                                                         "rest": 5}
    assert row["tasks"][0]["instructions_per_stage"]["rest"] == 60
    assert row["host_simulation"]["answers"] == row["host_simulation"]["predicted"] == 12
    assert row["export_agreement"]["part"]["cosine_mean"] == 0.999
    results = {"schedule": "quick", "note": "n", "backbones": [row]}
    text = paper_bench.markdown(results)
    assert "| mcunet-in3 | 0.5 | 50.0% |" in text and "12 of 12" in text
    json.dumps(results)  # the JSON the bench writes
