"""Stage package: targets. One sub-package per board family (host, cmsdk, stm32, esp32), each one
:class:`~microt_deploy.targets.base.Target`; this module picks the family from the board file and
offers the stage's verbs: render a firmware folder, build it, launch it, flash it.

Adding a family is one folder here (plus its board layer in firmware_templates/boards/ and its
board files): a ``TARGET`` object and an entry in ``FAMILIES``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import serial

from microt_deploy import atomic
from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import MIN_SLOTS, FirmwareConfig, plan_sizes, read_model_sizes, template_env
from microt_deploy.link.baud import check_baud
from microt_deploy.targets.base import Target
from microt_deploy.targets.qemu import DEFAULT_LIMIT_S, qemu_command
from microt_deploy.targets.toolchain import BuildResult, FitError, read_build, require_tool

FAMILIES = ("host", "cmsdk", "stm32", "esp32")

__all__ = ["BuildResult", "FAMILIES", "Target", "build", "build_firmware", "flash", "image_path", "launch",
           "qemu_command", "render_firmware", "require_tool", "target_for"]


def target_for(board: Board) -> Target:
    """The family object of ``board`` (its board file's ``family``)."""
    if board.family not in FAMILIES:
        raise MicrotError(f"no board layer for {board.id} (family '{board.family}') yet",
                          f"use one of the families {', '.join(FAMILIES)} (e.g. --board qemu_mps2_an386)")
    return importlib.import_module(f"microt_deploy.targets.{board.family}").TARGET


def render_firmware(compiled_dir: Path, board: Board, out_dir: Path,
                    options: dict[str, Any] | None = None) -> FirmwareConfig:
    """Render the firmware for ``board`` from ``compiled_dir`` (mdt_model.h/.c) into ``out_dir``,
    atomically (the old folder stays until the new one is complete).

    ``options``: the buffer sizes of ``firmware.render.DEFAULTS``, plus the family's own options
    (``sanitize``: host ASan + UBSan build; ``pio``: the emulated board through PlatformIO).
    :func:`build_firmware` renders and builds in one step and keeps the last good build."""
    with atomic.staged_dir(out_dir) as tmp:
        return _render_into(tmp, Path(compiled_dir), board, options)


def _render_into(tmp: Path, compiled_dir: Path, board: Board, options: dict[str, Any] | None) -> FirmwareConfig:
    target = target_for(board)
    header = compiled_dir / "mdt_model.h"
    if not header.is_file() or not (compiled_dir / "mdt_model.c").is_file():
        raise MicrotError(f"no compiled model (mdt_model.h/.c) in {compiled_dir}", "run `microt-deploy compile` first")
    options = dict(options or {})
    family_options = {k: options.pop(k) for k in ("sanitize", "pio") if k in options}
    baud = check_baud(board, options.pop("baud", None))  # [device] baud: refused here if the board cannot
    config = plan_sizes(board, read_model_sizes(header), options, stack_in_ram=target.stack_in_ram(board))
    env = template_env()
    values = {**asdict(config), "board": board, "flash_bytes": board.flash_bytes, "ram_bytes": board.ram_bytes,
              "baud": baud}
    desc = target.render(tmp, compiled_dir, board, config, env, values, family_options)
    atomic.write_text(tmp / "build.json", json.dumps(desc, indent=2) + "\n")
    return config


def build(board: Board, fw_dir: Path, *, offline: bool = False) -> BuildResult:
    """Build the rendered folder ``fw_dir`` in place; records the result in its build.json.
    ``offline``: real boards are built without PlatformIO's registry (also forced by
    MICROT_PIO_OFFLINE=1). A failed build leaves the folder without an image or a result."""
    fw_dir = Path(fw_dir)
    desc = read_build(fw_dir)
    if desc.get("board") != board.id:
        raise MicrotError(f"{fw_dir} was rendered for {desc.get('board')}, not {board.id}",
                          f"render it again for {board.id}")
    return target_for(board).build(board, fw_dir, desc, offline=offline)


def build_firmware(compiled_dir: Path, board: Board, fw_dir: Path, options: dict[str, Any] | None = None, *,
                   offline: bool = False) -> tuple[FirmwareConfig, BuildResult]:
    """Render AND build the firmware for ``board`` in a staging folder next to ``fw_dir``; it replaces
    ``fw_dir`` only when the build succeeded. A failed (or interrupted) build leaves the previous
    ``fw_dir``, its image and its build.json as they were; its PlatformIO log, if any, is kept as
    ``<fw_dir>.failed.log``. Paths in the result and build.json name ``fw_dir``, not the stage."""
    fw_dir = Path(fw_dir)
    failed_log = failed_build_log(fw_dir)
    options = dict(options or {})
    with atomic.staged_dir(fw_dir) as tmp:
        try:
            config = _render_into(tmp, Path(compiled_dir), board, options)
            try:
                result = build(board, tmp, offline=offline)
            except FitError as err:
                # The feature store was sized from an estimate of the rest of the RAM; the linker
                # knows exactly. Shrink the store by what overflowed (never the user's own choice).
                slots = config.max_slots - -(-err.over // config.slot_bytes)
                if err.region != "RAM" or "max_slots" in options or slots < MIN_SLOTS:
                    raise
                _empty(tmp)
                config = _render_into(tmp, Path(compiled_dir), board, {**options, "max_slots": slots})
                result = build(board, tmp, offline=offline)
        except MicrotError as err:
            raise _relocated_error(err, tmp, fw_dir, failed_log) from None
        result = _relocate(result, tmp, fw_dir)
    failed_log.unlink(missing_ok=True)
    return config, result


def _empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def failed_build_log(fw_dir: Path) -> Path:
    """Where :func:`build_firmware` records a build that failed after the last good one."""
    fw_dir = Path(fw_dir)
    return fw_dir.with_name(f"{fw_dir.name}.failed.log")


def _swap_prefix(text: str, tmp: Path, final: Path) -> str:
    for stage in sorted({str(tmp.resolve()), str(tmp)}, key=len, reverse=True):
        text = text.replace(stage, str(final.resolve()) if stage.startswith("/") else str(final))
    return text


def _relocate(result: BuildResult, tmp: Path, final: Path) -> BuildResult:
    """The result and build.json of a build staged in ``tmp``, as they will be once it is ``final``."""
    build_json = tmp / "build.json"
    atomic.write_text(build_json, _swap_prefix(build_json.read_text(), tmp, final))
    image = final / Path(result.image).relative_to(tmp)
    return dataclasses.replace(result, image=image, log=_swap_prefix(result.log, tmp, final))


def _relocated_error(err: MicrotError, tmp: Path, final: Path, failed_log: Path) -> MicrotError:
    """A failed staged build's error, naming paths that will exist (the stage is deleted). The error
    line and the PlatformIO build.log, if any, are kept as ``failed_log`` beside the firmware
    folder: `flash` refuses while it is there (the folder holds an earlier build)."""
    problem, fix = _swap_prefix(err.problem, tmp, final), _swap_prefix(err.fix, tmp, final)
    log = tmp / "build.log"
    text = f"{problem}\n{fix}\n"  # first line: what went wrong (`flash` quotes it)
    if log.is_file():
        text += "\n" + _swap_prefix(log.read_text(errors="replace"), tmp, final)
        fix = fix.replace("see build.log in the folder", f"see {failed_log}")
        if str(failed_log) not in fix:
            fix += f"; the failed build's log: {failed_log}"
    atomic.write_text(failed_log, text)
    return type(err)(problem, fix, err.exit_code)


def image_path(board: Board, fw_dir: Path) -> Path:
    """Where the image of ``board`` lands in a rendered firmware folder."""
    return target_for(board).image_path(board, Path(fw_dir))


def can_launch(board: Board) -> bool:
    """True when this machine can run the board's image itself (host build or an emulator)."""
    return target_for(board).can_launch(board)


@contextlib.contextmanager
def launch(board: Board, image: Path, limit_s: float = DEFAULT_LIMIT_S) -> Iterator[serial.Serial]:
    """Start ``image`` for ``board`` and yield an open serial port to it; stopped on exit."""
    image = Path(image)
    target = target_for(board)
    if not target.can_launch(board):
        with target.launch(board, image, limit_s) as port:  # raises the family's one-line refusal
            yield port
        return
    if not image.is_file():
        raise MicrotError(f"no firmware image at {image}", f"run `microt-deploy build --board {board.id}`")
    with target.launch(board, image, limit_s) as port:
        yield port


def flash(board: Board, fw_dir: Path, port: str | None = None, *, offline: bool = False,
          timeout_s: float | None = None, serial_number: str | None = None) -> str:
    """Put the built image on a real board (PlatformIO's upload); returns the log. ``serial_number``
    picks one probe of several (a rig); ``timeout_s`` bounds the upload."""
    return target_for(board).flash(board, Path(fw_dir), port, offline=offline, timeout_s=timeout_s,
                                   serial_number=serial_number)
