"""The stack high-water marks `microt-deploy bench` measured (painted stack, mdt_bench_main.c), kept
per model file so that `microt-deploy build` can set them beside the board's stack reserve.

Kept in the user's cache (``MICROT_CACHE_DIR`` or ~/.cache/microt-deploy, folder ``stack``), one
JSON file per model, keyed by the SHA-256 of the .tflite bytes: a re-exported graph with other
weights or shapes has no mark until it is benched again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from microt_deploy import atomic
from microt_deploy.errors import MicrotError


def _dir() -> Path:
    root = os.environ.get("MICROT_CACHE_DIR") or Path.home() / ".cache" / "microt-deploy"
    return Path(root) / "stack"


def model_key(model: Path) -> str:
    return hashlib.sha256(Path(model).read_bytes()).hexdigest()[:32]


def record(model: Path, marks: dict) -> None:
    """Keep ``marks`` (graph_stack_bytes, stack_used_bytes, board, opt, ...) for this model file;
    best effort: a cache that cannot be written loses the mark, not the bench."""
    try:
        atomic.write_text(_dir() / f"{model_key(model)}.json",
                          json.dumps({"model": Path(model).name, **marks}, indent=1) + "\n")
    except (OSError, MicrotError):
        pass


def lookup(model: Path) -> dict | None:
    """The last marks benched for exactly these model bytes, or None."""
    try:
        path = _dir() / f"{model_key(model)}.json"
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
