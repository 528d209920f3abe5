"""Every child process in one place: each starts in its own process group (a compiler's cc1, a
PlatformIO build's scons and gcc, QEMU, the host firmware) and is registered here until it has been
reaped, so that :func:`kill_all` can end whole groups on SIGINT / SIGTERM / SIGHUP and at
interpreter exit. The CLI installs the handlers with :func:`signal_handlers`.

    proc = children.popen([...])          # subprocess.Popen, own process group, registered
    children.stop(proc, grace_s)          # wait a while, then end its group; unregisters
    res = children.run([...], timeout=)   # subprocess.run, the group killed on timeout or interrupt
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

# pid (== process group id: every child leads its own session) -> Popen
_registry: dict[int, subprocess.Popen] = {}
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# After a signal, the command unwinds (finally blocks, temporary folders); this long at most.
UNWIND_LIMIT_S = 10.0


class Interrupted(SystemExit):
    """Raised by the signal handler: unwinds the command and exits with 128 + the signal number."""

    def __init__(self, signo: int) -> None:
        self.signo = signo
        super().__init__(128 + signo)


def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` in a new session (its own process group), registered until reaped."""
    kwargs["start_new_session"] = True
    proc = subprocess.Popen(cmd, **kwargs)
    _registry[proc.pid] = proc
    return proc


def run(cmd: list[str], *, input: Any = None, timeout: float | None = None,  # noqa: A002 - subprocess's name
        check: bool = False, capture_output: bool = False, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` with the child in its own process group: on a timeout or any exception
    (a signal's :class:`Interrupted` included) the whole group is killed before this returns."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    proc = popen(cmd, **kwargs)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill(proc)
        raise subprocess.TimeoutExpired(proc.args, exc.timeout, output=exc.output, stderr=exc.stderr) from None
    except BaseException:
        kill(proc)
        raise
    finally:
        _forget(proc)
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def signal_group(proc: subprocess.Popen, signo: int) -> None:
    """Send ``signo`` to the child's whole process group (quietly: it may be gone already)."""
    try:
        os.killpg(proc.pid, signo)
    except (ProcessLookupError, PermissionError):
        if proc.returncode is None:  # not a group leader (started elsewhere): the process itself
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signo)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's group now and reap the child; unregisters it."""
    signal_group(proc, signal.SIGKILL)
    _reap(proc, 5.0)
    _forget(proc)


def stop(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """Give the child ``grace_s`` to exit by itself, then kill its group; reaps and unregisters it.
    What the child left in its group is killed either way."""
    if _reap(proc, grace_s) is None:
        signal_group(proc, signal.SIGTERM)
        if _reap(proc, 1.0) is None:
            signal_group(proc, signal.SIGKILL)
            _reap(proc, 5.0)
    signal_group(proc, signal.SIGKILL)
    _forget(proc)


def kill_all(grace_s: float = 1.0) -> list[int]:
    """End every registered child's process group (SIGTERM, then SIGKILL after ``grace_s``); returns
    the pids. Safe to call from a signal handler: never blocks on a lock the interrupted code holds."""
    procs = list(_registry.values())
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    waiting = list(procs)
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if _group_alive(p)]
        if waiting:
            time.sleep(0.02)
    for proc in procs:
        signal_group(proc, signal.SIGKILL)
        _group_alive(proc)  # reaps the leader when it is gone
        _forget(proc)
    return [p.pid for p in procs]


def alive() -> list[int]:
    """pids of the registered children (tests and diagnostics)."""
    return list(_registry)


def _forget(proc: subprocess.Popen) -> None:
    _registry.pop(proc.pid, None)


def _group_alive(proc: subprocess.Popen) -> bool:
    """True while the group has a live member; reaps the leader without Popen's lock (the code a
    signal interrupted may hold it)."""
    if proc.returncode is None:
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        os.killpg(proc.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return proc.returncode is None or _members_running(proc.pid)


def _members_running(pgid: int) -> bool:
    """True when a process of group ``pgid`` is not a zombie (zombies of orphans wait for init)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _reap(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _at_exit() -> None:
    if _registry:
        kill_all(0.5)


atexit.register(_at_exit)


@contextlib.contextmanager
def signal_handlers(announce: Callable[[str], None], cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """While the block runs, SIGINT / SIGTERM / SIGHUP: kill every registered group, run ``cleanup``
    (removes the command's temporary outputs), ``announce("interrupted by SIGTERM")`` and raise
    :class:`Interrupted` (exit status 128 + signo) so that the command unwinds. A second signal, or an
    unwinding that takes over UNWIND_LIMIT_S, exits at once. Outside the main thread: no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"signalled": False}

    def handler(signo: int, _frame: Any) -> None:
        code = 128 + signo
        if state["signalled"]:
            _flush()
            os._exit(code)
        state["signalled"] = True
        kill_all()
        if cleanup is not None:
            with contextlib.suppress(Exception):
                cleanup()
        with contextlib.suppress(Exception):
            announce(f"interrupted by {signal.Signals(signo).name}")
        timer = threading.Timer(UNWIND_LIMIT_S, _hard_exit, (code,))
        timer.daemon = True
        timer.start()
        raise Interrupted(signo)

    previous = {signo: signal.signal(signo, handler) for signo in HANDLED}
    try:
        yield
    finally:
        for signo, old in previous.items():
            signal.signal(signo, old)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _hard_exit(code: int) -> None:
    kill_all(0.2)
    _flush()
    os._exit(code)
