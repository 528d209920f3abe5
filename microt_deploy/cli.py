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


# The verbs that write the project: one of them at a time per project (PROJECT/.microt.lock).
LOCKING = {"train", "export", "compile", "build", "flash", "eval", "train-device", "demo", "report", "export-lib"}


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
        except Exception as err:  # noqa: BLE001 - last line of defence: one line, not a traceback
            if os.environ.get("MICROT_DEBUG"):
                raise
            name = type(err).__name__
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            console.print(
                f"[bold red]internal error:[/] {name}: {first}; rerun with MICROT_DEBUG=1 for the "
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
@_friendly
def train(project_dir: Path) -> None:
    """Stages 1-3: self-supervised distillation, split, joint training of part and full."""
    from rich.table import Table

    from microt_deploy import pipeline
    from microt_deploy.project import open_project

    summary = pipeline.train(project_dir)  # what checkpoints/train.json holds
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
@_friendly
def compile_cmd(project_dir: Path) -> None:
    """int8 TFLite -> C: weights as const arrays, a static kernel schedule and arena plan."""
    from microt_deploy import pipeline

    pipeline.compile(project_dir, out)


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


@main.command(name="eval")
@project_option
@board_option
@port_option
@click.option("--ratios", default=None, help="Comma-separated stage-decision ratios, e.g. 0.3,0.5,0.7.")
@_friendly
def eval_cmd(project_dir: Path, board: str | None, port: str | None, ratios: str | None) -> None:
    """Train the classifiers on the device, then measure part / full / staged inference."""
    from microt_deploy import pipeline

    parsed = _parse_ratios(ratios) if ratios else None
    pipeline.evaluate(project_dir, board, port, out, evaluate=True, ratios=parsed)


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
              help="int8 .npy: one sample, or a batch along the first axis.")
@click.option("--output", "output_npy", required=True, type=click.Path(path_type=Path),
              help="Where to write the int8 output .npy (- for standard output).")
@_friendly
def infer(model: Path, input_npy: Path, output_npy: Path) -> None:
    """Run any supported int8 .tflite through the generated C on this machine."""
    from microt_deploy.compiler.host_runner import infer_files

    result = infer_files(model, input_npy, output_npy)
    if str(output_npy) == "-":  # the .npy went to stdout; the summary goes to stderr
        console.print(f"wrote the output to stdout: {result.dtype} {tuple(result.shape)}", highlight=False)
    else:
        out.print(f"wrote {output_npy}: {result.dtype} {tuple(result.shape)}")


@main.command()
@click.option("--models", default=None, help="Comma-separated .tflite files (default: the MLPerf Tiny set).")
@click.option("--project", "-p", "project_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also bench this project's exported MicroT graphs (trunk, part head, rest).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the table as JSON here.")
@_friendly
def bench(models: str | None, project_dir: Path | None, json_path: Path | None) -> None:
    """Flash, peak SRAM and instructions on the emulated Cortex-M4, against TFLM's anchors."""
    from microt_deploy.evaluate.bench import default_models, run_bench

    paths = [Path(m) for m in models.split(",")] if models else default_models()
    if project_dir is not None:
        from microt_deploy.pipeline import GRAPHS
        from microt_deploy.project import open_project

        export_dir = open_project(project_dir).export_dir
        graphs = [export_dir / f"{g}.tflite" for g in GRAPHS]
        if not all(p.is_file() for p in graphs):
            raise MicrotError(f"no exported graphs in {export_dir}", "run `microt-deploy export` first")
        paths += graphs
    run_bench(paths, json_path, out)


for _verb in (train, export, compile_cmd, build, flash, export_lib, train_device, eval_cmd, report, demo):
    _verb.params.append(click.Option(["--wait"], is_flag=True,
                                     help="Wait while another command works on the project instead of refusing."))


if __name__ == "__main__":
    main()
