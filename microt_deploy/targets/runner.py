"""Starts a built image and hands back an open pyserial port to it: the host build on a pty, the
emulated board in QEMU behind a loopback TCP socket; a real board's port is opened as is.

Every started process runs under a watchdog and is killed and reaped when the context ends.
"""

from __future__ import annotations

import contextlib
import os
import pty
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import serial

from microt_deploy.boards import Board
from microt_deploy.errors import DeviceError, MicrotError
from microt_deploy.targets.builder import require_tool

DEFAULT_LIMIT_S = 1800.0
CONNECT_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_command(board: Board, image: Path, port: int) -> list[str]:
    """The QEMU command line: deterministic instruction counting, UART0 on a loopback socket."""
    machine = board.extra.get("qemu_machine", "mps2-an386")
    return [
        require_tool("qemu-system-arm"), "-M", machine, "-cpu", board.cpu, "-icount", "shift=0",
        "-nographic", "-monitor", "none", "-semihosting-config", "enable=on,target=native",
        "-chardev", f"socket,id=s0,host=127.0.0.1,port={port},server=on,wait=on,nodelay=on",
        "-serial", "chardev:s0", "-kernel", str(image),
    ]


class _Watchdog:
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
            self.proc.kill()

    def cancel(self) -> None:
        self._timer.cancel()


def _stop(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _launch_host(image: Path, limit_s: float) -> Iterator[serial.Serial]:
    # The firmware owns the pty master (stdin/stdout); the host opens the slave like a real tty.
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([str(image)], stdin=master, stdout=master, stderr=subprocess.DEVNULL,
                                close_fds=True, start_new_session=True)
    except OSError as err:
        os.close(master)
        os.close(slave)
        raise MicrotError(f"cannot start {image} ({err})",
                          "rebuild it with `microt-deploy build --board host`") from None
    os.close(master)
    dog = _Watchdog(proc, limit_s)
    port = None
    try:
        port = serial.Serial(os.ttyname(slave), baudrate=115200, timeout=0.1)
        port.process = proc  # lets callers check the firmware's exit status
        os.close(slave)
        slave = -1
        yield port
    finally:
        if port is not None:
            port.close()
        if slave >= 0:
            os.close(slave)
        dog.cancel()
        _stop(proc)


@contextlib.contextmanager
def _launch_qemu(board: Board, image: Path, limit_s: float) -> Iterator[serial.Serial]:
    stderr = tempfile.TemporaryFile()
    for attempt in range(3):
        port_no = _free_port()
        proc = subprocess.Popen(qemu_command(board, image, port_no), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        dog = _Watchdog(proc, limit_s)
        port = _connect(proc, port_no)
        if port is not None:
            break
        dog.cancel()
        _stop(proc, 0.5)
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
        _stop(proc)
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


@contextlib.contextmanager
def launch(board: Board, image: Path, limit_s: float = DEFAULT_LIMIT_S) -> Iterator[serial.Serial]:
    """Start ``image`` for ``board`` and yield an open serial port to it; stopped on exit."""
    image = Path(image)
    if not image.is_file():
        raise MicrotError(f"no firmware image at {image}", f"run `microt-deploy build --board {board.id}`")
    if board.run == "host":
        with _launch_host(image, limit_s) as port:
            yield port
    elif board.run == "qemu":
        with _launch_qemu(board, image, limit_s) as port:
            yield port
    else:
        raise MicrotError(f"{board.id} is a real board and cannot be launched here", "flash it and pass --port")


@contextlib.contextmanager
def open_port(path: str, baudrate: int = 115200) -> Iterator[serial.Serial]:
    """Open a real board's serial port (e.g. /dev/ttyACM0)."""
    try:
        port = serial.serial_for_url(path, baudrate=baudrate, timeout=0.1)
    except serial.SerialException as err:
        raise DeviceError(f"cannot open serial port {path} ({err})", "check the cable and the port name") from None
    try:
        yield port
    finally:
        port.close()


def flash(board: Board, fw_dir: Path, port: str | None = None, *, offline: bool = False) -> str:
    """Upload a real board's rendered firmware with PlatformIO (`pio run -t upload`); returns the log.

    ``port`` is the upload port (PlatformIO finds the ST-LINK / USB-UART itself when None).
    ``offline`` keeps pio in a network namespace (tests; it then cannot install the platform)."""
    if board.run != "platformio":
        raise MicrotError(f"{board.id} is not flashed: `microt-deploy eval` starts it with the built image",
                          "flash only real boards (e.g. --board nucleo_l4r5zi)")
    from microt_deploy.targets import platformio

    return platformio.upload(board, Path(fw_dir), port, offline=offline)
