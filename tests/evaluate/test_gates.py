"""The gates of `eval` and the reports a CI system reads, on hand-made numbers: option parsing,
each gate's verdict at its boundary, the baseline comparison, and the JUnit / JSON documents."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import MicrotError
from microt_deploy.evaluate import gate_report, gates
from microt_deploy.evaluate.hil import BoardSpec, Case, Outcome, exit_code


def report(acc: dict[str, float], p99: float = 4.0, saved: float = 0.2, ram: int = 200_000,
           flash: int = 90_000) -> dict:
    """A report.json as evaluate/report.py writes it, the chosen ratio (0.5) last."""
    tasks = []
    for name, a in acc.items():
        tasks.append({"task": name, "samples": 100, "ratios": {
            "0.3": {"ratio": 0.3, "accuracy": 0.0, "exit_at_part": 0.3, "latency_ms": 9.0, "energy_mj": 1.0,
                    "energy_saved_vs_full": 0.0, "latency_ms_stats": {"mean": 9, "p50": 9, "p99": 9, "max": 9}},
            "0.5": {"ratio": 0.5, "accuracy": a, "exit_at_part": 0.5, "latency_ms": 3.0, "energy_mj": 0.5,
                    "energy_saved_vs_full": saved,
                    "latency_ms_stats": {"mean": 3.0, "p50": 2.5, "p99": p99, "max": p99 + 1}},
        }})
    return {"board": {"id": "qemu_mps2_an386", "counter_unit": "instructions"}, "chosen_ratio": 0.5,
            "tasks": tasks, "firmware": {"build": {"result": {"ram_bytes": ram, "flash_bytes": flash}}}}


def verdicts(checks: list[gates.Check]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for c in checks:
        out[c.case] = out.get(c.case, True) and c.passed
    return out


def test_options_parse_fractions_percentages_and_per_task_values() -> None:
    g = gates.build_gates(min_accuracy="digits=95%,loops=0.9", max_latency_ms="p50=5,max=10",
                          min_energy_saved="15%", max_ram_kb="256")
    assert g.min_accuracy == {"digits": pytest.approx(0.95), "loops": 0.9}
    assert g.max_latency_ms == {"p50": 5.0, "max": 10.0}
    assert g.min_energy_saved == pytest.approx(0.15) and g.max_ram_kb == 256.0
    assert gates.build_gates(min_accuracy="0.8", max_latency_ms="12").min_accuracy == {"*": 0.8}
    assert gates.build_gates(max_latency_ms="12").max_latency_ms == {"p99": 12.0}


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"min_accuracy": "1.5"}, "outside 0..1"),
    ({"min_accuracy": "high"}, "is not a number"),
    ({"min_accuracy": "digits=,x"}, "name=value"),
    ({"max_latency_ms": "p95=3"}, "not one of p50, p99, max"),
    ({"max_latency_ms": "-2"}, "not a positive number"),
    ({"max_ram_kb": "0"}, "not a positive number"),
])
def test_bad_gate_values_are_usage_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(MicrotError) as err:
        gates.build_gates(**kwargs)
    assert err.value.exit_code == 4 and words in str(err.value) and "\n" not in str(err.value)


def test_each_gate_holds_at_its_limit_and_fails_just_past_it() -> None:
    measured = gates.measurements(report({"digits": 0.95, "loops": 0.90}, p99=4.0, saved=0.2, ram=256 * 1024))
    assert measured["tasks"]["digits"]["ratio"] == 0.5  # the chosen ratio, not the last in the dict order
    at_limit = gates.build_gates(min_accuracy="digits=0.95,loops=0.9", max_latency_ms="p99=4", min_energy_saved=0.2,
                                 max_ram_kb=256)
    assert verdicts(gates.check(measured, at_limit)) == {"accuracy": True, "latency": True, "energy": True,
                                                        "memory": True}
    past = gates.build_gates(min_accuracy="digits=0.951", max_latency_ms="p99=3.99", min_energy_saved=0.21,
                             max_ram_kb=255.9)
    result = gates.check(measured, past)
    assert verdicts(result) == {"accuracy": False, "latency": False, "energy": False, "memory": False}
    failed = [c.message for c in result if not c.passed]
    assert "digits: staged accuracy 95.00% at ratio 0.5 < 95.10%" in failed, failed
    assert any("p99 latency 4.000 ms > 3.99 ms" in m for m in failed), failed
    assert any("RAM 256.0 KiB > 255.9 KiB" in m for m in failed), failed
    # a per-task accuracy gate that names only digits does not gate loops; the others gate every task
    assert not any(m.startswith("loops: staged accuracy") for m in failed)
    assert "loops: p99 latency 4.000 ms > 3.99 ms" in failed


def test_baseline_comparison_allows_the_given_drop_and_regression(tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    base.write_text(json.dumps(report({"digits": 0.95}, p99=4.0)))
    ok = gates.build_gates(compare_report=base, max_accuracy_drop=0.02, max_latency_regression=0.10)
    assert verdicts(gates.check(gates.measurements(report({"digits": 0.93}, p99=4.4)), ok)) == {
        "accuracy": True, "latency": True, "energy": True}
    result = gates.check(gates.measurements(report({"digits": 0.92}, p99=4.5)), ok)
    assert verdicts(result) == {"accuracy": False, "latency": False, "energy": True}
    assert any("drop 3.00% > allowed 2.00%" in c.message for c in result)
    assert any("+12.50% > allowed +10.00%" in c.message for c in result)


def test_baseline_from_an_earlier_json_output_picks_the_same_board(tmp_path: Path) -> None:
    spec = BoardSpec(board=load_board("qemu_mps2_an386"), label="qemu_mps2_an386")
    outcome = Outcome(spec, status="passed", measured=gates.measurements(report({"digits": 0.99})))
    path = tmp_path / "earlier.json"
    gate_report.write_json(path, [outcome], 0)
    g = gates.build_gates(compare_report=path)
    result = gates.check(gates.measurements(report({"digits": 0.97})), g, "qemu_mps2_an386")
    assert verdicts(result)["accuracy"] is False


@pytest.mark.parametrize("content", ["not json", json.dumps({"something": 1})])
def test_a_baseline_that_is_not_a_report_is_a_usage_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(MicrotError) as err:
        gates.build_gates(compare_report=path)
    assert err.value.exit_code == 4


def test_command_line_gates_override_the_rig_files_key_by_key() -> None:
    rig = gates.gates_from_mapping({"min_accuracy": 0.9, "max_ram_kb": 100}, "rig.yaml: entry 0")
    cli = gates.build_gates(min_accuracy="0.95")
    merged = cli.over(rig)
    assert merged.min_accuracy == {"*": 0.95} and merged.max_ram_kb == 100.0
    with pytest.raises(MicrotError) as err:
        gates.gates_from_mapping({"min_acuracy": 0.9}, "rig.yaml: entry 0")
    assert err.value.exit_code == 4 and "unknown gate min_acuracy" in str(err.value)


def outcome(label: str, statuses: dict[str, str], partial: bool = False) -> Outcome:
    o = Outcome(BoardSpec(board=load_board("host"), label=label), partial=partial)
    for name, status in statuses.items():
        o.add(Case(name, status, f"{name} {status} with numbers 1.23", 0.5))
    o.status = ("failed" if "failed" in statuses.values() else "error" if "error" in statuses.values()
                else "passed")
    o.attempts = [{"attempt": 1, "status": o.status}]
    return o


def test_exit_code_puts_a_measured_regression_before_a_device_error() -> None:
    passed = outcome("a", {"flash": "passed", "accuracy": "passed"})
    failed = outcome("b", {"flash": "passed", "accuracy": "failed"})
    error = outcome("c", {"flash": "error", "accuracy": "error"})
    assert exit_code([passed]) == 0
    assert exit_code([passed, error]) == 2
    assert exit_code([passed, error, failed]) == 1


def test_junit_has_one_suite_per_board_failures_errors_and_skips() -> None:
    outcomes = [outcome("host", {"flash": "skipped", "train": "passed", "accuracy": "failed"}),
                outcome("l475@SN1", {"flash": "passed", "connect": "error", "accuracy": "error"}, partial=True)]
    root = ET.fromstring(gate_report.junit_xml(outcomes, 1))
    assert root.tag == "testsuites" and root.get("tests") == "6"
    assert root.get("failures") == "1" and root.get("errors") == "2" and root.get("skipped") == "1"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["host", "l475@SN1"]
    first = {tc.get("name"): tc for tc in suites[0].findall("testcase")}
    assert first["accuracy"].find("failure").get("message") == "accuracy failed with numbers 1.23"
    assert first["flash"].find("skipped") is not None and first["train"].find("failure") is None
    second = {tc.get("name"): tc for tc in suites[1].findall("testcase")}
    assert second["connect"].find("error") is not None
    props = {p.get("name"): p.get("value") for p in suites[1].find("properties")}
    assert props["partial"] == "true" and props["attempts"] == "1"


def test_json_never_counts_a_partial_run_as_measured() -> None:
    o = outcome("host", {"accuracy": "error"}, partial=True)
    o.measured = {"tasks": {}}
    data = gate_report.results_json([o], 2)
    assert data["boards"][0]["measured"] is None and data["boards"][0]["partial"] is True
    assert data["exit_code"] == 2 and data["errors"] == 1
