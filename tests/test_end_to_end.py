"""The spine, end to end on the emulated boards: a small extractor trained, exported, compiled, built
for QEMU mps2-an386 (direct build) and for the B-L475E-IOT01A (the STM32 project users flash, built by
PlatformIO offline and booted in QEMU's b-l475e-iot01a machine), classifiers trained on the device
over serial, staged inference evaluated.

Asserts what the spine promises: the device's trunk / part-head / rest outputs equal TFLite's
reference kernels byte for byte; the device's staged answers equal the host simulation of the same
int8 graphs and the same trained heads; the link never loses sync; the report is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from microt_deploy import pipeline

pytestmark = pytest.mark.slow
BOARDS = ["qemu_mps2_an386", "disco_l475vg_iot01a"]


@pytest.fixture(scope="module")
def project(spine_project: Path) -> Path:
    return spine_project


@pytest.mark.parametrize("board_id", BOARDS)
def test_device_graph_outputs_equal_tflite_reference(project: Path, board_id: str) -> None:
    from microt_deploy.boards import load_board
    from microt_deploy.export import quantize_input, reference_outputs
    from microt_deploy.model.data import load_splits
    from microt_deploy.project import open_project

    proj = open_project(project)
    info = json.loads((project / "export" / "export.json").read_text())
    samples = quantize_input(load_splits(proj.config)["test"].images[:4], info)
    # the oracle runs part head and rest on the trunk's own int8 bytes, as the device does
    ref = reference_outputs(project / "export", samples)
    with pipeline.open_device(proj, load_board(board_id), None) as device:
        for i, sample in enumerate(samples):
            device.load_input(sample.tobytes())
            device.run_graphs()
            for tensor_id, key in enumerate(("split", "part_features", "full_features")):
                got = np.frombuffer(device.read_tensor(tensor_id), dtype=np.int8)
                want = ref[key][i].reshape(-1)
                assert got.shape == want.shape, key
                assert np.array_equal(got, want), f"sample {i} {key}: {np.sum(got != want)} bytes differ"
        # the link keeps working after a burst of garbage: no lost sync
        device.port.write(bytes(range(256)) * 4)
        assert device.hello() is not None


@pytest.mark.parametrize("board_id", BOARDS)
def test_staged_inference_on_device_matches_host_simulation(project: Path, board_id: str) -> None:
    report = pipeline.evaluate(project, board_id, None, Console(stderr=True, quiet=True))
    assert report["board"]["id"] == board_id and report["board"]["counter_unit"] == "instructions"
    assert report["samples"]["train"] + report["samples"]["calib"] <= report["device"]["max_slots"]
    sim = report["simulation"]
    for task, result in sim.items():
        for kind in ("part", "full"):
            assert result[kind]["unexplained"] == [], (task, kind, result[kind])
            assert result[kind]["threshold_ties"] == []
        for ratio, staged in result["staged"].items():
            assert staged["unexplained"] == [], (task, ratio, staged)
            assert abs(staged["threshold_device"] - staged["threshold_host"]) < 1e-5
    for task in report["tasks"]:
        half = task["ratios"]["0.5"]
        # staged inference at ratio 0.5 must spend fewer instructions than the full model
        assert half["counts_per_inference"] < task["full_model_counts"]
        assert 0.2 <= half["exit_at_part"] <= 0.8
        # accuracy well above chance on the digits task proves the on-device heads learned
        if task["task"] == "digits":
            assert task["full_accuracy"] > 0.5, task
    run_dir = Path(report["run_dir"])
    assert (run_dir / "report.json").is_file() and (run_dir / "report.md").is_file()
    assert (run_dir / "accuracy_vs_energy.png").is_file()
