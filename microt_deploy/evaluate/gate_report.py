"""What a CI system reads of a gated `eval`: JUnit XML (one testsuite per board; testcases flash,
connect, train, accuracy, latency, energy and, when gated, memory; a missed gate is a ``<failure>``
with the numbers, an infrastructure problem an ``<error>``) and the same as JSON, with every
attempt, the measured figures and where each board's report lies.

JUnit has no single standard; this follows the shape Jenkins, GitLab and GitHub's test reporters
read (the one pytest and twister write): ``testsuites > testsuite > testcase`` with ``failure`` /
``error`` / ``skipped`` children carrying ``message`` and ``type``, counts and times on the suites.
"""

from __future__ import annotations

import json
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from microt_deploy import atomic
from microt_deploy.evaluate.hil import Outcome

TOOL = "microt-deploy eval"


def _counts(outcome: Outcome) -> dict[str, int]:
    statuses = [c.status for c in outcome.cases.values()]
    return {"tests": len(statuses), "failures": statuses.count("failed"), "errors": statuses.count("error"),
            "skipped": statuses.count("skipped")}


def junit_xml(outcomes: Sequence[Outcome], exit_code: int) -> str:
    """The JUnit document for ``outcomes``."""
    root = ET.Element("testsuites", name=TOOL)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    host = socket.gethostname()
    for o in outcomes:
        counts = _counts(o)
        for k in totals:
            totals[k] += counts[k]
        suite = ET.SubElement(root, "testsuite", name=o.spec.label, timestamp=stamp, hostname=host,
                              time=f"{o.seconds:.3f}", **{k: str(v) for k, v in counts.items()})
        props = ET.SubElement(suite, "properties")
        for name, value in _properties(o).items():
            ET.SubElement(props, "property", name=name, value=str(value))
        for case in o.cases.values():
            tc = ET.SubElement(suite, "testcase", classname=f"microt.{o.spec.board.id}", name=case.name,
                               time=f"{case.seconds:.3f}")
            if case.status == "failed":
                el = ET.SubElement(tc, "failure", message=case.message, type="gate")
                el.text = "\n".join(case.details or [case.message])
            elif case.status == "error":
                el = ET.SubElement(tc, "error", message=case.message, type="partial" if o.partial else "device")
                el.text = case.message
            elif case.status == "skipped":
                ET.SubElement(tc, "skipped", message=case.message)
            else:
                out = ET.SubElement(tc, "system-out")
                out.text = "\n".join(case.details or [case.message])
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", f"{sum(o.seconds for o in outcomes):.3f}")
    ET.SubElement(root, "properties")
    root.find("properties").append(ET.Element("property", name="exit_code", value=str(exit_code)))  # type: ignore[union-attr]
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _properties(o: Outcome) -> dict[str, Any]:
    props: dict[str, Any] = {"board": o.spec.board.id, "status": o.status, "attempts": len(o.attempts),
                             "partial": str(o.partial).lower()}
    if o.spec.serial_number:
        props["serial_number"] = o.spec.serial_number
    if o.spec.port:
        props["port"] = o.spec.port
    if o.run_dir:
        props["run_dir"] = o.run_dir
    transport = (o.report or {}).get("transport", {})
    if transport.get("kind"):
        props["transport"] = transport["kind"]
    return props


def results_json(outcomes: Sequence[Outcome], exit_code: int) -> dict[str, Any]:
    """Everything of the run as plain data (what ``--json-output-path`` holds)."""
    boards = []
    for o in outcomes:
        boards.append({
            "label": o.spec.label,
            "board": o.spec.board.id,
            "serial_number": o.spec.serial_number,
            "port": o.spec.port,
            "status": o.status,
            "partial": o.partial,
            "partial_detail": (o.report or {}).get("partial"),
            "attempts": o.attempts,
            "seconds": round(o.seconds, 3),
            "testcases": [{"name": c.name, "status": c.status, "message": c.message, "details": c.details,
                           "seconds": round(c.seconds, 3)} for c in o.cases.values()],
            # a partial run's figures are not measurements: they never enter a baseline
            "measured": None if o.partial else o.measured,
            "run_dir": o.run_dir,
            "transport": (o.report or {}).get("transport"),
        })
    statuses = [o.status for o in outcomes]
    return {"tool": TOOL, "exit_code": exit_code, "passed": statuses.count("passed"),
            "failed": statuses.count("failed"), "errors": statuses.count("error"), "boards": boards}


def write_junit(path: Path, outcomes: Sequence[Outcome], exit_code: int) -> None:
    atomic.write_text(Path(path), junit_xml(outcomes, exit_code))


def write_json(path: Path, outcomes: Sequence[Outcome], exit_code: int) -> None:
    atomic.write_text(Path(path), json.dumps(results_json(outcomes, exit_code), indent=2, default=float) + "\n")
