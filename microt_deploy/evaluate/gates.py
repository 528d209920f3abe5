"""Performance gates for `eval`: what a CI rig asserts of a board's run, and the check of a report
against them.

A gate reads the measured figures at the project's chosen ratio (``device.ratio``: the
configuration that ships) from a report (``report.json`` as :mod:`microt_deploy.evaluate.report`
writes it): staged accuracy per task, staged latency per inference (p50 / p99 / max over the test
samples, from the device's counters), the energy saved against full-model inference, and the
image's static RAM and flash from the build. ``--compare-report`` adds the same figures of an
earlier run as a baseline with an allowed accuracy drop and latency regression.

Gates come from the command line and from a rig file's per-board ``gates:`` mapping; the command
line wins key by key. Every value is checked when it is parsed: a bad gate is a usage error.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microt_deploy.errors import MicrotError

USAGE_EXIT = 4
PERCENTILES = ("p50", "p99", "max")
# The keys a rig file's ``gates:`` mapping may hold (the command-line options without dashes).
GATE_KEYS = ("min_accuracy", "max_latency_ms", "min_energy_saved", "max_ram_kb", "max_flash_kb",
             "max_accuracy_drop", "max_latency_regression")
DEFAULT_ACCURACY_DROP = 0.01  # absolute: one point of accuracy
DEFAULT_LATENCY_REGRESSION = 0.05  # relative: 5 % slower


def usage(problem: str, fix: str) -> MicrotError:
    """A gate or option the user wrote wrong: exit 4, as eval's other usage errors."""
    return MicrotError(problem, fix, exit_code=USAGE_EXIT)


@dataclass(frozen=True)
class Gates:
    """What one board's run must meet; None / empty: not gated."""

    min_accuracy: dict[str, float] = field(default_factory=dict)  # task -> fraction; "*" every task
    max_latency_ms: dict[str, float] = field(default_factory=dict)  # "p50" / "p99" / "max" -> ms
    min_energy_saved: float | None = None  # fraction of full-model energy
    max_ram_kb: float | None = None
    max_flash_kb: float | None = None
    baseline: dict[str, Any] | None = None  # measurements() of the baseline run
    baseline_source: str = ""
    max_accuracy_drop: float = DEFAULT_ACCURACY_DROP
    max_latency_regression: float = DEFAULT_LATENCY_REGRESSION

    def over(self, base: Gates) -> Gates:
        """These gates with ``base``'s where these set none (the command line over the rig file)."""
        merged = {}
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(base, f.name)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            merged[f.name] = theirs if mine == default else mine
        return Gates(**merged)

    @property
    def empty(self) -> bool:
        return self == Gates()


# ---------------------------------------------------------------- parsing


def parse_fraction(text: Any, what: str) -> float:
    """0.9, "0.9" or "90%" -> 0.9; outside [0, 1] or not a number is a usage error."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise usage(f"{what} '{text}' is not a number", "write a fraction such as 0.9 or a percentage such as 90%") \
            from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise usage(f"{what} {text} is outside 0..1 (0..100%)", "write a fraction such as 0.9 or 90%")
    return value


def parse_positive(text: Any, what: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise usage(f"{what} '{text}' is not a number", f"write a positive number, e.g. {what} 250") from None
    if not value > 0 or math.isinf(value):
        raise usage(f"{what} {text} is not a positive number", f"write a positive number, e.g. {what} 250")
    return value


def _pairs(value: Any, what: str) -> dict[str, Any]:
    """``a=1,b=2`` (command line) or a mapping (rig file) -> dict; a bare value -> {"": value}."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    text = str(value).strip()
    if "=" not in text:
        return {"": text}
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise usage(f"{what} '{value}' is not a list of name=value", f"write e.g. {what} digits=0.95,loops=0.9")
        out[key.strip()] = val.strip()
    return out


def parse_min_accuracy(value: Any) -> dict[str, float]:
    """``0.9`` (every task) or ``digits=0.95,loops=90%`` / {digits: 0.95}."""
    pairs = _pairs(value, "--min-accuracy")
    return {(k or "*"): parse_fraction(v, f"--min-accuracy {k}".strip()) for k, v in pairs.items()}


def parse_max_latency(value: Any) -> dict[str, float]:
    """``12`` (the p99) or ``p50=5,p99=8,max=10`` / {p99: 8}: milliseconds per staged inference."""
    pairs = _pairs(value, "--max-latency-ms")
    out = {}
    for key, val in pairs.items():
        key = key or "p99"
        if key not in PERCENTILES:
            raise usage(f"--max-latency-ms has '{key}', not one of {', '.join(PERCENTILES)}",
                        "write e.g. --max-latency-ms p50=5,p99=8,max=10")
        out[key] = parse_positive(val, f"--max-latency-ms {key}")
    return out


def gates_from_mapping(data: Any, where: str) -> Gates:
    """A rig file's ``gates:`` mapping -> Gates; ``where`` names the file and entry in errors."""
    if data is None:
        return Gates()
    if not isinstance(data, dict):
        raise usage(f"{where}: gates must be a mapping", f"write e.g. gates: {{min_accuracy: 0.9}}; keys: "
                    f"{', '.join(GATE_KEYS)}")
    unknown = sorted(set(map(str, data)) - set(GATE_KEYS))
    if unknown:
        raise usage(f"{where}: unknown gate {', '.join(unknown)}", f"use one of {', '.join(GATE_KEYS)}")
    try:
        return build_gates(**{k: data.get(k) for k in GATE_KEYS})
    except MicrotError as err:
        raise usage(f"{where}: {err.problem}", err.fix) from None


def build_gates(min_accuracy: Any = None, max_latency_ms: Any = None, min_energy_saved: Any = None,
                max_ram_kb: Any = None, max_flash_kb: Any = None, max_accuracy_drop: Any = None,
                max_latency_regression: Any = None, compare_report: Path | None = None) -> Gates:
    """Gates from option values (strings, numbers or mappings; None: not gated)."""
    baseline = None
    source = ""
    if compare_report is not None:
        baseline = load_baseline(Path(compare_report))
        source = str(compare_report)
    return Gates(
        min_accuracy=parse_min_accuracy(min_accuracy) if min_accuracy is not None else {},
        max_latency_ms=parse_max_latency(max_latency_ms) if max_latency_ms is not None else {},
        min_energy_saved=None if min_energy_saved is None else parse_fraction(min_energy_saved,
                                                                               "--min-energy-saved"),
        max_ram_kb=None if max_ram_kb is None else parse_positive(max_ram_kb, "--max-ram-kb"),
        max_flash_kb=None if max_flash_kb is None else parse_positive(max_flash_kb, "--max-flash-kb"),
        baseline=baseline,
        baseline_source=source,
        max_accuracy_drop=(DEFAULT_ACCURACY_DROP if max_accuracy_drop is None
                           else parse_fraction(max_accuracy_drop, "--max-accuracy-drop")),
        max_latency_regression=(DEFAULT_LATENCY_REGRESSION if max_latency_regression is None
                                else parse_fraction(max_latency_regression, "--max-latency-regression")),
    )


# ---------------------------------------------------------------- what a report measured


def _chosen_row(task: dict[str, Any], chosen: float | None) -> dict[str, Any]:
    rows = task.get("ratios", {})
    if not rows:
        raise MicrotError(f"task {task.get('task')} has no staged results", "rerun eval")
    if chosen is not None:
        for row in rows.values():
            if math.isclose(float(row["ratio"]), float(chosen)):
                return row
    return list(rows.values())[-1]  # the sweep puts the chosen ratio last


def _latency(row: dict[str, Any]) -> dict[str, float]:
    stats = row.get("latency_ms_stats")
    if isinstance(stats, dict):
        return {k: float(stats[k]) for k in ("mean", *PERCENTILES) if k in stats}
    return {"mean": float(row["latency_ms"])}


def measurements(report: dict[str, Any]) -> dict[str, Any]:
    """The gated figures of one run's report: per task at the chosen ratio, and the image's memory."""
    chosen = report.get("chosen_ratio")
    tasks = {}
    for task in report.get("tasks", []):
        row = _chosen_row(task, chosen)
        tasks[task["task"]] = {
            "ratio": float(row["ratio"]),
            "accuracy": float(row["accuracy"]),
            "exit_at_part": float(row["exit_at_part"]),
            "latency_ms": _latency(row),
            "energy_mj": float(row["energy_mj"]),
            "energy_saved": float(row["energy_saved_vs_full"]),
            "samples": int(task.get("samples", 0)),
        }
    result = (report.get("firmware", {}).get("build", {}) or {}).get("result", {}) or {}
    return {
        "board": report.get("board", {}).get("id"),
        "counter_unit": report.get("board", {}).get("counter_unit"),
        "tasks": tasks,
        "ram_bytes": result.get("ram_bytes"),
        "flash_bytes": result.get("flash_bytes"),
    }


def load_baseline(path: Path, board: str | None = None, label: str | None = None) -> dict[str, Any]:
    """The measurements of a baseline: a run's report.json, or the JSON that ``--json-output-path``
    wrote (then the board with the same label, else the same board id, else the only one)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise usage(f"--compare-report {path} does not exist", "pass a report.json or an earlier "
                    "--json-output-path file") from None
    except (OSError, ValueError) as err:
        raise usage(f"--compare-report {path} is not readable JSON ({err})", "pass a report.json or an earlier "
                    "--json-output-path file") from None
    if isinstance(data, dict) and "tasks" in data and "board" in data:
        return {"": measurements(data)}
    if isinstance(data, dict) and isinstance(data.get("boards"), list):
        out = {}
        for entry in data["boards"]:
            if isinstance(entry, dict) and isinstance(entry.get("measured"), dict):
                out[str(entry.get("label", entry.get("board", "")))] = entry["measured"]
        if out:
            return out
    raise usage(f"--compare-report {path} is neither a report.json nor an eval --json-output-path file",
                "pass runs/<time>/report.json or an earlier --json-output-path file")


def baseline_for(baseline: dict[str, Any] | None, board: str, label: str) -> dict[str, Any] | None:
    """The baseline measurements that apply to one board's run."""
    if not baseline:
        return None
    if "" in baseline:
        return baseline[""]
    if label in baseline:
        return baseline[label]
    same = [m for m in baseline.values() if m.get("board") == board]
    return same[0] if len(same) == 1 else None


# ---------------------------------------------------------------- checking


@dataclass
class Check:
    """One gate's outcome: the testcase it belongs to, whether it held, and the numbers."""

    case: str  # accuracy / latency / energy / memory
    passed: bool
    message: str


def _pct(x: float) -> str:
    return f"{x:.2%}"


def check(measured: dict[str, Any], gates: Gates, label: str = "") -> list[Check]:
    """Every gate of ``gates`` against ``measured`` (from :func:`measurements`); ungated cases
    report their numbers as passed checks so that JUnit shows what was measured."""
    checks: list[Check] = []
    tasks = measured["tasks"]
    baseline = baseline_for(gates.baseline, measured.get("board") or "", label)

    for name, task in tasks.items():
        acc = task["accuracy"]
        limit = gates.min_accuracy.get(name, gates.min_accuracy.get("*"))
        if limit is not None:
            ok = acc >= limit
            checks.append(Check("accuracy", ok, f"{name}: staged accuracy {_pct(acc)} at ratio {task['ratio']:g} "
                                                f"{'>=' if ok else '<'} {_pct(limit)}"))
        base = (baseline or {}).get("tasks", {}).get(name)
        if base is not None:
            drop = base["accuracy"] - acc
            ok = drop <= gates.max_accuracy_drop + 1e-12
            checks.append(Check("accuracy", ok, f"{name}: staged accuracy {_pct(acc)} vs baseline "
                                                f"{_pct(base['accuracy'])} ({gates.baseline_source}): drop "
                                                f"{_pct(max(drop, 0.0))} {'<=' if ok else '>'} allowed "
                                                f"{_pct(gates.max_accuracy_drop)}"))
        if not gates.min_accuracy and base is None:
            checks.append(Check("accuracy", True, f"{name}: staged accuracy {_pct(acc)} (not gated)"))

        lat = task["latency_ms"]
        for key, limit in gates.max_latency_ms.items():
            if key not in lat:
                checks.append(Check("latency", False, f"{name}: no {key} latency in the report (an older report "
                                                      "holds the mean only)"))
                continue
            ok = lat[key] <= limit
            checks.append(Check("latency", ok, f"{name}: {key} latency {lat[key]:.3f} ms "
                                               f"{'<=' if ok else '>'} {limit:g} ms"))
        base_lat = (base or {}).get("latency_ms", {}) if base is not None else {}
        key = "p99" if "p99" in lat and "p99" in base_lat else "mean"
        if base is not None and key in base_lat and base_lat[key] > 0:
            change = lat[key] / base_lat[key] - 1.0
            ok = change <= gates.max_latency_regression + 1e-12
            checks.append(Check("latency", ok, f"{name}: {key} latency {lat[key]:.3f} ms vs baseline "
                                               f"{base_lat[key]:.3f} ms: {change:+.2%} "
                                               f"{'<=' if ok else '>'} allowed +{gates.max_latency_regression:.2%}"))
        if not gates.max_latency_ms and base is None:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in lat.items())
            checks.append(Check("latency", True, f"{name}: {shown} ms (not gated)"))

        saved = task["energy_saved"]
        if gates.min_energy_saved is not None:
            ok = saved >= gates.min_energy_saved
            checks.append(Check("energy", ok, f"{name}: energy saved vs full model {_pct(saved)} at ratio "
                                              f"{task['ratio']:g} {'>=' if ok else '<'} "
                                              f"{_pct(gates.min_energy_saved)}"))
        else:
            checks.append(Check("energy", True, f"{name}: energy saved vs full model {_pct(saved)} "
                                                f"({task['energy_mj']:.4f} mJ per inference, not gated)"))

    for key, limit, what in (("ram_bytes", gates.max_ram_kb, "RAM"), ("flash_bytes", gates.max_flash_kb, "flash")):
        if limit is None:
            continue
        used = measured.get(key)
        if used is None:
            checks.append(Check("memory", False, f"{what}: the build recorded no size (rebuild the board)"))
            continue
        ok = used / 1024 <= limit
        checks.append(Check("memory", ok, f"{what} {used / 1024:.1f} KiB {'<=' if ok else '>'} {limit:g} KiB"))
    return checks
