"""The portable part of every firmware: the sizing of each static buffer (feature slots from the
board's RAM budget), the rendered config header and graph aliases, and the copy of runtime + app +
compiled model. Board families (``microt_deploy.targets``) add their board layer and build files
around it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from microt_deploy import resources
from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError

TEMPLATES = resources.path("firmware_templates")

DEFAULTS: dict[str, int] = {
    "max_tasks": 4,
    "max_classes": 16,
    "max_slots": 1536,
    "max_payload": 4096,
    "rx_timeout_ms": 200,
    "stack_bytes": 16384,
}
MIN_SLOTS = 16
# Room for newlib's own data (errno, impure struct) and alignment between sections.
LIBC_SLACK = 4096
# Static RAM of the DSP kernels on cores with the DSP extension (Cortex-M4/M7): none since their tables
# and buffers live in the arena (compiler/scratch.py). tests/firmware/test_library.py checks it against
# the ARM build.
KERNEL_STATIC_BYTES = 0
DSP_CORES = ("cortex-m4", "cortex-m7", "cortex-m33")
MODEL_MACROS = (
    "MDT_ARENA_SIZE",
    "MDT_TRUNK_INPUT0_SIZE",
    "MDT_TRUNK_OUTPUT0_SIZE",
    "MDT_PART_HEAD_OUTPUT0_SIZE",
    "MDT_REST_OUTPUT0_SIZE",
)
GRAPHS = ("trunk", "part_head", "rest")
# What the app reads of each graph (docs/contracts.md): the tensor it feeds or takes, per graph.
GRAPH_MACROS = {"trunk": ("INPUT0", "OUTPUT0"), "part_head": ("OUTPUT0",), "rest": ("OUTPUT0",)}
FIELDS = ("OFFSET", "SIZE", "SCALE", "ZERO_POINT")


@dataclass(frozen=True)
class FirmwareConfig:
    """The sizes rendered into mdt_config.h and the model sizes they were derived from."""

    board: str
    max_tasks: int
    max_classes: int
    max_slots: int
    max_payload: int
    rx_timeout_ms: int
    stack_bytes: int
    arena_bytes: int
    input_size: int
    split_size: int
    part_dim: int
    full_dim: int
    fixed_ram_bytes: int
    slot_bytes: int


def graph_prefixes(header: Path) -> dict[str, str]:
    """The C prefix of each graph in a compiled header: ``mdt_trunk`` (the contract's names) or a
    bare ``trunk`` (the app then reaches it through aliases in mdt_graphs.h)."""
    text = header.read_text()
    found = {}
    for graph in GRAPHS:
        for prefix in (f"mdt_{graph}", graph):
            if re.search(rf"\bvoid\s+{prefix}_run\s*\(", text):
                found[graph] = prefix
                break
        else:
            raise MicrotError(f"{header} has no {graph} graph (no mdt_{graph}_run or {graph}_run)",
                              "compile the trunk, part_head and rest graphs together with `microt-deploy compile`")
    return found


def graphs_header(prefixes: dict[str, str]) -> str:
    """mdt_graphs.h: the model under the names the app uses, whatever prefixes it was compiled with."""
    lines = ["/* Rendered: the compiled graphs under the names the app uses (docs/contracts.md). */",
             "#ifndef MDT_GRAPHS_H", "#define MDT_GRAPHS_H", "", '#include "mdt_model.h"', ""]
    for graph, prefix in prefixes.items():
        if prefix == f"mdt_{graph}":
            continue
        lines.append(f"#define mdt_{graph}_run {prefix}_run")
        for tensor in GRAPH_MACROS[graph]:
            for name in FIELDS:
                lines.append(f"#define MDT_{graph.upper()}_{tensor}_{name} {prefix.upper()}_{tensor}_{name}")
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def read_model_sizes(header: Path) -> dict[str, int]:
    """The integer macros of a compiled ``mdt_model.h`` that size the firmware's buffers."""
    text = header.read_text()
    prefixes = graph_prefixes(header)
    sizes = {}
    for name in MODEL_MACROS:
        graph = next((g for g in GRAPHS if name.startswith(f"MDT_{g.upper()}_")), None)
        real = name if graph is None else name.replace(f"MDT_{graph.upper()}", prefixes[graph].upper(), 1)
        match = re.search(rf"#define\s+{real}\s+\(?\s*(\d+)", text)
        if not match:
            raise MicrotError(f"{header} does not define {name}", "recompile the model with `microt-deploy compile`")
        sizes[name] = int(match.group(1))
    return sizes


def plan_sizes(board: Board, model: dict[str, int], options: dict[str, Any] | None = None, *,
               stack_in_ram: bool = True) -> FirmwareConfig:
    """Choose MAX_SLOTS so that arena + buffers + feature store fit the board's RAM. ``stack_in_ram``
    False: the board keeps its stack in a region of its own, which the RAM budget then omits."""
    opts = {**DEFAULTS, **(options or {})}
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise MicrotError(f"unknown firmware options {sorted(unknown)}", f"use only {sorted(DEFAULTS)}")
    tasks, classes, payload = int(opts["max_tasks"]), int(opts["max_classes"]), int(opts["max_payload"])
    if not 1 <= tasks <= 255 or not 2 <= classes <= 255:
        raise MicrotError(f"max_tasks {tasks} / max_classes {classes} out of range",
                          "use 1..255 tasks and 2..255 classes")
    if not 256 <= payload <= 65535:  # HELLO's answer alone takes up to 134 bytes
        raise MicrotError(f"max_payload {payload} out of range", "use 256..65535 bytes")
    part, full = model["MDT_PART_HEAD_OUTPUT0_SIZE"], model["MDT_REST_OUTPUT0_SIZE"]
    fixed = model["MDT_ARENA_SIZE"] + _buffers_bytes(board, model, opts, stack_in_ram)
    slot_bytes = _slot_bytes(model, opts)
    max_slots = min(int(opts["max_slots"]), 65535)
    if board.ram_bytes:
        fit = (board.ram_bytes - fixed) // slot_bytes
        if fit < MIN_SLOTS:
            raise MicrotError(
                f"model does not fit {board.id}: arena {model['MDT_ARENA_SIZE']:,} B + buffers "
                f"{fixed - model['MDT_ARENA_SIZE']:,} B leave room for {max(fit, 0)} feature slots "
                f"(need {MIN_SLOTS}) in {board.ram_bytes:,} B of RAM",
                "choose an earlier split, a smaller model, fewer tasks/classes, or a board with more RAM",
            )
        max_slots = min(max_slots, fit)
    return FirmwareConfig(
        board=board.id, max_tasks=tasks, max_classes=classes, max_slots=max_slots, max_payload=payload,
        rx_timeout_ms=int(opts["rx_timeout_ms"]), stack_bytes=int(opts["stack_bytes"]),
        arena_bytes=model["MDT_ARENA_SIZE"], input_size=model["MDT_TRUNK_INPUT0_SIZE"],
        split_size=model["MDT_TRUNK_OUTPUT0_SIZE"], part_dim=part, full_dim=full,
        fixed_ram_bytes=fixed, slot_bytes=slot_bytes,
    )


def _buffers_bytes(board: Board, model: dict[str, int], opts: dict[str, Any], stack_in_ram: bool) -> int:
    """The firmware's RAM besides the arena and the feature store: the split's copy, protocol buffers, the
    heads, the trainer's buffers and feature standardisation, the stack reserve, libc's own data."""
    tasks, classes, payload = int(opts["max_tasks"]), int(opts["max_classes"]), int(opts["max_payload"])
    part, full = model["MDT_PART_HEAD_OUTPUT0_SIZE"], model["MDT_REST_OUTPUT0_SIZE"]
    heads = tasks * (4 * classes * (part + full + 2) + 16)
    # the input lives in the arena (microt.c); the split's copy is READ_TENSOR's
    return (model["MDT_TRUNK_OUTPUT0_SIZE"]
            + part + full + 3 * payload + 32 + heads + 4 * (max(part, full) + classes) + 8 * (part + full)
            + (int(opts["stack_bytes"]) if stack_in_ram else 0) + LIBC_SLACK
            + (KERNEL_STATIC_BYTES if board.cpu in DSP_CORES else 0))


def _slot_bytes(model: dict[str, int], opts: dict[str, Any]) -> int:
    # features, used flag, labels, shuffle order, confidence
    return model["MDT_PART_HEAD_OUTPUT0_SIZE"] + model["MDT_REST_OUTPUT0_SIZE"] + 1 + int(opts["max_tasks"]) + 2 + 4


def arena_budget(board: Board, model: dict[str, int], options: dict[str, Any] | None = None, *,
                 stack_in_ram: bool = True) -> int | None:
    """The most arena ``board`` can give this model: its RAM less what plan_sizes puts beside the arena
    with the smallest feature store (MIN_SLOTS). None for a board of unknown RAM (the host)."""
    if not board.ram_bytes:
        return None
    opts = {**DEFAULTS, **(options or {})}
    return (board.ram_bytes - _buffers_bytes(board, model, opts, stack_in_ram)
            - MIN_SLOTS * _slot_bytes(model, opts))


def copy_sources(src: Path, dst: Path) -> list[str]:
    """Copy the .c and .h files of ``src`` into ``dst``; returns the .c names."""
    names = []
    for path in sorted(src.glob("*")):
        if path.suffix in (".c", ".h") and path.is_file():
            shutil.copy2(path, dst / path.name)
            if path.suffix == ".c":
                names.append(path.name)
    return names


def template_env() -> jinja2.Environment:
    """The Jinja environment over firmware_templates/ (undefined names are errors)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def render_portable(src: Path, compiled_dir: Path, env: jinja2.Environment, values: dict[str, Any]) -> list[str]:
    """Copy the portable firmware (runtime, app, the compiled model) into ``src`` and render its
    config header and graph aliases; returns the names of the .c files copied."""
    sources: list[str] = []
    for folder in (TEMPLATES / "runtime", TEMPLATES / "app", Path(compiled_dir)):
        sources += copy_sources(folder, src)
    (src / "mdt_graphs.h").write_text(graphs_header(graph_prefixes(Path(compiled_dir) / "mdt_model.h")))
    (src / "mdt_config.h").write_text(env.get_template("app/mdt_config.h.j2").render(**values))
    return sources
