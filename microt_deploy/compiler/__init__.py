"""Stage package: compiler. int8 .tflite -> graph IR -> static arena plan -> ahead-of-time C whose
kernels (firmware_templates/runtime/) are bit-exact with TFLite's reference int8 kernels."""

from __future__ import annotations

from pathlib import Path

from .. import resources
from .codegen import GraphSpec, compile_program
from .patch import StagePolicy
from .reader import SUPPORTED_OPS, read_model
from .report import summarize

RUNTIME_DIR = resources.path("firmware_templates/runtime")


def runtime_sources() -> list[Path]:
    """The runtime's C files (compile them with the generated <header_name>.c; include RUNTIME_DIR)."""
    return sorted(RUNTIME_DIR.glob("*.c"))


__all__ = ["RUNTIME_DIR", "SUPPORTED_OPS", "GraphSpec", "StagePolicy", "compile_program", "read_model",
           "runtime_sources", "summarize"]
