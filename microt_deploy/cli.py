"""The `microt-deploy` command line: one thin function per verb; each parses options, calls a stage
and prints its result. Errors the user can act on are printed as one line with a non-zero exit."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from microt_deploy.errors import MicrotError

# Piped into a file or CI log, rich would wrap tables at 80 columns; the bench table needs ~170.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 180)
out = Console(width=None if sys.stdout.isatty() else 180)

# TensorFlow and friends print pages of start-up chatter on stderr; our users want one line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


# What `pip install microt-deploy[train]` adds (pyproject.toml's train extra): a verb that needs one of
# these on a plain install says so in one line.
TRAIN_EXTRA_MODULES = {"torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "sklearn", "tf_keras"}

# The verbs that write the project: one of them at a time per project (PROJECT/.microt.lock).
LOCKING = {"train", "export", "compile", "build", "flash", "eval", "train-device", "demo", "report", "export-lib",
           "split-search"}


def _friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn MicrotError into a one-line message and an exit code; never a bare traceback. While the
    verb runs, SIGINT / SIGTERM / SIGHUP end every child process group, remove the command's
    temporary outputs, print `interrupted by SIGTERM` and exit 128 + signo; a verb that writes the
    project holds its lock (``--wait``: waits for another command instead of refusing)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from microt_deploy import atomic, children

        wait = bool(kwargs.pop("wait", False))
        try:
            with children.signal_handlers(_announce, atomic.remove_temporaries), _project_lock(kwargs, wait):
                return func(*args, **kwargs)
        except MicrotError as err:
            console.print(f"[bold red]error:[/] {escape(err.one_line())}", highlight=False, soft_wrap=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:  # a Ctrl-C before the handlers were in place
            children.kill_all()
            atomic.remove_temporaries()
            _announce("interrupted by SIGINT")
            sys.exit(130)
        except ModuleNotFoundError as err:  # a wheel installed without its training extra
            if os.environ.get("MICROT_DEBUG") or (err.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
                raise
            verb = func.__name__.rstrip("_").replace("_cmd", "")
            line = (f"{verb} needs {err.name.split('.')[0]}, which is in the training extra; install it: "
                    "pip install 'microt-deploy[train]'")
            console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            sys.exit(4)
        except Exception as err:  # noqa: BLE001 - last line of defence: one line, not a traceback
            if os.environ.get("MICROT_DEBUG"):
                raise
            name = type(err).__name__
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            console.print(
                f"[bold red]internal error:[/] {escape(name)}: {escape(first)}; rerun with MICROT_DEBUG=1 for the "
                "traceback and report it",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(1)

    return wrapper


def _announce(line: str) -> None:
    """One line on stderr, written directly (safe inside a signal handler, and with rich mid-render)."""
    sys.stderr.write(f"\n{line}\n" if console.is_terminal else f"{line}\n")
    sys.stderr.flush()


def _project_lock(kwargs: dict[str, Any], wait: bool) -> Any:
    """The project lock for a verb in LOCKING, taken only on a project folder (or by demo, which
    creates one): a mistyped --project gets its own one-line error, no stray lock file."""
    import contextlib

    ctx = click.get_current_context(silent=True)
    command = ctx.info_name if ctx is not None else ""
    root = kwargs.get("project_dir")
    if command not in LOCKING or root is None:
        return contextlib.nullcontext()
    if command == "train" and os.environ.get("RANK", "0") not in ("", "0"):
        return contextlib.nullcontext()  # torchrun: rank 0 holds the lock (and alone writes)
    root = Path(root)
    if command == "demo":
        root.mkdir(parents=True, exist_ok=True)
    elif not (root / "microt.toml").is_file():
        return contextlib.nullcontext()
    from microt_deploy.lock import project_lock

    return project_lock(root, command, wait=wait)


project_option = click.option(
    "--project",
    "-p",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Project folder (holds microt.toml and every stage's artifacts).",
)
board_option = click.option("--board", "-b", default=None, help="Board id (see `microt-deploy boards`).")
port_option = click.option(
    "--port", default=None,
    help="Serial port of a real board, e.g. /dev/ttyACM0 (default: the board's ST-LINK / USB-UART port when "
         "exactly one is plugged in; emulated boards need none).")
offline_option = click.option(
    "--offline", is_flag=True,
    help="Real boards: build with Debian's arm-none-eabi-gcc and no PlatformIO registry (the same project, "
         "a local stand-in for the ST platform).")


def _board_id(project: Any, board: str | None) -> str:
    return board or project.config["device"]["board"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="microt-deploy")
def main() -> None:
    """MicroT from a PyTorch model to staged int8 inference on a microcontroller.

    Stages, each reading and writing the project folder: train -> export -> compile -> build ->
    eval (trains the classifiers on the device, then measures) -> report. `demo` runs them all on
    the emulated board.
    """


@main.command()
@click.argument("project_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--board", "-b", default=None, help="Board id to record in the project.")
@click.option("--ratio", type=float, default=None, help="Stage-decision ratio (fraction exiting early).")
@click.option("--dataset", default=None, help="'digits' (bundled) or an ImageFolder-style folder.")
@click.option("--split-block", type=int, default=None, help="Cut the backbone after this block.")
@_friendly
def init(project_dir: Path, board: str | None, ratio: float | None, dataset: str | None,
         split_block: int | None) -> None:
    """Create a project folder with a microt.toml holding the defaults."""
    from microt_deploy.boards import load_board
    from microt_deploy.project import init_project

    overrides: dict[str, Any] = {}
    if board:
        load_board(board)
        overrides.setdefault("device", {})["board"] = board
    if ratio is not None:
        _check_ratio(ratio)
        overrides.setdefault("device", {})["ratio"] = ratio
    if dataset:
        overrides.setdefault("data", {})["dataset"] = dataset
    if split_block is not None:
        overrides.setdefault("model", {})["split_block"] = split_block
    project = init_project(project_dir, overrides)
    out.print(f"project ready: {project.config_path}")


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise MicrotError(f"stage-decision ratio {ratio} is outside [0, 1]", "pass a fraction such as 0.5")


@main.command()
def boards() -> None:
    """List the boards microt-deploy knows, with what has been verified for each."""
    from rich.table import Table

    from microt_deploy.boards import known_boards, load_board

    table = Table(title="boards")
    for col in ("id", "name", "flash", "RAM", "clock", "verified"):
        table.add_column(col)
    for board_id in known_boards():
        b = load_board(board_id)
        table.add_row(b.id, b.name, _kib(b.flash_bytes), _kib(b.ram_bytes), f"{b.clock_hz / 1e6:.0f} MHz",
                      b.verified)
    out.print(table)


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n else "-"


@main.command()
@project_option
@click.option("--fresh", is_flag=True,
              help="Start over: ignore the checkpoints of an interrupted run and recompute the teacher cache.")
@_friendly
def train(project_dir: Path, fresh: bool = False) -> None:
    """Stages 1-3: self-supervised distillation, split, joint training of part and full.

    An interrupted run resumes from its last complete epoch (same config); runs on CUDA when present;
    under `torchrun --nproc_per_node=N -m microt_deploy.cli train` on N processes (DDP)."""
    from rich.table import Table

    from microt_deploy import pipeline
    from microt_deploy.project import open_project

    summary = pipeline.train(project_dir, fresh=fresh)  # what checkpoints/train.json holds
    if not summary:  # a torchrun rank other than 0: rank 0 reports
        return
    run = summary.get("run", {})
    if run.get("resumed"):
        out.print(f"resumed an interrupted run: {', '.join(run['resumed'])} (--fresh starts over)", highlight=False,
                  soft_wrap=True)
    elif run.get("restarted"):
        out.print("started over: the saved checkpoints were of another config", highlight=False, soft_wrap=True)
    seconds = summary.get("seconds", {})
    stages = Table(title="training (mean loss per epoch)")
    for col in ("stage", "epochs", "loss", "first", "last", "seconds"):
        stages.add_column(col, justify="left" if col in ("stage", "loss") else "right")
    teacher = summary.get("teacher", {})
    for stage, history, key, loss, secs in (
        (f"teacher {teacher.get('spec', '')}", teacher.get("losses", []), None, "NT-Xent", "teacher_s"),
        ("SSKD (stage 1)", summary.get("sskd", {}).get("losses", []), "mse", "MSE to teacher", "sskd_s"),
        ("joint (stage 3)", summary.get("joint", {}).get("losses", []), "total", "L3+L4+L5+L6", "joint_s"),
    ):
        values = [h[key] if key else h for h in history]
        first, last = (f"{values[0]:.4f}", f"{values[-1]:.4f}") if values else ("-", "-")
        stages.add_row(stage, str(len(values)), loss, first, last, f"{seconds.get(secs, 0.0):.1f}")
    out.print(stages)
    probe = summary.get("probe", {})
    accuracy = Table(title=f"linear-probe accuracy (fit on {probe.get('fit', 'train')}, scored on "
                           f"{probe.get('scored_on', 'calib')})")
    for col in ("task", "part before joint", "full before joint", "part after", "full after"):
        accuracy.add_column(col, justify="left" if col == "task" else "right")
    before, after = probe.get("before_joint", {}), probe.get("after_joint", {})
    for task in after:
        accuracy.add_row(task, *(f"{acc.get(task, {}).get(which, 0.0):.1%}" for acc in (before, after)
                                  for which in ("part", "full")))
    out.print(accuracy)
    macs = summary.get("macs", {})
    if macs:
        out.print(f"full model {macs['full']:,} MACs, trunk {macs['part_share']:.0%} of them; joint training on "
                  f"task '{summary.get('task', '')}'; {seconds.get('total_s', 0.0):.0f} s in all", highlight=False)
    checkpoints = open_project(project_dir).checkpoints
    out.print(f"checkpoint: {checkpoints / 'extractor.pt'} (summary: {checkpoints / 'train.json'})",
              highlight=False, soft_wrap=True)


@main.command()
@project_option
@_friendly
def export(project_dir: Path) -> None:
    """torch -> ONNX -> int8 TFLite for the trunk, part head and rest, with a parity report."""
    from microt_deploy import pipeline

    result = pipeline.export(project_dir)
    out.print_json(json.dumps(result.get("parity", {})))


@main.command(name="compile")
@project_option
@board_option
@click.option("--patch-stages", "patch_stages", default=None, metavar="POLICY",
              help="fit | off | auto | min | <last layer>:<n>[,...]: when the trunk's high-resolution layers run "
                   "patch by patch (default: [compile] patch_stages, fit: only when the arena would not fit the "
                   "board's RAM otherwise).")
@_friendly
def compile_cmd(project_dir: Path, board: str | None, patch_stages: str | None) -> None:
    """int8 TFLite -> C: weights as const arrays, a static kernel schedule and arena plan."""
    from microt_deploy import pipeline

    pipeline.compile(project_dir, out, board_id=board, patch_stages=patch_stages)


@main.command()
@project_option
@board_option
@click.option("--pio", is_flag=True, help="Emulated board: build through an offline PlatformIO project.")
@offline_option
@_friendly
def build(project_dir: Path, board: str | None, pio: bool, offline: bool) -> None:
    """Render the firmware for a board and build it; refuse with numbers when it does not fit.

    STM32 boards get a bare-metal PlatformIO project (firmware/<board>/platformio.ini) that `pio run`
    builds (PlatformIO installs the ST platform from its registry the first time; --offline needs
    none). ESP32 boards get an ESP-IDF project that is not built here (no Xtensa compiler)."""
    from microt_deploy import pipeline

    pipeline.build(project_dir, board, out, pio=pio, offline=offline)


@main.command()
@project_option
@board_option
@click.option("--port", default=None,
              help="Upload port (default: PlatformIO finds the ST-LINK itself).")
@offline_option
@_friendly
def flash(project_dir: Path, board: str | None, port: str | None, offline: bool) -> None:
    """Upload the built firmware to a real board with PlatformIO (emulated boards are started by `eval`)."""
    from microt_deploy import pipeline

    pipeline.flash(project_dir, board, port, out, offline=offline)


@main.command(name="export-lib")
@project_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the library (default: PROJECT/lib/microt).")
@click.option("--max-slots", type=int, default=None,
              help="Feature slots of the on-device training store (default 256).")
@_friendly
def export_lib(project_dir: Path, out_dir: Path | None, max_slots: int | None) -> None:
    """The runtime, the compiled graphs and one header (microt.h) as a library for your own
    STM32CubeIDE / CubeMX or PlatformIO project: staged inference and head training, no protocol."""
    from microt_deploy.firmware.library import export_library, summary_lines

    summary = export_library(project_dir, out_dir, max_slots=max_slots)
    for line in summary_lines(summary):
        out.print(line, highlight=False, markup=False, soft_wrap=True)


@main.command(name="train-device")
@project_option
@board_option
@port_option
@_friendly
def train_device(project_dir: Path, board: str | None, port: str | None) -> None:
    """Stream each task's training split to the device and train its classifiers there."""
    from microt_deploy import pipeline

    pipeline.evaluate(project_dir, board, port, out, evaluate=False)


class _GateCommand(click.Command):
    """`eval`'s exit codes are a CI contract (0 passed, 1 failed, 2 device error, 4 usage, 5 no
    board): a mistyped option is a usage error, 4, where click would say 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            err.exit_code = 4
            raise


@main.command(name="eval", cls=_GateCommand)
@project_option
@click.option("--board", "-b", "boards", multiple=True,
              help="Board id (repeatable; with --rig: keep the rig's boards of this id or Zephyr platform name).")
@click.option("--platform", "platforms", multiple=True, help="Same as --board (twister's name for it).")
@port_option
@click.option("--rig", "rig_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Rig file (twister hardware-map YAML; see docs/rig.md): evaluate its connected boards.")
@click.option("--serial-number", "serial_numbers", multiple=True,
              help="USB serial number of the board's probe (repeatable with --rig).")
@click.option("--ratios", default=None, help="Comma-separated stage-decision ratios, e.g. 0.3,0.5,0.7.")
@click.option("--min-accuracy", default=None,
              help="Gate: staged accuracy at the project's ratio, e.g. 0.95, 95% or digits=0.95,loops=0.9.")
@click.option("--max-latency-ms", default=None,
              help="Gate: staged latency per inference in ms: p99 by default, or p50=5,p99=8,max=10.")
@click.option("--min-energy-saved", default=None, help="Gate: energy saved against full inference, e.g. 0.15 or 15%.")
@click.option("--max-ram-kb", default=None, help="Gate: the image's static RAM in KiB.")
@click.option("--max-flash-kb", default=None, help="Gate: the image's flash in KiB.")
@click.option("--compare-report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Baseline: a report.json or an earlier --json-output-path file.")
@click.option("--max-accuracy-drop", default=None, help="Against the baseline (default 0.01, i.e. one point).")
@click.option("--max-latency-regression", default=None,
              help="Against the baseline, relative (default 0.05, i.e. 5 % slower).")
@click.option("--junit-output-path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write JUnit XML: one testsuite per board.")
@click.option("--json-output-path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results as JSON.")
@click.option("--retry-failed", type=click.IntRange(0, 20), default=0, show_default=True,
              help="Re-run a board whose run ended in a device error up to N times (never a gate failure).")
@click.option("--timeout-multiplier", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Scale every phase's timeout (flash, connect, store, train, evaluate).")
@click.option("--timeout", "phase_timeouts", multiple=True, metavar="PHASE=SECONDS",
              help="One phase's timeout before the multiplier, e.g. --timeout connect=60 (repeatable). Without "
                   "it, store / train / evaluate grow to twice their projected duration once samples complete "
                   "(at most 8x the default).")
@click.option("--no-flash", is_flag=True, help="Real boards: do not flash; evaluate what the board runs.")
@click.option("--no-reset", is_flag=True,
              help="Open the serial port without toggling DTR/RTS (no reset of ESP32-style boards).")
@click.option("--jobs", type=click.IntRange(0, 64), default=0, help="Boards evaluated at once (default: all).")
@offline_option
@_friendly
def eval_cmd(project_dir: Path, boards: tuple[str, ...], platforms: tuple[str, ...], port: str | None,
             rig_file: Path | None, serial_numbers: tuple[str, ...], ratios: str | None, min_accuracy: str | None,
             max_latency_ms: str | None, min_energy_saved: str | None, max_ram_kb: str | None,
             max_flash_kb: str | None, compare_report: Path | None, max_accuracy_drop: str | None,
             max_latency_regression: str | None, junit_output_path: Path | None, json_output_path: Path | None,
             retry_failed: int, timeout_multiplier: float, phase_timeouts: tuple[str, ...], no_flash: bool,
             no_reset: bool, jobs: int, offline: bool) -> None:
    """Train the classifiers on the device, then measure part / full / staged inference; with gates,
    a hardware-in-the-loop check for CI.

    \b
    Exit codes: 0 every board passed; 1 a gate or an evaluation failed; 2 a device error remained
    after --retry-failed; 4 a usage or rig-file error; 5 no connected board matched."""
    from microt_deploy.errors import DeviceError, NoBoardError
    from microt_deploy.evaluate import gate_report, gates, hil
    from microt_deploy.project import open_project

    try:
        parsed = _parse_ratios(ratios) if ratios else None
        for path in (junit_output_path, json_output_path):
            if path is not None:
                from microt_deploy.atomic import check_file_target

                check_file_target(path)
        cli_gates = gates.build_gates(min_accuracy, max_latency_ms, min_energy_saved, max_ram_kb, max_flash_kb,
                                      max_accuracy_drop, max_latency_regression, compare_report)
        timeouts = _phase_timeouts(phase_timeouts)
        project = open_project(project_dir)
        wanted = [*boards, *platforms]
        if rig_file is not None:
            if port:
                raise MicrotError("--port and --rig both name ports", "put the port in the rig file's serial field")
            specs = hil.specs_from_rig(rig_file, wanted, serial_numbers, cli_gates, timeout_multiplier, no_flash,
                                       no_reset)
        else:
            specs = hil.specs_from_options(project.config["device"]["board"], wanted, port, serial_numbers, cli_gates,
                                           timeout_multiplier, no_flash, no_reset)
        hil.check_builds(project_dir, specs)
    except (NoBoardError, DeviceError):
        raise
    except MicrotError as err:
        raise MicrotError(err.problem, err.fix, exit_code=4) from None
    fixed = frozenset(item.partition("=")[0].strip() for item in phase_timeouts)
    options = hil.RunOptions(ratios=parsed, retry_failed=retry_failed, timeouts=timeouts, fixed_phases=fixed,
                             offline=offline, jobs=jobs)
    outcomes = hil.run_all(project_dir, specs, options, out)
    code = hil.exit_code(outcomes)
    if len(outcomes) > 1 or not all(o.spec.gates.empty for o in outcomes) or code != 0:
        out.print(hil.summary_table(outcomes))
    for line in hil.problems(outcomes):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if junit_output_path is not None:
        gate_report.write_junit(junit_output_path, outcomes, code)
        out.print(f"JUnit: {junit_output_path}", highlight=False, soft_wrap=True)
    if json_output_path is not None:
        gate_report.write_json(json_output_path, outcomes, code)
        out.print(f"JSON: {json_output_path}", highlight=False, soft_wrap=True)
    if code:
        sys.exit(code)


def _phase_timeouts(items: tuple[str, ...]) -> dict[str, float]:
    from microt_deploy.evaluate.hil import DEFAULT_TIMEOUTS_S

    timeouts = dict(DEFAULT_TIMEOUTS_S)
    for item in items:
        phase, sep, value = item.partition("=")
        if not sep or phase.strip() not in timeouts:
            raise MicrotError(f"--timeout '{item}' is not PHASE=SECONDS with a phase of {', '.join(timeouts)}",
                              "write e.g. --timeout connect=60")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise MicrotError(f"--timeout '{item}': {value!r} is not a positive number of seconds",
                              "write e.g. --timeout connect=60")
        timeouts[phase.strip()] = seconds
    return timeouts


def _parse_ratios(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MicrotError(f"--ratios '{text}' is not a list of numbers", "write e.g. --ratios 0.3,0.5,0.7") from None
    for r in values:
        _check_ratio(r)
    return values


@main.command()
@project_option
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (default: the newest under runs/).")
@_friendly
def report(project_dir: Path, run_dir: Path | None) -> None:
    """Re-render report.md and the plots of a run from its report.json."""
    from microt_deploy import pipeline

    pipeline.report(project_dir, run_dir, out)


@main.command()
@project_option
@board_option
@click.option("--fresh", is_flag=True, help="Rerun every stage even when its outputs exist.")
@_friendly
def demo(project_dir: Path, board: str | None, fresh: bool) -> None:
    """Everything on the embedded default: train, export, compile, build, on-device training, eval."""
    from microt_deploy import pipeline

    pipeline.demo(project_dir, board, fresh, out)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--input", "input_npy", required=True, type=click.Path(path_type=Path),
              help=".npy (int8, or float32 for a float-input model): one sample, or a batch along the first "
                   "axis; an .npz keyed by the input tensor names when the model has several inputs.")
@click.option("--output", "output_npy", required=True, type=click.Path(path_type=Path),
              help="Where to write the output .npy (an .npz keyed by the output tensor names when the model "
                   "has several outputs; - for standard output).")
@_friendly
def infer(model: Path, input_npy: Path, output_npy: Path) -> None:
    """Run any supported int8 .tflite through the generated C on this machine."""
    from microt_deploy.compiler.host_runner import infer_files

    result = infer_files(model, input_npy, output_npy)
    what = ", ".join(f"{name if len(result) > 1 else ''} {a.dtype} {tuple(a.shape)}".strip()
                     for name, a in result.items())
    if str(output_npy) == "-":  # the .npy went to stdout; the summary goes to stderr
        console.print(f"wrote the output to stdout: {what}", highlight=False)
    else:
        out.print(f"wrote {output_npy}: {what}")


@main.command()
@click.option("--models", default=None, help="Comma-separated .tflite files (default: the MLPerf Tiny set).")
@click.option("--project", "-p", "project_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also bench this project's exported MicroT graphs (trunk, part head, rest).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results as JSON here (no JSON is written without it).")
@click.option("--os/--no-os", "os_variant", default=True, show_default=True,
              help="Also build each model at -Os (PlatformIO's default optimisation) and measure its "
                   "instructions and flash beside the -O2 build.")
@click.option("--cores", "cores_", is_flag=True,
              help="Instead: the cores table (Cortex-M3/M4/M7/M33/M55 and rv32imc in QEMU): kernel path, "
                   "bit-exact, instructions per inference and flash per model.")
@click.option("--backbones", default=None,
              help="Also the paper's backbones at 176x176, exported int8 with seeded weights: 'all' or a "
                   "comma-separated list of mcunet-in3, proxyless-w0.3 (peak SRAM beside TinyEngine's, "
                   "X-CUBE-AI's and TFLM's published figures).")
@_friendly
def bench(models: str | None, project_dir: Path | None, json_path: Path | None, cores_: bool = False,
          os_variant: bool = True, backbones: str | None = None) -> None:
    """Flash, peak SRAM and instructions on the emulated Cortex-M4, against TFLM's anchors."""
    from microt_deploy.evaluate.bench import default_models, run_bench

    paths = [Path(m) for m in models.split(",")] if models else default_models()
    if cores_:
        from microt_deploy.evaluate.cores import run_cores

        if project_dir is not None:
            raise MicrotError("--cores benches model files only", "drop --project, or pass --models")
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MicrotError(f"no model at {missing[0]}", "pass existing .tflite files")
        run_cores(paths, json_path, out)
        return
    if backbones:
        from microt_deploy.export import paper_models

        names = list(paper_models.BACKBONES) if backbones == "all" else backbones.split(",")
        for name in names:
            out.print(f"[dim]the {name} backbone at 176x176 (exported once, cached in "
                      f"{paper_models.generated_dir()})[/dim]")
            paths.append(paper_models.generate(name))
    if project_dir is not None:
        from microt_deploy.pipeline import GRAPHS
        from microt_deploy.project import open_project

        export_dir = open_project(project_dir).export_dir
        graphs = [export_dir / f"{g}.tflite" for g in GRAPHS]
        if not all(p.is_file() for p in graphs):
            raise MicrotError(f"no exported graphs in {export_dir}", "run `microt-deploy export` first")
        paths += graphs
    run_bench(paths, json_path, out, os_variant=os_variant)


@main.command(name="split-search")
@project_option
@click.option("--ratio", type=float, default=None,
              help="Stage-decision ratio of the prediction (default: the project's device.ratio).")
@click.option("--max-accuracy-loss", default=None,
              help="Choose the cut saving the most energy whose staged accuracy is at most this far below the full "
                   "model's, for every task: a fraction or a percentage (default 0.01, i.e. one point).")
@click.option("--min-saving", default=None,
              help="Instead: choose the most accurate cut that saves at least this much energy, e.g. 0.15 or 15%.")
@click.option("--cuts", default=None,
              help="Candidate cuts (blocks in the trunk): e.g. 2-6, 3,5,7 or 2-4,9 (default: all, 1 .. blocks - 1).")
@click.option("--task", "tasks", multiple=True,
              help="Judge accuracy on this task only (repeatable; default: every task of microt.toml).")
@click.option("--write/--no-write", "write_", default=True, show_default=True,
              help="Write the chosen cut into microt.toml (model.split_block).")
@click.option("--fresh", is_flag=True, help="Re-export and re-measure every cut instead of reusing split_search/.")
@_friendly
def split_search(project_dir: Path, ratio: float | None, max_accuracy_loss: str | None, min_saving: str | None,
                 cuts: str | None, tasks: tuple[str, ...], write_: bool, fresh: bool) -> None:
    """Where to cut the extractor, by measurement: per candidate cut, the trunk's, part head's and rest's
    instructions on the emulated Cortex-M4F, part / full / staged accuracy and exit rate on the
    calibration split (heads trained as on the device) and the predicted energy saving; picks a cut and
    writes it into microt.toml. Outputs: PROJECT/split_search/search.json and split_search.png."""
    from microt_deploy.evaluate import split_search as search
    from microt_deploy.evaluate.gates import parse_fraction

    if max_accuracy_loss is not None and min_saving is not None:
        raise MicrotError("--max-accuracy-loss and --min-saving are two ways to choose", "pass one of them")
    if ratio is not None:
        _check_ratio(ratio)
    options = search.SearchOptions(
        ratio=ratio,
        max_accuracy_loss=(parse_fraction(max_accuracy_loss, "--max-accuracy-loss") if max_accuracy_loss is not None
                           else search.DEFAULT_MAX_ACCURACY_LOSS),
        min_saving=parse_fraction(min_saving, "--min-saving") if min_saving is not None else None,
        tasks=list(tasks) or None, fresh=fresh)
    search.prepare(project_dir, options, cuts)  # every usage error before any work

    def say(line: str) -> None:
        console.print(f"[dim]{escape(line)}[/dim]", highlight=False, soft_wrap=True)

    result = search.run_search(project_dir, options, say, cuts_text=cuts)
    out.print(search.table(result))
    for line in search.summary_lines(result):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    folder = Path(project_dir) / search.SEARCH_DIR
    out.print(f"written: {folder / search.RESULT_FILE}, {folder / search.PLOT_FILE}", highlight=False,
              markup=False, soft_wrap=True)
    if result["chosen"] is None:
        raise search.no_choice_error(result)
    if not write_:
        out.print(f"microt.toml unchanged (--no-write): model.split_block = {result['config_cut']}", highlight=False,
                  markup=False, soft_wrap=True)
        return
    written = search.write_choice(project_dir, result)
    if written["written"]:
        out.print(f"microt.toml: model.split_block = {written['split_block']} (was {written['previous']}); "
                  f"{written['next']}", highlight=False, markup=False, soft_wrap=True)
    else:
        out.print(f"microt.toml already has model.split_block = {written['split_block']}; {written['next']}",
                  highlight=False, markup=False, soft_wrap=True)


@main.command()
@click.argument("rig_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--generate", "generate_", is_flag=True,
              help="Scan the USB serial ports and merge the probes into RIG_FILE (created if missing).")
@click.option("--persistent", is_flag=True,
              help="With --generate: write /dev/serial/by-id/... paths instead of /dev/ttyACMn.")
@_friendly
def rig(rig_file: Path, generate_: bool, persistent: bool) -> None:
    """Show a rig file (a twister-style hardware map of a board farm), or --generate it from the probes
    plugged in. See docs/rig.md."""
    from rich.table import Table

    from microt_deploy.rig import generate, load_rig

    if persistent and not generate_:
        raise MicrotError("--persistent only applies with --generate", "add --generate")
    if generate_:
        summary = generate(rig_file, persistent=persistent)
        entries = summary.entries
        for verb, group in (("added", summary.added), ("updated", summary.updated),
                            ("marked disconnected", summary.disconnected)):
            for e in group:
                note = f" ({e.notes})" if verb == "added" and e.notes else ""
                out.print(f"{verb}: {escape(e.describe())} at {escape(str(e.serial))}{escape(note)}",
                          highlight=False, soft_wrap=True)
        if summary.ignored:
            out.print(f"ignored (no board family of ours): {escape(', '.join(summary.ignored))}", highlight=False,
                      soft_wrap=True)
        out.print(f"{'created' if summary.created else 'wrote'} {escape(str(rig_file))}: "
                  f"{len(summary.added)} added, {len(summary.updated)} updated, {len(summary.unchanged)} unchanged, "
                  f"{len(summary.disconnected)} marked disconnected", highlight=False, soft_wrap=True)
    else:
        entries = load_rig(rig_file)
    table = Table(title=f"rig {rig_file}")
    for col in ("id", "platform -> board", "serial", "connected", "reset", "gates"):
        table.add_column(col)
    for e in entries:
        platform = " ".join(e.platforms)
        table.add_row(escape(e.id or "-"), escape(platform if platform == e.board else f"{platform} -> {e.board}"),
                      escape(e.serial or "-"), "yes" if e.connected else "no", e.reset,
                      escape(", ".join(map(str, e.gates)) or "-"))
    out.print(table)


for _verb in (train, export, compile_cmd, build, flash, export_lib, train_device, eval_cmd, report, demo,
              split_search):
    _verb.params.append(click.Option(["--wait"], is_flag=True,
                                     help="Wait while another command works on the project instead of refusing."))


# ---------------------------------------------------------------- evidence (issue 11, part 3)


@main.command()
@project_option
@click.option("--ratios", default=None, help="Stage-decision ratios, each in (0, 1) (default 0.3,0.5,0.7).")
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Teacher, distillation and joint epochs of every variant (default: the project's [train]).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the evidence here (default PROJECT/evidence/evidence.json).")
@click.option("--md", "md_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the markdown table here (default: the JSON's path with .md).")
@click.option("--fresh", is_flag=True, help="Retrain and re-export every variant instead of reusing evidence/.")
@_friendly
def evidence(project_dir: Path, ratios: str | None, epochs: int | None, json_path: Path | None,
             md_path: Path | None, fresh: bool) -> None:
    """The evidence table: an unoptimized extractor (labels only, no teacher), one after self-supervised
    distillation and one after joint training, each trained with the project's config in
    PROJECT/evidence/<variant>/ and exported int8; part, full and staged accuracy on the test split at each
    ratio (heads trained as on the device), the exit rate and the energy saved against full-model
    inference from instructions measured on the emulated Cortex-M4F; the paper's figures beside ours."""
    from microt_deploy.evaluate import evidence as ev

    ev.prepare(project_dir, ratios)  # every usage error before any work
    default_json, default_md = ev.default_paths(project_dir)
    json_path = json_path or default_json
    md_path = md_path or (json_path.with_suffix(".md") if json_path != default_json else default_md)

    def say(line: str) -> None:
        console.print(f"[dim]{escape(line)}[/dim]", highlight=False, soft_wrap=True)

    result = ev.run(project_dir, ratios, epochs=epochs, fresh=fresh, say=say)
    ev.write_outputs(result, json_path, md_path)
    out.print(ev.markdown(result), highlight=False, markup=False, soft_wrap=True)
    out.print(f"written: {json_path}, {md_path}", highlight=False, markup=False, soft_wrap=True)


LOCKING.add("evidence")
evidence.params.append(click.Option(["--wait"], is_flag=True,
                                    help="Wait while another command works on the project instead of refusing."))


if __name__ == "__main__":
    main()
