"""QEMU, fenced: the command line that makes counts deterministic (``-icount shift=0``) with the
board's UART on a loopback socket, and a launcher that hands back an open pyserial port and kills
and reaps QEMU (under a watchdog) when the context ends. Used by every family that has an emulator.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import serial

from microt_deploy import children
from microt_deploy.boards import Board
from microt_deploy.errors import DeviceError
from microt_deploy.targets.toolchain import require_tool

DEFAULT_LIMIT_S = 1800.0
CONNECT_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_command(board: Board, image: Path, port: int) -> list[str]:
    """The QEMU command line: deterministic instruction counting, UART0 on a loopback socket."""
    machine = board.extra.get("qemu_machine", "mps2-an386")
    # The MPS2 FPGA images take the core as an option; an SoC machine (b-l475e-iot01a) has its own.
    cpu = ["-cpu", board.cpu] if machine.startswith(("mps2", "mps3")) else []
    return [
        require_tool("qemu-system-arm"), "-M", machine, *cpu, "-icount", "shift=0",
        "-nographic", "-monitor", "none", "-semihosting-config", "enable=on,target=native",
        "-chardev", f"socket,id=s0,host=127.0.0.1,port={port},server=on,wait=on,nodelay=on",
        "-serial", "chardev:s0", "-kernel", str(image),
    ]


class Watchdog:
    """Kills a process that outlives its time limit (a hung guest must never hang the caller)."""

    def __init__(self, proc: subprocess.Popen, limit_s: float) -> None:
        self.proc = proc
        self.fired = False
        self._timer = threading.Timer(limit_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        if self.proc.poll() is None:
            self.fired = True
            children.signal_group(self.proc, signal.SIGKILL)

    def cancel(self) -> None:
        self._timer.cancel()


def stop(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """Give the process ``grace_s`` to exit, then end its whole process group; reaps it."""
    children.stop(proc, grace_s)


@contextlib.contextmanager
def launch_qemu(board: Board, image: Path, limit_s: float = DEFAULT_LIMIT_S) -> Iterator[serial.Serial]:
    stderr = tempfile.TemporaryFile()
    for attempt in range(3):
        port_no = _free_port()
        proc = children.popen(qemu_command(board, image, port_no), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=stderr)
        dog = Watchdog(proc, limit_s)
        port = _connect(proc, port_no)
        if port is not None:
            break
        dog.cancel()
        stop(proc, 0.5)
        stderr.seek(0)
        message = stderr.read().decode(errors="replace").strip().splitlines()
        if attempt == 2 or not any("Address already in use" in m for m in message):
            stderr.close()
            detail = message[-1] if message else f"exit status {proc.returncode}"
            raise DeviceError(f"QEMU did not start for {board.id}: {detail}",
                              f"run the command by hand to see why: {' '.join(qemu_command(board, image, port_no))}")
        stderr.seek(0)
        stderr.truncate()
    port.process = proc
    try:
        yield port
    finally:
        port.close()
        dog.cancel()
        stop(proc)
        stderr.close()


def _connect(proc: subprocess.Popen, port_no: int) -> serial.Serial | None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            return serial.serial_for_url(f"socket://127.0.0.1:{port_no}", timeout=0.1)
        except serial.SerialException:
            time.sleep(0.05)
    return None
