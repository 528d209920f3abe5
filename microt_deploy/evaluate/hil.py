"""`eval` as a hardware-in-the-loop gate: choose the boards (a rig file, board ids, USB serial
numbers), flash each (skipped when the image's SHA-256 is what that board last ran), train the
heads on it, evaluate, and check the gates; boards run in parallel, infrastructure errors are
retried (``--retry-failed``), gate failures never are.

Owns the per-board phases and their timeouts, the classification of what went wrong (a missed gate
is a *failure*; a flash that failed, a board that stopped answering or a phase that ran out of time
is an *error*), the outcome per board that the JUnit and JSON reports are written from, and the
exit code: 0 all passed, 1 a gate or an evaluation failed, 2 a device error remained after the
retries, 4 a usage or rig-file error (raised before any board runs), 5 no connected board matched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from microt_deploy.boards import Board, load_board
from microt_deploy.errors import DeviceError, MicrotError, NoBoardError
from microt_deploy.evaluate.gates import USAGE_EXIT, Gates, check, gates_from_mapping, measurements

PHASES = ("connect", "store", "train", "evaluate")
# Seconds per phase at multiplier 1: generous for the demo on the emulated board (about 3 minutes in
# all); a rig scales them with --timeout-multiplier or the rig file's timeout_multiplier.
DEFAULT_TIMEOUTS_S = {"flash": 180.0, "connect": 30.0, "store": 900.0, "train": 900.0, "evaluate": 3600.0}
# A phase whose timeout is the default (not given with --timeout) grows with the work it measures: once
# samples complete, its deadline becomes ADAPT_FACTOR times the projected duration of each stage (the
# rate so far times the stage's samples), up to ADAPT_CEILING times its timeout. A 176x176 model on a
# real board stores a sample in about 10 s (93 KB at 115200 baud, then the graphs): 1,450 s for 150
# samples, past the 900 s default, and a hang still ends at the device's own answer timeout.
ADAPT_FACTOR, ADAPT_CEILING = 2.0, 8.0
CASES = ("flash", "connect", "train", "accuracy", "latency", "energy", "memory")
EXIT_PASSED, EXIT_FAILED, EXIT_ERROR, EXIT_NO_BOARD = 0, 1, 2, 5


class PhaseTimeout(DeviceError):
    """A phase of a board's run took longer than its timeout (an infrastructure error: retried)."""


class PartialRun(DeviceError):
    """The device stopped answering during the evaluation: the samples measured before are in
    ``report`` (marked partial) and were written to ``run_dir``."""

    def __init__(self, cause: MicrotError, report: dict[str, Any], run_dir: Path) -> None:
        super().__init__(cause.problem, cause.fix)
        self.report = report
        self.run_dir = run_dir


@dataclass
class BoardSpec:
    """One board to evaluate and how to reach it."""

    board: Board
    label: str
    port: str | None = None
    serial_number: str | None = None
    reset: str = "none"
    no_reset: bool = False
    flash: bool = True  # False: the board runs what it holds (rig runner `none`, --no-flash)
    gates: Gates = field(default_factory=Gates)
    timeout_multiplier: float = 1.0
    flash_timeout: float | None = None


@dataclass
class Case:
    """One JUnit testcase: passed / failed / error / skipped, with the numbers in ``message``."""

    name: str
    status: str
    message: str = ""
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What one board's run came to (the last attempt), with every attempt recorded."""

    spec: BoardSpec
    status: str = "error"  # passed / failed / error
    cases: dict[str, Case] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    run_dir: str | None = None
    partial: bool = False
    measured: dict[str, Any] | None = None
    seconds: float = 0.0

    def add(self, case: Case) -> None:
        self.cases[case.name] = case


@dataclass
class RunOptions:
    """Options that apply to every board of one `eval`."""

    ratios: Sequence[float] | None = None
    retry_failed: int = 0
    timeouts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS_S))
    fixed_phases: frozenset[str] = frozenset()  # phases given with --timeout: their deadline never grows
    offline: bool = False
    jobs: int = 0  # 0: every board at once


# ---------------------------------------------------------------- choosing the boards


def specs_from_rig(rig_path: Path, boards: Sequence[str], serial_numbers: Sequence[str], cli_gates: Gates,
                   multiplier: float, no_flash: bool, no_reset: bool) -> list[BoardSpec]:
    """The connected rig entries that match ``boards`` / ``serial_numbers`` (all connected when
    both are empty) as specs; the command line's gates over each entry's own."""
    from microt_deploy.rig.hwmap import load_rig, select

    entries = load_rig(rig_path)
    chosen = select(entries, boards=list(boards) or None, serial_numbers=list(serial_numbers) or None)
    specs = []
    for entry in chosen:
        board = load_board(entry.board)
        where = f"{rig_path}: entry {entries.index(entry)}" + (f" (id {entry.id})" if entry.id else "")
        label = f"{board.id}@{entry.id}" if entry.id else board.id
        flash_timeout = None
        if entry.flash_timeout is not None:
            try:
                flash_timeout = float(entry.flash_timeout)
            except (TypeError, ValueError):
                raise MicrotError(f"{where}: flash_timeout {entry.flash_timeout!r} is not a number",
                                  "write seconds, e.g. flash_timeout: 60", exit_code=USAGE_EXIT) from None
        specs.append(BoardSpec(
            board=board, label=label, port=entry.serial or None, serial_number=entry.id or None,
            reset=entry.reset or "none", no_reset=no_reset,
            flash=not no_flash and str(entry.runner or "").lower() != "none",
            gates=cli_gates.over(gates_from_mapping(entry.gates or None, where)),
            timeout_multiplier=multiplier * float(entry.timeout_multiplier or 1.0),
            flash_timeout=flash_timeout,
        ))
    return _unique_labels(specs)


def specs_from_options(project_board: str, boards: Sequence[str], port: str | None,
                       serial_numbers: Sequence[str], cli_gates: Gates, multiplier: float, no_flash: bool,
                       no_reset: bool) -> list[BoardSpec]:
    """Without a rig file: the given boards (default: the project's), each at most once; a port or
    a serial number picks the one board's probe."""
    ids = list(dict.fromkeys(boards)) or [project_board]
    if (port or serial_numbers) and len(ids) > 1:
        raise MicrotError("--port and --serial-number choose one board's probe, but several boards were given",
                          "describe the boards in a rig file (--rig) instead", exit_code=USAGE_EXIT)
    if len(serial_numbers) > 1:
        raise MicrotError("several --serial-number values without a rig file",
                          "list the boards in a rig file (microt-deploy rig --generate) and pass --rig",
                          exit_code=USAGE_EXIT)
    from microt_deploy.rig.hwmap import default_reset

    specs = []
    for board_id in ids:
        board = load_board(board_id)
        serial_number = serial_numbers[0] if serial_numbers else None
        specs.append(BoardSpec(board=board, label=board.id, port=port, serial_number=serial_number,
                               reset=default_reset(board), no_reset=no_reset, flash=not no_flash, gates=cli_gates,
                               timeout_multiplier=multiplier))
    return specs


def _unique_labels(specs: list[BoardSpec]) -> list[BoardSpec]:
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        n = seen.get(spec.label, 0)
        seen[spec.label] = n + 1
        out.append(spec if n == 0 else replace(spec, label=f"{spec.label}#{n + 1}"))
    return out


def check_builds(project_dir: Path, specs: Sequence[BoardSpec]) -> None:
    """Every chosen board has a finished build (a usage error before any board runs otherwise)."""
    from microt_deploy.pipeline import _check_last_build
    from microt_deploy.project import open_project

    project = open_project(project_dir)
    for spec in specs:
        try:
            _check_last_build(project, spec.board)
        except MicrotError as err:
            raise MicrotError(err.problem, err.fix, exit_code=USAGE_EXIT) from None


# ---------------------------------------------------------------- one board


class PhaseClock:
    """The current phase of one board's run and its deadline; the progress callback checks it (a
    slow phase ends at the next sample), and the device's own answer timeouts are capped by what
    is left of it (a board that stopped answering ends within the phase's time)."""

    def __init__(self, spec: BoardSpec, timeouts: dict[str, float], forward: Callable[..., Any],
                 fixed_phases: frozenset[str] = frozenset()) -> None:
        self.spec = spec
        self.timeouts = timeouts
        self.fixed_phases = fixed_phases
        self.stage = ""
        self.stage_started, self.stage_done, self.base_limit = 0.0, 0, 0.0
        self.forward = forward
        self.name = ""
        self.started = time.monotonic()
        self.deadline = float("inf")
        self.limit = 0.0
        self.durations: dict[str, float] = {}
        self.done: list[str] = []

    def start(self, name: str, device: Any = None) -> None:
        now = time.monotonic()
        if self.name:
            self.durations[self.name] = now - self.started
            self.done.append(self.name)
        self.name, self.started = name, now
        self.limit = self.timeouts.get(name, DEFAULT_TIMEOUTS_S.get(name, 600.0)) * self.spec.timeout_multiplier
        self.deadline = now + self.limit
        self.base_limit = self.limit
        self.stage = ""
        if device is not None:
            device.timeout = min(device.timeout, self.limit)
            device.long_timeout = min(max(device.long_timeout, 0.0), self.limit)
            if name == "connect":  # a board that never answers: all attempts of HELLO within the phase
                device.timeout = min(device.timeout, self.limit / (1 + getattr(device, "retries", 0)))

    def finish(self) -> None:
        if self.name:
            self.durations[self.name] = time.monotonic() - self.started
            self.done.append(self.name)
            self.name = ""

    def progress(self, stage: str, done: int, total: int, *_: Any) -> None:
        self.forward(f"{self.spec.label}: {stage}", done, total)
        now = time.monotonic()
        if stage != self.stage:  # the rate is measured from the stage's first report on
            self.stage, self.stage_started, self.stage_done = stage, now, done
        elif done > self.stage_done and total > done and self.name not in self.fixed_phases:
            rate = (now - self.stage_started) / (done - self.stage_done)
            projected_end = now + rate * (total - done)
            grown = self.started + min(ADAPT_FACTOR * (projected_end - self.started), ADAPT_CEILING * self.base_limit)
            if grown > self.deadline:
                self.deadline = grown
                self.limit = grown - self.started
        if now > self.deadline:
            raise PhaseTimeout(f"{self.spec.label}: the {self.name} phase ran past its {self.limit:.0f} s "
                               f"({done} of {total} {stage})",
                               "raise --timeout-multiplier (or the rig file's timeout_multiplier)")


def emulated(spec: BoardSpec) -> bool:
    """True when the run starts the image here: the host build, a QEMU board, or a real board's
    image in its emulator when the spec names no port and no probe (a rig entry without `serial`
    and `id`, e.g. `platform: disco_l475_iot1` runs in QEMU's b-l475e-iot01a)."""
    from microt_deploy.targets import can_launch

    if spec.board.run in ("qemu", "host"):
        return True
    return not spec.port and not spec.serial_number and can_launch(spec.board)


def _flash(project_dir: Path, spec: BoardSpec, options: RunOptions, outcome: Outcome) -> bool:
    """The flash testcase; False when it failed (an error: the rest is not run)."""
    from microt_deploy.project import open_project
    from microt_deploy.targets import flash as flash_image
    from microt_deploy.targets import flashed, image_path

    board = spec.board
    t0 = time.monotonic()
    if emulated(spec):
        how = "the host build is started here" if board.run == "host" else "QEMU loads the image when it starts"
        outcome.add(Case("flash", "passed", f"not flashed: {how}"))
        return True
    if not spec.flash:
        outcome.add(Case("flash", "skipped", "not flashed (runner none / --no-flash): the board runs what it holds"))
        return True
    fw_dir = open_project(project_dir).firmware_dir(board.id)
    image = image_path(board, fw_dir)
    sha = flashed.sha256_file(image)
    last = flashed.last_flashed(spec.serial_number)
    if last is not None and last.get("sha256") == sha:
        outcome.add(Case("flash", "passed", f"not re-flashed: {spec.serial_number} last ran this image "
                                            f"(sha256 {sha[:12]}, {last.get('flashed_at', '')})"))
        return True
    limit = (spec.flash_timeout or options.timeouts.get("flash", DEFAULT_TIMEOUTS_S["flash"])) * spec.timeout_multiplier
    flashed.forget(spec.serial_number)  # a flash that fails half-way leaves the board unknown
    try:
        flash_image(board, fw_dir, None, offline=options.offline, timeout_s=limit, serial_number=spec.serial_number)
    except MicrotError as err:
        outcome.add(Case("flash", "error", err.one_line(), time.monotonic() - t0))
        return False
    flashed.remember(spec.serial_number, board.id, image, sha)
    outcome.add(Case("flash", "passed", f"flashed sha256 {sha[:12]} in {time.monotonic() - t0:.1f} s",
                     time.monotonic() - t0))
    return True


def _attempt(project_dir: Path, spec: BoardSpec, options: RunOptions, console: Console,
             forward: Callable[..., Any], quiet: bool) -> Outcome:
    from microt_deploy import pipeline

    outcome = Outcome(spec)
    t0 = time.monotonic()
    if not _flash(project_dir, spec, options, outcome):
        _not_run(outcome, "flash failed")
        outcome.status = "error"
        return outcome
    clock = PhaseClock(spec, options.timeouts, forward, options.fixed_phases)
    hooks = pipeline.EvalHooks(progress=clock.progress, phase=clock.start, run_name=spec.label, quiet=quiet,
                               serial_number=spec.serial_number, reset=spec.reset, no_reset=spec.no_reset)
    report: dict[str, Any] | None = None
    try:
        report = pipeline.evaluate(project_dir, spec.board.id, spec.port, console, ratios=options.ratios, hooks=hooks)
        clock.finish()
    except PartialRun as err:
        clock.finish()
        outcome.partial = True
        outcome.report, outcome.run_dir = err.report, str(err.run_dir)
        _phase_cases(outcome, clock, failed_phase="evaluate", error=err)
        part = err.report.get("partial", {})
        why = (f"partial: {part.get('samples_evaluated', 0)} of {part.get('samples_planned', '?')} test samples "
               f"measured before the device stopped ({err.one_line()}); not counted as measured")
        for name in ("accuracy", "latency", "energy"):
            outcome.add(Case(name, "error", why))
        outcome.status = "error"
        return outcome
    except DeviceError as err:  # PhaseTimeout, no answer, port gone, NoBoardError
        failed = clock.name or "connect"
        clock.finish()
        _phase_cases(outcome, clock, failed_phase=failed, error=err)
        _not_run(outcome, f"{failed} failed")
        outcome.status = "error"
        return outcome
    except MicrotError as err:  # the evaluation itself failed (not the link): a failure, not retried
        failed = clock.name or "connect"
        clock.finish()
        _phase_cases(outcome, clock, failed_phase=failed, error=err, status="failed")
        _not_run(outcome, f"{failed} failed", status="failed")
        outcome.status = "failed"
        return outcome
    outcome.report = report
    outcome.run_dir = report.get("run_dir")
    _phase_cases(outcome, clock)
    outcome.measured = measurements(report)
    _gate_cases(outcome, check(outcome.measured, spec.gates, spec.label))
    outcome.status = "failed" if any(c.status == "failed" for c in outcome.cases.values()) else "passed"
    outcome.seconds = time.monotonic() - t0
    return outcome


def _phase_cases(outcome: Outcome, clock: PhaseClock, failed_phase: str | None = None,
                 error: MicrotError | None = None, status: str = "error") -> None:
    """connect and train testcases from the phases' ends (train covers storing and training)."""
    d = clock.durations
    report = outcome.report or {}
    if failed_phase == "connect":
        outcome.add(Case("connect", status, error.one_line() if error else "", d.get("connect", 0.0)))
        return
    hello = report.get("device", {})
    transport = report.get("transport", {})
    how = f" over {transport.get('kind')}" if transport.get("kind") else ""
    outcome.add(Case("connect", "passed", f"{hello.get('board', outcome.spec.board.id)} answered{how}",
                     d.get("connect", 0.0)))
    train_s = d.get("store", 0.0) + d.get("train", 0.0)
    if failed_phase in ("store", "train"):
        outcome.add(Case("train", status, error.one_line() if error else "", train_s))
        return
    trained = report.get("device_training", {})
    summary = "; ".join(f"{name}: part {r.get('part_accuracy', 0):.1%} / full {r.get('full_accuracy', 0):.1%} "
                        "on the train split" for name, r in trained.items() if isinstance(r, dict))
    outcome.add(Case("train", "passed", summary or "trained", train_s))


def _not_run(outcome: Outcome, why: str, status: str = "error") -> None:
    for name in CASES:
        if name not in outcome.cases and name != "memory":
            outcome.add(Case(name, status, f"not run: {why}"))


def _gate_cases(outcome: Outcome, checks: Sequence[Any]) -> None:
    by_case: dict[str, list[Any]] = {}
    for c in checks:
        by_case.setdefault(c.case, []).append(c)
    for name, group in by_case.items():
        failed = [c for c in group if not c.passed]
        message = "; ".join(c.message for c in (failed or group))
        outcome.add(Case(name, "failed" if failed else "passed", message,
                         details=[c.message for c in group]))


def run_board(project_dir: Path, spec: BoardSpec, options: RunOptions, console: Console,
              forward: Callable[..., Any], quiet: bool) -> Outcome:
    """One board, re-run while it ends in an error and retries are left (never after a failure)."""
    attempts: list[dict[str, Any]] = []
    t0 = time.monotonic()
    outcome = Outcome(spec)
    for attempt in range(1 + max(0, options.retry_failed)):
        a0 = time.monotonic()
        try:
            outcome = _attempt(project_dir, spec, options, console, forward, quiet)
        except NoBoardError:
            raise
        attempts.append({"attempt": attempt + 1, "status": outcome.status, "seconds": round(time.monotonic() - a0, 2),
                         "error": next((c.message for c in outcome.cases.values() if c.status == "error"), None)})
        if outcome.status != "error":
            break
        if attempt < options.retry_failed:
            console.print(f"{spec.label}: {attempts[-1]['error']}; retrying ({attempt + 1} of {options.retry_failed})",
                          markup=False, highlight=False, soft_wrap=True)
    outcome.attempts = attempts
    outcome.seconds = time.monotonic() - t0
    return outcome


# ---------------------------------------------------------------- all boards


def run_all(project_dir: Path, specs: Sequence[BoardSpec], options: RunOptions, console: Console) -> list[Outcome]:
    """Every board, in parallel threads (each board's QEMU or serial port is its own), one shared
    progress display. Returns the outcomes in the order of ``specs``."""
    from microt_deploy.pipeline import progress_bar

    single = len(specs) == 1
    with progress_bar(console) as update:
        lock = threading.Lock()

        def forward(stage: str, done: int, total: int) -> None:
            with lock:
                update(stage, done, total)

        if single:
            return [run_board(project_dir, specs[0], options, console, forward, quiet=False)]
        jobs = options.jobs or len(specs)
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="board") as pool:
            futures = [pool.submit(run_board, project_dir, s, options, console, forward, True) for s in specs]
            return [f.result() for f in futures]


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """1 when any gate or evaluation failed (a regression was measured, whatever else happened),
    else 2 when a device error remained after the retries, else 0."""
    statuses = {o.status for o in outcomes}
    if "failed" in statuses:
        return EXIT_FAILED
    if "error" in statuses:
        return EXIT_ERROR
    return EXIT_PASSED


def summary_table(outcomes: Sequence[Outcome]) -> Table:
    """One row per board: each testcase's status and the attempts."""
    table = Table(title="eval: boards and gates")
    table.add_column("board")
    for name in CASES:
        table.add_column(name)
    table.add_column("attempts", justify="right")
    table.add_column("result")
    marks = {"passed": "[green]pass[/]", "failed": "[red]FAIL[/]", "error": "[magenta]ERROR[/]",
             "skipped": "[dim]skip[/]"}
    for o in outcomes:
        row = [marks.get(o.cases[n].status, o.cases[n].status) if n in o.cases else "-" for n in CASES]
        table.add_row(o.spec.label, *row, str(len(o.attempts)), marks.get(o.status, o.status)
                      + (" (partial)" if o.partial else ""))
    return table


def problems(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per failed or errored testcase, for the terminal."""
    lines = []
    for o in outcomes:
        for case in o.cases.values():
            if case.status in ("failed", "error") and not case.message.startswith("not run"):
                lines.append(f"{o.spec.label} {case.name} {case.status}: {case.message}")
    return lines

