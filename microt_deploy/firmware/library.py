"""The compiled model as a C99 library for a user's own firmware (`microt-deploy export-lib`).

Owns: the library folder (runtime kernels, the compiled graphs, the model API ``microt.h`` /
``microt.c`` that our firmware's command handlers use too, the feature store and trainer, a config
header sized for the project's tasks and an explicit number of feature slots), its PlatformIO
manifest and README, and the static RAM it needs. The folder is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

from microt_deploy import __version__, atomic
from microt_deploy.boards import load_board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import (
    KERNEL_STATIC_BYTES,
    TEMPLATES,
    graph_prefixes,
    graphs_header,
    plan_sizes,
    read_model_sizes,
    template_env,
)
from microt_deploy.project import open_project

DEFAULT_SLOTS = 256
MAX_SLOTS = 65535  # the trainer's shuffle order is uint16_t
# The app files the library needs: the model API, the feature store and trainer, and the header of
# the status codes mdt_learn.c returns (mdt_protocol.h; its framing code, mdt_protocol.c, stays out).
APP_FILES = ("microt.h", "microt.c", "mdt_learn.h", "mdt_learn.c", "mdt_protocol.h")
# mdt_protocol.h sizes a parser type with MDT_MAX_PAYLOAD; the library never makes one.
LIBRARY_PAYLOAD = 256
POINTER_BYTES = 4  # the RAM figures are for a 32-bit MCU
MANIFEST = "library.json"


def _library_board():
    # plan_sizes and mdt_config.h.j2 read a board: the library has none, and no RAM budget to fit.
    return dataclasses.replace(load_board("host"), id="library", name="microt library", ram_bytes=0,
                               flash_bytes=0, clock_hz=0)


def _macro(text: str, name: str) -> str:
    match = re.search(rf"#define\s+{name}\s+\(?\s*([-+0-9.eEf]+)", text)
    if not match:
        raise MicrotError(f"the compiled model does not define {name}", "recompile it with `microt-deploy compile`")
    return match.group(1).rstrip("fF")


def _is_export(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("name") == "microt" and (folder / "microt.h").is_file()


def static_ram(config: Any) -> dict[str, int]:
    """Bytes of every static buffer of the library on a 32-bit MCU, by purpose (the exact sizes of
    the objects in microt.c, mdt_learn.c and the kernels; alignment padding between them aside)."""
    part, full, tasks, classes, slots = (config.part_dim, config.full_dim, config.max_tasks, config.max_classes,
                                         config.max_slots)
    ram = {
        "arena": config.arena_bytes,
        # part and full features, the input's state and its trunk count (the input itself lives in the
        # arena), the counter callbacks
        "buffers": part + full + 1 + 8 + 2 * POINTER_BYTES,
        # per slot: features, used flag, a label per task, shuffle order (u16), confidence (f32)
        "feature_store": slots * config.slot_bytes,
        # per task: n_classes (u16), trained (u8), padding, threshold (f32), two heads' weights and biases
        "heads": tasks * (8 + 4 * classes * (part + full + 2)),
        # the training input, the class probabilities, the "labels initialised" flag, each feature's
        # standardisation (mean and inverse standard deviation, f32)
        "trainer": 4 * max(part, full) + 4 * classes + 1 + 8 * (part + full),
        "kernels": KERNEL_STATIC_BYTES,
    }
    return ram


def _model_flash(compiled: Path) -> int | None:
    plan = compiled / "plan.json"
    if not plan.is_file():
        return None
    try:
        value = json.loads(plan.read_text()).get("const_bytes")
    except ValueError:
        return None
    return int(value) if isinstance(value, int | float) else None


def export_library(project_dir: Path, out_dir: Path | None = None, *, max_slots: int | None = None) -> dict[str, Any]:
    """Write the project's compiled model as a C99 library into ``out_dir`` (default
    ``PROJECT/lib/microt``) with ``max_slots`` feature slots (default DEFAULT_SLOTS); returns a
    summary: path, files, static RAM (total and by purpose), flash of the model constants."""
    project = open_project(project_dir)
    compiled = project.compiled_dir
    header, source = compiled / "mdt_model.h", compiled / "mdt_model.c"
    if not header.is_file() or not source.is_file():
        raise MicrotError(f"no compiled model (mdt_model.h/.c) in {compiled}", "run `microt-deploy compile` first")
    slots = DEFAULT_SLOTS if max_slots is None else int(max_slots)
    if not 1 <= slots <= MAX_SLOTS:
        raise MicrotError(f"--max-slots {slots} out of range", f"use 1..{MAX_SLOTS} feature slots")
    out = Path(out_dir) if out_dir is not None else project.root / "lib" / "microt"
    out = out.resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_export(out))):
        raise MicrotError(f"{out} exists and is not a microt library export",
                          "choose a new or empty folder (the export replaces its folder whole)")
    tasks = [{"index": i, "name": str(t["name"]), "classes": int(t["classes"])}
             for i, t in enumerate(project.config["tasks"])]
    board = _library_board()
    options = {"max_tasks": max(len(tasks), 1), "max_classes": max([2, *(t["classes"] for t in tasks)]),
               "max_slots": slots, "max_payload": LIBRARY_PAYLOAD}
    config = plan_sizes(board, read_model_sizes(header), options)
    prefixes = graph_prefixes(header)
    text = header.read_text()
    trunk = prefixes["trunk"].upper()
    ram = static_ram(config)
    summary: dict[str, Any] = {
        "path": str(out),
        "version": __version__,
        "files": [],
        "static_ram_bytes": sum(ram.values()),
        "ram": ram,
        "flash_model_bytes": _model_flash(compiled),
        "arena_bytes": config.arena_bytes,
        "max_tasks": config.max_tasks,
        "max_classes": config.max_classes,
        "max_slots": config.max_slots,
        "slot_bytes": config.slot_bytes,
        "tasks": tasks,
    }
    env = template_env()
    values = {**dataclasses.asdict(config), "board": board, **summary, "project": str(project.root),
              "folder_name": out.name, "input_scale": _macro(text, f"{trunk}_INPUT0_SCALE"),
              "input_zero_point": _macro(text, f"{trunk}_INPUT0_ZERO_POINT")}
    with atomic.staged_dir(out) as tmp:
        sources = sorted(p for p in (TEMPLATES / "runtime").glob("*.[ch]") if p.is_file())
        sources += [TEMPLATES / "app" / name for name in APP_FILES] + [header, source]
        for path in sources:
            shutil.copy2(path, tmp / path.name)
        (tmp / "mdt_graphs.h").write_text(graphs_header(prefixes))
        (tmp / "mdt_config.h").write_text(env.get_template("app/mdt_config.h.j2").render(**values))
        manifest = env.get_template("lib/library.json.j2").render(
            version=__version__, description="MicroT staged int8 inference and on-device training of the "
                                             "classifier heads, generated by microt-deploy")
        json.loads(manifest)  # a template slip must not ship a manifest PlatformIO cannot read
        (tmp / MANIFEST).write_text(manifest)
        files = sorted([p.name for p in tmp.iterdir()] + ["README.md"])
        summary["files"] = files
        (tmp / "README.md").write_text(env.get_template("lib/README.md.j2").render(**{**values, "files": files}))
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What `microt-deploy export-lib` prints."""
    ram = summary["ram"]
    flash = summary["flash_model_bytes"]
    return [
        f"exported the microt library to {summary['path']} ({len(summary['files'])} files; include microt.h)",
        f"static RAM {summary['static_ram_bytes']:,} B: arena {ram['arena']:,} B, feature store "
        f"{summary['max_slots']} slots x {summary['slot_bytes']} B = {ram['feature_store']:,} B, heads "
        f"{ram['heads']:,} B, other {ram['buffers'] + ram['trainer'] + ram['kernels']:,} B",
        f"flash: model constants {flash:,} B + kernel code" if flash is not None
        else "flash: model constants unknown (no compiled/plan.json) + kernel code",
    ]
