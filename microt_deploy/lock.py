"""One command at a time per project: ``PROJECT/.microt.lock``, held with ``flock`` (so a killed
command never leaves a lock behind) and holding who has it (pid, command, start time) for the
one-line "project is busy" message. The holder also removes what killed commands left behind.

    with project_lock(root, "build"):        # MicrotError at once when another command has it
        ...
    with project_lock(root, "build", wait=True):   # waits for it instead
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from microt_deploy import atomic
from microt_deploy.errors import MicrotError

LOCK_NAME = ".microt.lock"

# root (resolved) -> [fd, depth]: the lock is re-entrant within one process (demo runs the stages).
_held: dict[Path, list[int]] = {}


def lock_path(root: Path) -> Path:
    return Path(root) / LOCK_NAME


def holder(root: Path) -> dict | None:
    """Who holds (or last held) the project's lock: {"pid", "command", "started"}; None if unknown."""
    try:
        data = json.loads(lock_path(root).read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def busy_error(root: Path) -> MicrotError:
    info = None
    for _ in range(10):  # the holder writes its details right after taking the lock
        info = holder(root)
        if info:
            break
        time.sleep(0.02)
    if info:
        since = time.strftime("%H:%M:%S", time.localtime(float(info.get("started", 0))))
        who = f"{info.get('command', '?')} (pid {info.get('pid', '?')}) since {since}"
    else:
        who = "another command"
    return MicrotError(f"project is busy: {who}", "wait for it or stop it")


@contextlib.contextmanager
def project_lock(root: Path, command: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the project's lock while the block runs; the first holder also removes stale temporary
    files and folders of killed commands. Raises the one-line busy MicrotError (exit 2) at once
    when another command holds it, unless ``wait``."""
    root = Path(root)
    key = root.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    path = lock_path(root)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise MicrotError(f"{path} is a symbolic link", f"remove it ({path})") from None
        raise MicrotError(f"cannot open the project lock {path} ({err.strerror})",
                          "check the project folder's permissions") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise busy_error(root) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "command": command, "started": time.time()}) + "\n")
                  .encode(), 0)
        _held[key] = [fd, 1]
        try:
            atomic.remove_stale(root)
            yield
        finally:
            del _held[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
