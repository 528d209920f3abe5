"""What each real board last ran: the SHA-256 of the image flashed to it, keyed by its probe's USB
serial number, so that `eval` on a rig skips a flash that would write the same bytes again.

The record lives outside any project (a board on a rig is shared by projects and CI jobs): in
``$MICROT_STATE_DIR`` or ``$XDG_CACHE_HOME/microt-deploy`` (``~/.cache/microt-deploy``), file
``flashed.json``. A board without a known serial number is never skipped: its identity is not
certain, and flashing the same image twice is cheap next to evaluating the wrong one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from microt_deploy import atomic

_LOCK = threading.Lock()  # boards flash in parallel threads; the file lock covers other processes


def state_dir() -> Path:
    """Where microt-deploy keeps machine-wide state (the flash record)."""
    explicit = os.environ.get("MICROT_STATE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "microt-deploy"


def record_path() -> Path:
    return state_dir() / "flashed.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, Any]]:
    """The record, read and written under an exclusive lock (threads and processes)."""
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK, open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}  # a damaged record only costs a re-flash
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            atomic.write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def last_flashed(serial_number: str | None) -> dict[str, Any] | None:
    """What was last flashed to the board with this probe serial number (None: unknown)."""
    if not serial_number:
        return None
    with _locked() as data:
        entry = data.get(serial_number.lower())
    return entry if isinstance(entry, dict) else None


def remember(serial_number: str | None, board: str, image: Path, sha256: str) -> None:
    """Record that ``image`` (with ``sha256``) now runs on the board with this serial number."""
    if not serial_number:
        return
    with _locked() as data:
        data[serial_number.lower()] = {"board": board, "sha256": sha256, "image": str(image),
                                       "flashed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def forget(serial_number: str | None) -> None:
    """Drop the record of a board (a flash that failed half-way leaves it unknown)."""
    if not serial_number:
        return
    with _locked() as data:
        data.pop(serial_number.lower(), None)
