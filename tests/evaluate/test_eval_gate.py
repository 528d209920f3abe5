"""`eval` as a CI gate on a rig of emulated boards (the real CLI, real QEMU, the real host build
over a pty): every gate passing, a gate failing with its numbers, a board that never answers
(retried, then an error, the other board's results intact), a board that stops answering mid-run
(partial results kept, never counted as measured), and the rig-file and selection errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "microt_deploy.cli"]
ENV = {**os.environ, "MICROT_PIO_OFFLINE": "1", "COLUMNS": "250"}
ENV.pop("MICROT_DEBUG", None)


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


def suites(path: Path) -> dict[str, dict[str, ET.Element]]:
    """JUnit file -> {suite name: {testcase name: element}}."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return {s.get("name"): {tc.get("name"): tc for tc in s.findall("testcase")} for s in root.findall("testsuite")}


def outcome_of(case: ET.Element) -> str:
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return tag
    return "passed"


@pytest.fixture(scope="module")
def project(spine_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's small project with fewer samples (the gate, not the model, is tested)."""
    root = tmp_path_factory.mktemp("gate") / "p"
    shutil.copytree(spine_project, root, ignore=shutil.ignore_patterns("runs", ".microt.lock"))
    toml = root / "microt.toml"
    text = toml.read_text()
    for key, value in (("max_train_samples", 100), ("max_calib_samples", 40), ("max_test_samples", 20)):
        lines = [f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.splitlines()]
        text = "\n".join(lines) + "\n"
    toml.write_text(text)
    return root


def rig(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "rig.yaml"
    path.write_text(entries)
    return path


EMULATED = """\
- platform: mps2_an386
  connected: true
- platform: native_sim
  connected: true
"""
# The STM32 image PlatformIO built, in QEMU's b-l475e-iot01a: no probe id and no port.
EMULATED_STM32 = """\
- platform: disco_l475_iot1
  connected: true
"""


@pytest.mark.slow
def test_every_gate_passes_on_a_rig_of_emulated_boards(project: Path, tmp_path: Path) -> None:
    junit, results = tmp_path / "junit.xml", tmp_path / "results.json"
    res = cli("eval", "-p", str(project), "--rig", str(rig(tmp_path, EMULATED + EMULATED_STM32)),
              "--min-accuracy", "0.3", "--max-latency-ms", "p50=1000,p99=1000,max=1000", "--min-energy-saved", "0",
              "--max-ram-kb", "1024",
              "--max-flash-kb", "2048", "--junit-output-path", str(junit), "--json-output-path", str(results))
    assert res.returncode == 0, res.stdout + res.stderr
    found = suites(junit)
    assert set(found) == {"qemu_mps2_an386", "host", "disco_l475vg_iot01a"}
    for name, cases in found.items():
        assert set(cases) == {"flash", "connect", "train", "accuracy", "latency", "energy", "memory"}, name
        assert {outcome_of(c) for c in cases.values()} == {"passed"}, name
    data = json.loads(results.read_text())
    assert data["exit_code"] == 0 and data["passed"] == 3
    for board in data["boards"]:
        report = json.loads((Path(board["run_dir"]) / "report.json").read_text())
        # what the gate measured is what the board's own report says, at the project's ratio
        for task in report["tasks"]:
            row = task["ratios"][f"{report['chosen_ratio']:g}"]
            assert board["measured"]["tasks"][task["task"]]["accuracy"] == row["accuracy"]
        assert board["measured"]["ram_bytes"] == report["firmware"]["build"]["result"]["ram_bytes"]
    # the JSON is a baseline for the next run: the emulated board counts instructions, so a rerun
    # measures the same accuracy and latency, which pass with no drop and no regression allowed
    res = cli("eval", "-p", str(project), "--board", "qemu_mps2_an386", "--compare-report", str(results),
              "--max-accuracy-drop", "0", "--max-latency-regression", "0", "--json-output-path",
              str(tmp_path / "again.json"))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_a_missed_gate_is_a_failure_with_the_numbers_and_exit_1(project: Path, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    res = cli("eval", "-p", str(project), "--board", "host", "--max-latency-ms", "p99=0.0001",
              "--retry-failed", "2", "--junit-output-path", str(junit), "--json-output-path", str(tmp_path / "r.json"))
    assert res.returncode == 1, res.stdout + res.stderr
    cases = suites(junit)["host"]
    assert outcome_of(cases["latency"]) == "failure"
    message = cases["latency"].find("failure").get("message")
    assert "p99 latency" in message and "> 0.0001 ms" in message
    assert outcome_of(cases["accuracy"]) == "passed" and outcome_of(cases["train"]) == "passed"
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["boards"][0]["attempts"]) == 1  # a gate failure is never retried
    assert "host latency failed: " in res.stderr


@pytest.mark.slow
def test_a_board_that_never_answers_is_an_error_after_the_retries(project: Path, tmp_path: Path) -> None:
    master, slave = os.openpty()  # a port that opens but where no firmware ever answers
    try:
        entries = EMULATED.split("- platform: native_sim")[0] + f"""\
- id: SILENT0001
  platform: disco_l475_iot1
  product: STM32 STLink
  runner: none
  serial: {os.ttyname(slave)}
  connected: true
"""
        junit, results = tmp_path / "junit.xml", tmp_path / "results.json"
        res = cli("eval", "-p", str(project), "--rig", str(rig(tmp_path, entries)), "--timeout", "connect=2",
                  "--retry-failed", "1", "--junit-output-path", str(junit), "--json-output-path", str(results))
    finally:
        os.close(master)
        os.close(slave)
    assert res.returncode == 2, res.stdout + res.stderr
    found = suites(junit)
    silent = found["disco_l475vg_iot01a@SILENT0001"]
    assert outcome_of(silent["flash"]) == "skipped"  # runner none: the board keeps what it runs
    assert outcome_of(silent["connect"]) == "error"
    assert all(outcome_of(silent[c]) == "error" for c in ("train", "accuracy", "latency", "energy"))
    assert {outcome_of(c) for c in found["qemu_mps2_an386"].values()} == {"passed"}
    data = {b["label"]: b for b in json.loads(results.read_text())["boards"]}
    assert [a["status"] for a in data["disco_l475vg_iot01a@SILENT0001"]["attempts"]] == ["error", "error"]
    assert data["disco_l475vg_iot01a@SILENT0001"]["measured"] is None
    assert data["qemu_mps2_an386"]["measured"]["tasks"]


@pytest.mark.slow
def test_a_board_that_stops_mid_run_keeps_partial_results_marked_partial(project: Path) -> None:
    from microt_deploy import children
    from microt_deploy.boards import load_board
    from microt_deploy.evaluate import gate_report, hil

    killed: list[int] = []

    def forward(stage: str, done: int, total: int) -> None:
        if stage.endswith("evaluate") and done == 5 and not killed:
            for pid in children.alive():  # the host firmware: the board "loses power"
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    spec = hil.BoardSpec(board=load_board("host"), label="host")
    outcome = hil.run_board(project, spec, hil.RunOptions(retry_failed=0), Console(quiet=True), forward, quiet=True)
    assert killed and outcome.status == "error" and outcome.partial
    report = json.loads((Path(outcome.run_dir) / "report.json").read_text())
    assert report["partial"]["samples_evaluated"] == 5 and report["partial"]["samples_planned"] == 20
    assert all(task["samples"] == 5 for task in report["tasks"])
    assert "partial" in (Path(outcome.run_dir) / "report.md").read_text().lower()
    assert outcome.cases["accuracy"].status == "error" and "partial: 5 of 20" in outcome.cases["accuracy"].message
    assert gate_report.results_json([outcome], 2)["boards"][0]["measured"] is None


def test_a_rig_file_with_an_unknown_board_is_a_usage_error(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path / "p")).returncode == 0
    path = rig(tmp_path, "- id: X1\n  platform: frdm_k64f\n  serial: /dev/ttyACM0\n  connected: true\n")
    res = cli("eval", "-p", str(tmp_path / "p"), "--rig", str(path))
    assert res.returncode == 4, res.stderr
    assert "frdm_k64f" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_no_connected_board_matching_is_exit_5(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path / "p")).returncode == 0
    path = rig(tmp_path, "- id: OFF1\n  platform: nucleo_l4r5zi\n  serial: /dev/ttyACM0\n  connected: false\n")
    res = cli("eval", "-p", str(tmp_path / "p"), "--rig", str(path))
    assert res.returncode == 5, res.stderr
    res = cli("eval", "-p", str(tmp_path / "p"), "--rig", str(path), "--serial-number", "NOPE")
    assert res.returncode == 5, res.stderr


@pytest.mark.parametrize("args", [["--min-accuracy", "high"], ["--timeout", "flashing=3"], ["--no-such-option"],
                                  ["--retry-failed", "-1"]])
def test_bad_options_are_usage_errors_exit_4(tmp_path: Path, args: list[str]) -> None:
    assert cli("init", str(tmp_path / "p")).returncode == 0
    res = cli("eval", "-p", str(tmp_path / "p"), *args)
    assert res.returncode == 4, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_flash_is_skipped_only_for_the_image_that_board_last_ran(project: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from microt_deploy.boards import load_board
    from microt_deploy.evaluate import hil
    from microt_deploy.project import open_project
    from microt_deploy.targets import flashed, image_path

    monkeypatch.setenv("MICROT_STATE_DIR", str(tmp_path / "state"))
    board = load_board("disco_l475vg_iot01a")
    image = image_path(board, open_project(project).firmware_dir(board.id))
    spec = hil.BoardSpec(board=board, label="l475@SN-FLASH-1", serial_number="SN-FLASH-1", reset="probe")
    assert not hil.emulated(spec)  # a probe is named: the real board, never QEMU
    flashed.remember("SN-FLASH-1", board.id, image, flashed.sha256_file(image))
    outcome = hil.Outcome(spec)
    assert hil._flash(project, spec, hil.RunOptions(), outcome)
    assert outcome.cases["flash"].status == "passed" and "not re-flashed" in outcome.cases["flash"].message
    # another image on that board: PlatformIO's upload runs for real, and with no probe here it fails
    flashed.remember("SN-FLASH-1", board.id, image, "0" * 64)
    outcome = hil.Outcome(spec)
    assert not hil._flash(project, spec, hil.RunOptions(offline=True), outcome)
    assert outcome.cases["flash"].status == "error" and "flashing disco_l475vg_iot01a" in outcome.cases["flash"].message
    assert flashed.last_flashed("SN-FLASH-1") is None  # a failed flash leaves the board's image unknown
