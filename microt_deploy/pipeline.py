"""The stages end to end: each function runs one stage on a project folder and writes its files;
`demo` chains them. The CLI calls these; tests may too. Stage internals live in their packages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from microt_deploy.boards import Board, load_board
from microt_deploy.errors import DeviceError, MicrotError
from microt_deploy.project import Project, init_project, open_project

GRAPHS = ("trunk", "part_head", "rest")
# The compiler reserves the mdt_ prefix for its runtime; the firmware aliases these names (mdt_graphs.h).
PREFIX = {"trunk": "trunk", "part_head": "part_head", "rest": "rest"}


@contextlib.contextmanager
def progress_bar(console: Console | None = None) -> Iterator[Any]:
    """A rich progress display and a callback ``(stage, done, total)`` that drives it."""
    bars = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console or Console(stderr=True), transient=False)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int, *_: Any) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


def _epoch_progress(update: Any) -> Any:
    """Adapter for the training stage's callback (stage, epoch, total, metrics)."""

    def callback(stage: str, epoch: int, total: int, metrics: dict | None = None) -> None:
        update(stage, epoch, total)

    return callback


# ---------------------------------------------------------------- stages 1-3 and export


def train(project_dir: Path, console: Console | None = None, fresh: bool = False) -> dict[str, Any]:
    """Stages 1-3 on the project's config; writes checkpoints/ (resumes an interrupted run unless
    ``fresh``)."""
    project = open_project(project_dir)
    from microt_deploy.model.train import train_project

    with progress_bar(console) as update:
        result = train_project(project, progress=_epoch_progress(update), fresh=fresh)
    return result


def export(project_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """torch -> ONNX -> int8 TFLite for the three graphs; writes export/."""
    project = open_project(project_dir)
    if not (project.checkpoints / "extractor.pt").is_file():
        raise MicrotError(f"no trained extractor in {project.checkpoints}", "run `microt-deploy train` first")
    from microt_deploy.export import export_project

    with progress_bar(console) as update:
        return export_project(project, progress=_epoch_progress(update))


def load_export_info(project: Project) -> dict[str, Any]:
    path = project.export_dir / "export.json"
    if not path.is_file():
        raise MicrotError(f"no {path}", "run `microt-deploy export` first")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- compile and build


def compile(project_dir: Path, console: Console, *, board_id: str | None = None,  # noqa: A001 - the verb's name
            patch_stages: str | None = None) -> dict[str, Any]:
    """The three int8 graphs -> one C program on one arena; writes compiled/. ``patch_stages``
    (default `[compile] patch_stages`): patch.StagePolicy's text; "fit" takes patch stages only when
    the arena would not fit the board's RAM (``board_id``, default `[device] board`) otherwise."""
    project = open_project(project_dir)
    paths = {g: project.export_dir / f"{g}.tflite" for g in GRAPHS}
    for path in paths.values():
        if not path.is_file():
            raise MicrotError(f"no {path}", "run `microt-deploy export` first")
    from microt_deploy.compiler import GraphSpec, StagePolicy, compile_program, summarize

    where = "--patch-stages" if patch_stages is not None else "compile.patch_stages"
    policy = StagePolicy.parse(patch_stages if patch_stages is not None else project.config["compile"]["patch_stages"],
                               where=where)
    board = load_board(board_id or project.config["device"]["board"])
    specs = [
        GraphSpec(paths["trunk"], prefix=PREFIX["trunk"]),
        GraphSpec(paths["part_head"], prefix=PREFIX["part_head"], input_bindings={0: (PREFIX["trunk"], 0)}),
        GraphSpec(paths["rest"], prefix=PREFIX["rest"], input_bindings={0: (PREFIX["trunk"], 0)}),
    ]
    from microt_deploy import atomic

    with atomic.staged_dir(project.compiled_dir) as staged:  # the three files appear together or not at all
        if policy.mode == "fit":
            plan = compile_program(specs, staged, stage_policy=StagePolicy("off"))
            budget = _arena_budget(project, board, staged / "mdt_model.h")
            if budget is not None and plan["arena_size"] > budget:
                console.print(f"the arena ({plan['arena_size']:,} B) does not fit {board.id}'s RAM "
                              f"({budget:,} B left for it): planning patch stages", soft_wrap=True)
                plan = compile_program(specs, staged, stage_policy=StagePolicy("fit", budget))
        else:
            plan = compile_program(specs, staged, stage_policy=policy)
    console.print(summarize(plan), soft_wrap=True, highlight=False, markup=False)
    return plan


def _arena_budget(project: Project, board: Board, header: Path) -> int | None:
    """The arena the board's RAM leaves beside the firmware's buffers and the smallest feature store
    (firmware.render.arena_budget), for the model compiled into ``header``."""
    from microt_deploy.firmware.render import arena_budget, read_model_sizes
    from microt_deploy.targets import target_for

    options = {k: v for k, v in _firmware_options(project).items() if k != "baud"}
    return arena_budget(board, read_model_sizes(header), options,
                        stack_in_ram=target_for(board).stack_in_ram(board))


def build(project_dir: Path, board_id: str | None, console: Console, *, pio: bool = False,
          offline: bool = False) -> Any:
    """Render the firmware for a board and build it; writes firmware/<board>/. ``pio``: build the
    emulated board through an offline PlatformIO project instead of calling the compiler directly;
    ``offline``: build a real board's PlatformIO project without the registry."""
    project = open_project(project_dir)
    board = load_board(board_id or project.config["device"]["board"])
    if not (project.compiled_dir / "mdt_model.c").is_file():
        raise MicrotError(f"no compiled model in {project.compiled_dir}", "run `microt-deploy compile` first")
    from microt_deploy.targets import build_firmware

    fw_dir = project.firmware_dir(board.id)
    options = _firmware_options(project)
    if pio:
        if board.run != "qemu":
            raise MicrotError(f"--pio is for the emulated board; {board.id} is always a PlatformIO project",
                              "drop --pio")
        options["pio"] = True
    stack = stack_check(project, board, options)  # refused here, before anything is built
    # rendered and built in a staging folder: a failed build keeps the last good firmware/<board>/
    config, result = build_firmware(project.compiled_dir, board, fw_dir, options, offline=offline)
    console.print(_build_line(board, result), soft_wrap=True)
    if stack:
        console.print(stack, soft_wrap=True, highlight=False)
    if board.ram_bytes:
        console.print(f"feature store: {config.max_slots:,} samples of {config.slot_bytes} B "
                      "(train + calibration samples the device can hold)")
    return result


def stack_check(project: Project, board: Board, options: dict[str, Any]) -> str:
    """The stack line of `build`: the board's stack reserve and the graphs' stack high-water marks that
    `microt-deploy bench --project` last measured (painted stack, Cortex-M4 -O2 bench image; kept per
    graph file by evaluate.stack_marks). Refuses a reserve below the deepest measured graph. Not
    counted: the app's own frames under the graph call (protocol, training, board layer: no measured
    figure) and the interrupt frames; a graph never benched has no figure. "" for boards without
    a stack reserve of ours (host, ESP32)."""
    from microt_deploy.evaluate import stack_marks
    from microt_deploy.firmware.render import DEFAULTS

    if board.family not in ("cmsdk", "stm32"):
        return ""
    reserve = int(options.get("stack_bytes", DEFAULTS["stack_bytes"]))
    marks = {g: stack_marks.lookup(project.export_dir / f"{g}.tflite") for g in GRAPHS
             if (project.export_dir / f"{g}.tflite").is_file()}
    known = {g: m["graph_stack_bytes"] for g, m in marks.items() if m and m.get("graph_stack_bytes") is not None}
    if not known:
        return (f"stack: reserve {reserve:,} B; the graphs' stack is not measured yet (`microt-deploy bench "
                "--project` measures it)")
    worst = max(known, key=known.get)
    if known[worst] >= reserve:
        raise MicrotError(f"the {worst} graph's kernels used {known[worst]:,} B of stack when benched, the "
                          f"{board.id} firmware reserves {reserve:,} B",
                          "shrink the kernels' stack scratch (MDT_DSP_MAX_K, MDT_DSP_DW_COLS) or reserve more "
                          "(firmware option stack_bytes)")
    figures = ", ".join(f"{g} {b:,} B" for g, b in known.items())
    missing = [g for g, m in marks.items() if g not in known]
    return (f"stack: reserve {reserve:,} B; measured high-water mark of the graphs (last bench, Cortex-M4 -O2): "
            f"{figures}; {reserve - known[worst]:,} B left for the app's own frames and interrupts (not measured)"
            + (f"; not benched: {', '.join(missing)}" if missing else ""))


def _firmware_options(project: Project) -> dict[str, Any]:
    tasks = project.config["tasks"]
    options = {"max_tasks": max(len(tasks), 1), "max_classes": max(t["classes"] for t in tasks)}
    if "baud" in project.config["device"]:
        options["baud"] = int(project.config["device"]["baud"])  # checked against the board at render time
    return options


def _build_line(board: Board, result: Any) -> str:
    flash = getattr(result, "flash_bytes", None)
    ram = getattr(result, "ram_bytes", None)
    if board.flash_bytes and flash is not None:
        estimate = " (estimate: no toolchain for this CPU here)" if getattr(result, "estimate", False) else ""
        by = f" [{result.built_by}]" if getattr(result, "built_by", "") else ""
        return (f"built {board.id}: flash {flash:,} B of {board.flash_bytes:,} ({flash / board.flash_bytes:.1%}), "
                f"RAM {ram:,} B of {board.ram_bytes:,} ({ram / board.ram_bytes:.1%}){estimate}{by}")
    return f"built {board.id}: {getattr(result, 'image', '')}"


def flash(project_dir: Path, board_id: str | None, port: str | None, console: Console, *,
          offline: bool = False) -> None:
    """Upload to a real board; emulated and host targets are started by `eval` instead."""
    project = open_project(project_dir)
    board = load_board(board_id or project.config["device"]["board"])
    if board.run in ("qemu", "host"):
        console.print(f"{board.id} is not flashed: `microt-deploy eval` starts it with the built image")
        return
    from microt_deploy.targets import flash as flash_image

    fw_dir = _check_last_build(project, board)
    flash_image(board, fw_dir, port, offline=offline)
    console.print(f"flashed {board.id}" + (f" through {port}" if port else ""))


def _check_last_build(project: Project, board: Board) -> Path:
    """The board's firmware folder, when its last build succeeded: a folder without a result, or
    one that a later failed build left as it was (an older image), is refused in one line."""
    from microt_deploy.targets import failed_build_log
    from microt_deploy.targets.toolchain import read_build

    fw_dir = project.firmware_dir(board.id)
    built = (fw_dir / "build.json").is_file() and "result" in read_build(fw_dir)
    if not built:
        raise MicrotError(f"no successful build of {board.id} in {fw_dir}",
                          f"run `microt-deploy build --board {board.id}` first (the last one did not finish)")
    failed = failed_build_log(fw_dir)
    if failed.is_file():  # the folder still holds the build before the one that failed
        first = failed.read_text(errors="replace").splitlines()[0:1] or ["(no details)"]
        raise MicrotError(f"the last build of {board.id} failed ({first[0]}); {fw_dir} holds an earlier build",
                          f"fix it and run `microt-deploy build --board {board.id}` again (see {failed})")
    return fw_dir


# ---------------------------------------------------------------- on the device


def _task_specs(project: Project, splits: dict[str, Any]) -> list[Any]:
    from microt_deploy.evaluate.session import TaskSpec

    specs = []
    for index, task in enumerate(project.config["tasks"]):
        labels = task["name"]  # load_splits keys each task's labels by the task's name
        specs.append(TaskSpec(index=index, name=task["name"], classes=int(task["classes"]),
                              train_labels=splits["train"].labels[labels],
                              calib_labels=splits["calib"].labels[labels],
                              test_labels=splits["test"].labels[labels]))
    return specs


def _limit(n: int, cap: int) -> int:
    return min(n, cap) if cap and cap > 0 else n


@dataclasses.dataclass
class EvalHooks:
    """How a rig run (evaluate/hil.py) drives one board's evaluation; the defaults are plain `eval`.

    ``progress``: the callback ``(stage, done, total)`` instead of an own progress display;
    ``phase``: called with the phase's name (connect / store / train / evaluate) and the device at
    the start of each; ``run_name``: appended to the run folder's name; ``quiet``: no tables;
    ``serial_number`` / ``reset`` / ``no_reset``: how to find and open a real board (its baud rate is
    the firmware's, ``[device] baud``)."""

    progress: Callable[..., Any] | None = None
    phase: Callable[..., Any] | None = None
    run_name: str | None = None
    quiet: bool = False
    serial_number: str | None = None
    reset: str | None = None
    no_reset: bool = False


@contextlib.contextmanager
def open_device(project: Project, board: Board, port: str | None,
                console: Console | None = None, hooks: EvalHooks | None = None) -> Iterator[Any]:
    """Connect to the device: the given serial port; else the board's own port, found by its USB
    ids (and serial number, when given); else, for the host build and boards QEMU emulates, the
    image started here. A board asked for by serial number is never replaced by QEMU."""
    from microt_deploy.errors import NoBoardError
    from microt_deploy.link.device import Device
    from microt_deploy.link.ports import find_port
    from microt_deploy.targets import can_launch, launch

    hooks = hooks or EvalHooks()
    say = console.print if console is not None else (lambda *_: None)
    if port is None and board.run == "platformio" and not hooks.serial_number:
        port = project.config["device"].get("port") or None  # the project's own port, if it names one
    if port is None and board.run == "platformio":
        try:
            port, why = find_port(board, serial_number=hooks.serial_number)
            say(why)
        except NoBoardError as err:
            if hooks.serial_number or not can_launch(board):
                raise
            say(f"{err.problem}: running {board.id}'s image in QEMU ({board.extra['qemu_machine']}) instead")
    if port is not None:
        if board.run in ("qemu", "host"):
            raise MicrotError(f"--port is for real boards; {board.id} is started here by eval",
                              "drop --port")
        yield from _open_real_board(project, board, port, hooks)
        return
    image = _built_image(project, board)
    with launch(board, image) as serial_port:
        yield Device(serial_port, local=True)  # runs here: it can read samples from a host file


# How long a board that was reset by opening its port (ESP32 auto-reset) may take to answer HELLO.
BOOT_TIMEOUT_S = 10.0


def _open_real_board(project: Project, board: Board, port: str, hooks: EvalHooks) -> Iterator[Any]:
    """A real board's serial port at the firmware's baud rate: DTR/RTS as its reset method wants
    (``dtr-rts`` resets ESP32-style boards, then the boot log is skipped until HELLO answers;
    ``--no-reset`` never toggles them); when the probe's USB serial number is known, a port that
    re-enumerates (a new /dev/ttyACMn after a reset) is found again by it."""
    from microt_deploy.link.connect import ReconnectingPort, open_board_port, serial_number_of, wait_ready
    from microt_deploy.link.device import Device
    from microt_deploy.rig.hwmap import default_reset

    baud = int(project.config["device"].get("baud", 115200))
    reset = hooks.reset or default_reset(board)
    serial_number = hooks.serial_number or serial_number_of(port)  # read before anything resets the board
    with open_board_port(port, baudrate=baud, reset=reset, no_reset=hooks.no_reset) as raw:
        link: Any = ReconnectingPort(raw, board, serial_number, baudrate=baud) if serial_number else raw
        with link if serial_number else contextlib.nullcontext():
            device = Device(link)
            if reset == "dtr-rts" and not hooks.no_reset:
                wait_ready(link, device.hello, BOOT_TIMEOUT_S)
            yield device


def _built_image(project: Project, board: Board) -> Path:
    from microt_deploy.targets import image_path

    image = image_path(board, _check_last_build(project, board))
    if not image.is_file():
        raise MicrotError(f"no firmware image for {board.id} at {image}",
                          f"run `microt-deploy build --board {board.id}`")
    return image


def evaluate(project_dir: Path, board_id: str | None, port: str | None, console: Console, *,
             evaluate: bool = True, ratios: Sequence[float] | None = None,
             hooks: EvalHooks | None = None) -> dict[str, Any]:
    """Train the heads on the device and (optionally) evaluate staged inference; writes runs/<time>/.

    A device that stops answering during the evaluation leaves a report of the samples measured
    before, marked partial, and raises :class:`microt_deploy.evaluate.hil.PartialRun`."""
    hooks = hooks or EvalHooks()
    phase = hooks.phase or (lambda *_: None)
    project = open_project(project_dir)
    board = load_board(board_id or project.config["device"]["board"])
    info = load_export_info(project)
    from microt_deploy.evaluate import report as reporting
    from microt_deploy.evaluate import session
    from microt_deploy.export import quantize_input
    from microt_deploy.model.data import load_splits

    dev_cfg = project.config["device"]
    chosen = float(dev_cfg["ratio"])  # the project's ratio: always measured, last, so the device keeps it
    ratios = reporting.sweep(ratios or project.config["eval"]["ratios"], chosen)
    splits = load_splits(project.config)
    tasks = _task_specs(project, splits)
    n_train = _limit(len(splits["train"].images), int(dev_cfg.get("max_train_samples", 0)))
    n_calib = _limit(len(splits["calib"].images), int(dev_cfg.get("max_calib_samples", 0)))
    n_test = _limit(len(splits["test"].images), int(dev_cfg.get("max_test_samples", 0)))
    for t in tasks:
        t.train_labels, t.test_labels = t.train_labels[:n_train], t.test_labels[:n_test]
    train_q = quantize_input(splits["train"].images[:n_train], info)
    calib_q = quantize_input(splits["calib"].images[:n_calib], info)
    test_q = quantize_input(splits["test"].images[:n_test], info)

    started = time.monotonic()
    partial: dict[str, Any] | None = None
    progress = contextlib.nullcontext(hooks.progress) if hooks.progress else progress_bar(console)
    with open_device(project, board, port, console, hooks) as device, progress as update:
        phase("connect", device)
        hello = device.hello()
        if hello.counter_unit != board.counter_unit:
            # What the device counts decides the label: an STM32 image counts DWT cycles on silicon
            # and retired instructions under QEMU (which has no DWT).
            board = dataclasses.replace(board, counter_unit=hello.counter_unit)
        n_train, n_calib = _fit_store(hello, n_train, n_calib, console)
        _check_capacity(hello, n_train + n_calib, tasks)
        train_q, calib_q = train_q[:n_train], calib_q[:n_calib]
        for t in tasks:
            t.train_labels = t.train_labels[:n_train]
        phase("store", device)
        link = session.choose_transport(device, dev_cfg.get("baud", 115200))  # semihosting here, else UART
        session.store_features(device, train_q, 0, update, "store train", transport=link)
        session.store_features(device, calib_q, n_train, update, "store calib", transport=link)
        phase("train", device)
        trained = session.train_tasks(device, tasks, n_train, int(dev_cfg["train_epochs"]),
                                      float(dev_cfg["train_lr"]), int(project.config["train"]["seed"]), update)
        evals = []
        if evaluate:
            phase("evaluate", device)
            try:
                evals = session.evaluate_tasks(device, tasks, test_q, n_train, n_calib, ratios, update,
                                               transport=link)
            except DeviceError as err:
                evals = getattr(err, "partial_evaluations", None) or []
                if not evals or not len(evals[0].labels):
                    raise
                partial = {"samples_evaluated": int(len(evals[0].labels)), "samples_planned": int(len(test_q)),
                           "error": err.one_line()}
                cause = err
        device_seconds = time.monotonic() - started
        link.close()
        if partial is None:
            with contextlib.suppress(Exception):
                device.exit(0)

    training = {t.name: t.result for t in trained}
    if not evaluate:
        console.print_json(json.dumps(training, default=float))
        return {"device_training": training}

    if partial is not None:
        test_q = test_q[:partial["samples_evaluated"]]
    simulation = _simulate(project, info, trained, evals, calib_q, test_q, ratios)
    extra = {
        "chosen_ratio": chosen,
        "device_training": training,
        "device": {k: getattr(hello, k) for k in getattr(hello, "__dataclass_fields__", {})},
        "simulation": simulation,
        "samples": {"train": n_train, "calib": n_calib, "test": n_test},
        "device_seconds": round(device_seconds, 1),
        "transport": link.report(),
        "firmware": _firmware_facts(project, board),
    }
    train_json = project.checkpoints / "train.json"
    if train_json.is_file():
        extra["extractor"] = json.loads(train_json.read_text())  # the file is the summary
    if partial is not None:
        extra["partial"] = partial
    report = reporting.build_report(evals, board, extra)
    run_dir = _new_run_dir(project, hooks.run_name)
    reporting.write_report(report, run_dir)
    if not hooks.quiet:
        console.print(reporting.terminal_table(report))
        console.print(f"host simulation: {reporting.simulation_line(simulation)}")
    console.print(f"report: {run_dir / 'report.md'}" + (" (partial)" if partial else ""), highlight=False,
                  soft_wrap=True)
    report["run_dir"] = str(run_dir)
    if partial is not None:
        from microt_deploy.evaluate.hil import PartialRun

        raise PartialRun(cause, report, run_dir)
    return report


def _new_run_dir(project: Project, name: str | None) -> Path:
    """runs/<time>[-<name>], never one that exists (boards of one rig finish in the same second)."""
    stem = time.strftime("%Y%m%d-%H%M%S")
    if name:
        stem += "-" + re.sub(r"[^A-Za-z0-9_.@-]+", "_", name)
    run_dir = project.runs_dir / stem
    n = 2
    while run_dir.exists():
        run_dir = project.runs_dir / f"{stem}-{n}"
        n += 1
    return run_dir


def _fit_store(hello: Any, n_train: int, n_calib: int, console: Console) -> tuple[int, int]:
    """Train and calibration counts that fit the device's feature store (sized to the board's RAM
    at build time), shrunk in proportion when they do not; says so when it shrinks them."""
    slots = getattr(hello, "max_slots", None)
    if slots is None or n_train + n_calib <= slots:
        return n_train, n_calib
    calib = max(1, round(slots * n_calib / (n_train + n_calib)))
    train = slots - calib
    console.print(f"the device holds {slots:,} samples: training on {train:,} of {n_train:,} and calibrating on "
                  f"{calib:,} of {n_calib:,} (set [device] max_train_samples / max_calib_samples to choose)",
                  markup=False)
    return train, calib


def _check_capacity(hello: Any, slots: int, tasks: Sequence[Any]) -> None:
    max_slots = getattr(hello, "max_slots", None)
    if max_slots is not None and slots > max_slots:
        raise MicrotError(f"{slots} train+calibration samples exceed the device's {max_slots} feature slots",
                          "lower [device] max_train_samples in microt.toml")
    max_tasks = getattr(hello, "max_tasks", None)
    if max_tasks is not None and len(tasks) > max_tasks:
        raise MicrotError(f"{len(tasks)} tasks exceed the firmware's {max_tasks}", "rebuild the firmware")


def _simulate(project: Project, info: dict[str, Any], trained: Sequence[Any], evals: Sequence[Any],
              calib_q: np.ndarray, test_q: np.ndarray, ratios: Sequence[float]) -> dict[str, Any]:
    """Predict every device answer on the host (TFLite reference kernels + the device's heads)."""
    from microt_deploy.evaluate import simulate
    from microt_deploy.export import reference_outputs

    calib_ref = reference_outputs(project.export_dir, calib_q)
    test_ref = reference_outputs(project.export_dir, test_q)
    out: dict[str, Any] = {}
    for tr, ev in zip(trained, evals, strict=True):
        calib_sim = simulate.simulate_heads(calib_ref["part_features"], calib_ref["full_features"], info,
                                            tr.part_head, tr.full_head)
        test_sim = simulate.simulate_heads(test_ref["part_features"], test_ref["full_features"], info,
                                           tr.part_head, tr.full_head)
        task_out: dict[str, Any] = {
            "part": simulate.compare(ev.part_pred, test_sim.part_pred),
            "full": simulate.compare(ev.full_pred, test_sim.full_pred),
            "staged": {},
        }
        for r in ratios:
            threshold = simulate.threshold_for_ratio(calib_sim.part_conf, r)
            pred, _ = simulate.staged_predictions(test_sim, threshold)
            cmp = simulate.compare(ev.staged_pred[r], pred, test_sim.part_conf, threshold)
            cmp["threshold_device"] = ev.thresholds[r]
            cmp["threshold_host"] = threshold
            cmp["device_accuracy"] = float(np.mean(ev.staged_pred[r] == ev.labels))
            cmp["host_accuracy"] = float(np.mean(pred == ev.labels))
            task_out["staged"][f"{r:g}"] = cmp
        out[tr.name] = task_out
    return out


def _firmware_facts(project: Project, board: Board) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    plan = project.compiled_dir / "plan.json"
    if plan.is_file():
        data = json.loads(plan.read_text())
        facts["arena_bytes"] = data.get("arena_bytes")
        facts["const_bytes"] = data.get("const_bytes")
    build_json = project.firmware_dir(board.id) / "build.json"
    if build_json.is_file():
        facts["build"] = json.loads(build_json.read_text())
    return facts


# ---------------------------------------------------------------- report and demo


def report(project_dir: Path, run_dir: Path | None, console: Console) -> None:
    """Re-render report.md and the plots of a run from its report.json."""
    from microt_deploy.evaluate import report as reporting

    project = open_project(project_dir)
    if run_dir is None:
        runs = sorted(p for p in project.runs_dir.glob("*") if (p / "report.json").is_file())
        if not runs:
            raise MicrotError(f"no runs in {project.runs_dir}", "run `microt-deploy eval` first")
        run_dir = runs[-1]
    path = run_dir / "report.json"
    if not path.is_file():
        raise MicrotError(f"no report.json in {run_dir}", "pass a folder under runs/")
    data = json.loads(path.read_text())
    reporting.write_report(data, run_dir)
    console.print(reporting.terminal_table(data))
    console.print(f"report: {run_dir / 'report.md'}")


def demo(project_dir: Path, board_id: str | None, fresh: bool, console: Console) -> dict[str, Any]:
    """Every stage on the embedded default; a stage whose outputs exist is reused unless --fresh."""
    started = time.monotonic()
    overrides = {"device": {"board": board_id}} if board_id else None
    project = init_project(project_dir, overrides)
    board = load_board(project.config["device"]["board"])

    def stage(name: str, done_marker: Path, run: Any) -> None:
        if done_marker.exists() and not fresh:
            console.print(f"[dim]{name}: reusing {done_marker}[/]")
            return
        t0 = time.monotonic()
        console.rule(name)
        run()
        console.print(f"[green]{name} done in {time.monotonic() - t0:.1f} s[/]")

    stage("train", project.checkpoints / "extractor.pt", lambda: train(project.root, console))
    stage("export", project.export_dir / "export.json", lambda: export(project.root, console))
    stage("compile", project.compiled_dir / "plan.json", lambda: compile(project.root, console))
    from microt_deploy.targets import image_path

    stage("build", image_path(board, project.firmware_dir(board.id)), lambda: build(project.root, board.id, console))
    console.rule("eval on device")
    result = evaluate(project.root, board.id, None, console)
    console.print(f"demo finished in {time.monotonic() - started:.0f} s")
    return result
