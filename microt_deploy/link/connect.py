"""Connecting to a real board over its serial port the way a board rig needs: how opening the port
treats the reset lines, waiting for the firmware after a reset, finding the board again when its USB
device re-enumerates, and a port wrapper that survives the tty vanishing under a running Device.

Owns: the reset methods (:data:`RESET_METHODS`, the ``reset`` of a rig entry) and what opening a port
does to DTR/RTS (:func:`open_board_port`, :func:`hard_reset`); :func:`wait_ready` (boot chatter,
HELLO until it answers); :func:`refind_port` / :func:`serial_number_of` (a board by its USB serial
number); :class:`ReconnectingPort`. Not owned: finding a port by VID:PID and the exclusive open
(:mod:`microt_deploy.link.ports`), the protocol and its retries (:mod:`microt_deploy.link.device`).

How the pieces fit (the eval pipeline wires them)::

    serial_number = serial_number_of(path)              # before anything resets the board
    with open_board_port(path, baudrate=115200, reset=reset, no_reset=no_reset) as raw:
        with ReconnectingPort(raw, board, serial_number) as port:  # only when serial_number is known
            device = Device(port)
            info = wait_ready(port, device.hello, 10.0)

The reset lines. A USB-UART's DTR and RTS are wired, on ESP32 dev boards, through the two-transistor
auto-reset circuit: RTS asserted (pyserial ``rts=True``) with DTR deasserted pulls EN low (the chip is
held in reset); DTR asserted with RTS deasserted pulls IO0 low (boot into the ROM download mode when
EN next rises); both asserted or both deasserted leave EN and IO0 high (the app runs). The ST-LINK's
virtual COM port ignores both lines: an STM32 is reset through SWD by the probe at flash time.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import serial
from serial.tools.list_ports_common import ListPortInfo

from microt_deploy.boards import Board, load_board
from microt_deploy.errors import DeviceError, MicrotError, NoBoardError
from microt_deploy.link.ports import find_port, open_serial

try:  # termios.error is what tcflush/tcdrain raise on a vanished tty; it is no OSError
    import termios

    _TERMIOS_ERRORS: tuple[type[BaseException], ...] = (termios.error,)
except ImportError:  # pragma: no cover - Windows
    _TERMIOS_ERRORS = ()

# probe: the debug probe resets the chip (SWD) when it flashes; opening the port touches nothing.
# dtr-rts: we reset the chip through the auto-reset circuit when the port opens (ESP32 dev boards).
# esptool: esptool resets the chip itself when it flashes (its --after hard_reset); opening touches
#   nothing, as for probe.
# none: nothing resets the board; it is expected to be running the firmware already.
RESET_METHODS: tuple[str, ...] = ("probe", "dtr-rts", "esptool", "none")

# esptool's HardReset: EN low for 100 ms is well over the EN pin's RC (10 kOhm, 1 uF on DevKitC).
RESET_HOLD_S = 0.1
# The chip's own USB-Serial/JTAG (ESP32-S3/C3: 303A:1001) resets its USB peripheral with the chip
# and must see the lines long enough to act on them; esptool waits 200 ms before and after release.
USB_JTAG_HOLD_S = 0.2
USB_JTAG_SETTLE_S = 0.2
USB_JTAG_ID = (0x303A, 0x1001)

# wait_ready: the ESP32 ROM boot log and the 2nd-stage bootloader's pause for loading the app are
# both well under this gap; a running STM32 is silent, so this is all it costs there.
BOOT_QUIET_S = 0.25
# wait_ready: one HELLO attempt (the host build answers in well under 10 ms, a board at 115200 in a
# few ms: a short attempt only bounds the wait on a board that is still booting).
HELLO_ATTEMPT_S = 0.5
# refind_port: how often the USB device list is read again (a re-enumeration takes 0.5-3 s).
POLL_S = 0.1
# ReconnectingPort: how long a vanished tty may take to come back.
RECONNECT_TIMEOUT_S = 10.0
# What a ReconnectingPort reports to the reader after a reconnect: one byte of line noise (never a
# sync byte), which the Device's decoder discards and then, after RESYNC_S of silence, counts as a
# damaged answer, so the lost request is re-sent at once instead of after the whole (up to 900 s)
# answer timeout.
LOSS_MARKER = b"\x00"

PortsFn = Callable[[], Iterable[ListPortInfo]]
# What setting a modem-control line raises on a port that has none (a pty: ENOTTY; some drivers: EINVAL).
_NO_MODEM_LINES = (errno.ENOTTY, errno.EINVAL)
LINK_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, *_TERMIOS_ERRORS)


def _comports(ports_fn: PortsFn | None) -> list[ListPortInfo]:
    if ports_fn is not None:
        return list(ports_fn())
    from serial.tools import list_ports

    return list(list_ports.comports())


def _port_info(path: str, ports_fn: PortsFn | None) -> ListPortInfo | None:
    """The listing entry of the port at ``path``; /dev/serial/by-id/... links are followed, so the
    stable name a rig file uses finds the same entry as /dev/ttyACM0."""
    real = os.path.realpath(path)
    for info in _comports(ports_fn):
        if info.device == path or os.path.realpath(info.device) == real:
            return info
    return None


def serial_number_of(path: str, ports_fn: PortsFn | None = None) -> str | None:
    """The USB serial number of the port at ``path`` (None: not a USB port, or no serial number).

    Read it before a reset or a flash: afterwards the tty may be gone or be another board's, and
    :func:`refind_port` needs it to find this board again."""
    info = _port_info(path, ports_fn)
    return info.serial_number if info is not None and info.serial_number else None


def refind_port(board: Board | str, serial_number: str, timeout_s: float, ports_fn: PortsFn | None = None) -> str:
    """The device path of ``board``'s port with USB serial number ``serial_number``, once it is listed.

    Polls ``ports_fn`` (default :func:`serial.tools.list_ports.comports`) until the port appears or
    ``timeout_s`` passes: after a reset or a flash the USB device re-enumerates, and its tty may come
    back under another name (/dev/ttyACM1). Raises :class:`NoBoardError` naming the serial number on
    timeout, and at once the :class:`MicrotError` of an ambiguous match (one probe, several ports).
    """
    board = load_board(board) if isinstance(board, str) else board
    started = time.monotonic()
    deadline = started + max(0.0, timeout_s)
    while True:
        try:
            path, _why = find_port(board, _comports(ports_fn), serial_number=serial_number)
            return path
        except NoBoardError:
            if time.monotonic() >= deadline:
                break
        time.sleep(POLL_S)
    raise NoBoardError(f"the serial port of {board.id} with USB serial number {serial_number} did not come back "
                       f"within {time.monotonic() - started:.1f} s",
                       "check the USB cable and hub, plug the board in again, or pass --port")


def _set_line(port: serial.Serial, name: str, value: bool) -> bool:
    """Set DTR or RTS; False when the port has no modem-control lines (a pty)."""
    try:
        setattr(port, name, value)
    except OSError as err:
        if err.errno not in _NO_MODEM_LINES:
            raise
        return False
    return True


def hard_reset(port: serial.Serial, *, usb_jtag: bool = False) -> None:
    """Reset an ESP32 into its app through the auto-reset circuit (esptool's HardReset).

    IO0 stays high (DTR deasserted) so that the chip boots the app, not the download mode; EN is
    held low by asserting RTS, then released. After each RTS change DTR is written again with the
    same state: Windows' usbser.sys sends RTS to the device only with a DTR update (esptool does the
    same). ``usb_jtag``: the chip's own USB-Serial/JTAG, which needs longer (esptool's uses_usb).
    Raises :class:`DeviceError` when the port has no modem-control lines to drive."""
    name = _port_name(port)
    hold = USB_JTAG_HOLD_S if usb_jtag else RESET_HOLD_S
    try:
        ok = _set_line(port, "dtr", False)  # IO0 high: boot the app when EN rises
        ok = ok and _set_line(port, "rts", True) and _set_line(port, "dtr", False)  # EN low: in reset
    except LINK_ERRORS as err:
        raise DeviceError(f"lost {name} while resetting the board ({err})", "check the cable and the port") from None
    if not ok:
        raise DeviceError(f"port {name} has no DTR/RTS lines, so reset dtr-rts cannot reset the board",
                          "set the board's reset to none or probe, or pass --no-reset")
    time.sleep(hold)
    try:
        _set_line(port, "rts", False)  # EN high: the chip boots
        _set_line(port, "dtr", False)
    except LINK_ERRORS:
        # The chip's own USB went down with the reset: its tty re-enumerates (a ReconnectingPort
        # finds it again); the chip boots either way.
        return
    if usb_jtag:
        time.sleep(USB_JTAG_SETTLE_S)


@contextlib.contextmanager
def open_board_port(path: str, *, baudrate: int = 115200, reset: str = "none", no_reset: bool = False,
                    timeout: float = 0.1, ports_fn: PortsFn | None = None) -> Iterator[serial.Serial]:
    """Open a real board's port for the ``with`` (exclusive, one-line errors: :func:`ports.open_serial`)
    and, for ``reset="dtr-rts"`` unless ``no_reset``, reset the board into its app.

    Opening never pulses the reset: on Linux the kernel asserts DTR and RTS together as the tty opens
    (harmless: both asserted leave EN and IO0 high), then pyserial writes DTR and then RTS. Opening
    with RTS deasserted and DTR still asserted, then deasserting DTR, passes through (DTR on, RTS off)
    (IO0 low, EN high: nothing happens) and never through (DTR off, RTS on), which would pull EN low:
    pyserial's default (both asserted) is safe too, but deasserting DTR first, as a plain
    ``dtr=False, rts=False`` before open does, briefly resets the board. Both lines end deasserted, the
    state of a closed port. On Windows the lines start deasserted and the open sets both at once.

    ``ports_fn`` (default comports): looks up whether the port is an Espressif chip's own
    USB-Serial/JTAG, which needs esptool's longer reset timing. Such a port re-enumerates with the
    reset: read from a :class:`ReconnectingPort` after it.
    """
    if reset not in RESET_METHODS:
        raise MicrotError(f"unknown reset method {reset!r}", f"use one of: {', '.join(RESET_METHODS)}")
    with open_serial(path, baudrate=baudrate, timeout=timeout, dtr=True, rts=False) as port:
        _set_line(port, "dtr", False)  # a pty has no lines: nothing to release, nothing to pulse
        if reset == "dtr-rts" and not no_reset:
            info = _port_info(path, ports_fn) if "://" not in path else None
            hard_reset(port, usb_jtag=info is not None and (info.vid, info.pid) == USB_JTAG_ID)
        yield port


def _port_name(port: Any) -> str:
    return str(getattr(port, "name", None) or getattr(port, "port", None) or "the serial port")


def _drain(port: Any, quiet_s: float, deadline: float) -> int:
    """Read and discard input until ``quiet_s`` passes without a byte (or ``deadline``); bytes discarded."""
    dropped = 0
    last_rx = time.monotonic()
    while True:
        now = time.monotonic()
        if now - last_rx >= quiet_s or now >= deadline:
            return dropped
        chunk = port.read(max(1, getattr(port, "in_waiting", 0) or 1))
        if chunk:
            dropped += len(chunk)
            last_rx = time.monotonic()


@contextlib.contextmanager
def _short_attempts(hello: Callable[[], Any], attempt_s: float) -> Iterator[None]:
    """While waiting, a Device's hello gets a short answer timeout and no retries of its own: its
    defaults (10 s, 4 retries) would overrun wait_ready's timeout by a minute. Its ``stats`` are put
    back afterwards: HELLOs sent into a booting board are no trouble of the link's."""
    owner = getattr(hello, "__self__", None)
    if owner is None or not (hasattr(owner, "timeout") and hasattr(owner, "retries")):
        yield
        return
    saved = owner.timeout, owner.retries
    stats = copy.deepcopy(getattr(owner, "stats", None))
    owner.timeout, owner.retries = min(owner.timeout, attempt_s), 0
    try:
        yield
    finally:
        owner.timeout, owner.retries = saved
        if stats is not None:
            owner.stats = stats


def wait_ready(port: Any, hello: Callable[[], Any], timeout_s: float, *, quiet_s: float = BOOT_QUIET_S,
               attempt_s: float = HELLO_ATTEMPT_S) -> Any:
    """Wait for the firmware after a reset: what ``hello()`` returns once it answers.

    The boot output before the app (the ESP32 ROM and bootloader log, at 115200) is read and thrown
    away until ``quiet_s`` passes without a byte, the input buffer is flushed, then ``hello()`` is
    tried until it answers or ``timeout_s`` passes (boot output that still comes is skipped by the
    Device's decoder, which resynchronises on the sync bytes). ``hello`` may be a Device's bound
    ``hello``: each try then gets a timeout of ``attempt_s`` and no retries of its own (restored
    afterwards); any other callable must bound its own wait. Raises :class:`DeviceError` naming the
    port, the time waited and what to check, within ``timeout_s`` plus one try."""
    started = time.monotonic()
    deadline = started + timeout_s
    name = _port_name(port)
    last = "no try"
    tries = 0
    try:
        # An app that logs without pause never goes quiet: leave it half the time for HELLO anyway.
        dropped = _drain(port, quiet_s, started + timeout_s / 2)
    except LINK_ERRORS as err:
        raise _lost_while_waiting(name, err) from None
    with _short_attempts(hello, attempt_s):
        while True:
            try:
                # What came since (a late boot line, the answer to an earlier try) answers no new try.
                dropped += getattr(port, "in_waiting", 0) or 0
                port.reset_input_buffer()
            except LINK_ERRORS as err:
                raise _lost_while_waiting(name, err) from None
            tries += 1
            try:
                return hello()
            except DeviceError as err:
                last = err.problem
            if time.monotonic() >= deadline:
                break
    noise = f", about {dropped} bytes of other output discarded" if dropped else ", nothing else came"
    raise DeviceError(f"the firmware on {name} did not answer HELLO within "
                      f"{time.monotonic() - started:.1f} s ({tries} tries{noise}; last: {last})",
                      "check the baud rate, the reset wiring (DTR/RTS; the board's reset method), or pass --no-reset")


def _lost_while_waiting(name: str, err: BaseException) -> DeviceError:
    return DeviceError(f"lost {name} while waiting for the firmware ({err})",
                       "the board's USB re-enumerated with the reset: wait on a ReconnectingPort, or pass --no-reset")


class ReconnectingPort:
    """A serial port for :class:`~microt_deploy.link.device.Device` that survives its tty vanishing.

    When a read, write, flush, ``in_waiting`` or ``reset_input_buffer`` fails because the tty is gone
    (a USB re-enumeration after a reset, a glitch on the hub), the port is closed, the board is
    looked for again by its USB serial number (:func:`refind_port`) and reopened without touching the
    reset lines (the board already reset, or did not and keeps its state). What the link lost in
    between is reported as :data:`LOSS_MARKER` on the next read, so the Device ends that attempt as a
    damaged answer within RESYNC_S and re-sends the request per its RETRY_SAFE table; a write that
    failed counts as written (lost on the wire, like a frame the cable ate). Only when the port is
    not back within ``timeout_s`` does an operation raise :class:`DeviceError`. ``reconnects`` counts
    the reconnections, for the report. Closing the wrapper closes the port it holds.
    """

    def __init__(self, port: serial.Serial, board: Board | str, serial_number: str, *,
                 timeout_s: float = RECONNECT_TIMEOUT_S, baudrate: int | None = None,
                 ports_fn: PortsFn | None = None) -> None:
        self.board = load_board(board) if isinstance(board, str) else board
        self.serial_number = serial_number
        self.timeout_s = timeout_s
        self.baudrate = int(baudrate if baudrate is not None else port.baudrate)
        self.ports_fn = ports_fn
        self.reconnects = 0
        self.path = str(port.port)
        self._port = port
        self._timeout = port.timeout
        self._stack = contextlib.ExitStack()  # holds the ports this wrapper opened itself
        self._lost = False
        self._closed = False

    # ------------------------------------------------------------ what Device uses
    def read(self, size: int = 1) -> bytes:
        if self._lost:
            self._lost = False
            return LOSS_MARKER
        try:
            return self._port.read(size)
        except LINK_ERRORS as err:
            self._reconnect(err)
            self._lost = False
            return LOSS_MARKER

    def write(self, data: bytes) -> int:
        try:
            return self._port.write(data) or len(data)
        except LINK_ERRORS as err:
            self._reconnect(err)
            return len(data)

    def flush(self) -> None:
        try:
            self._port.flush()
        except LINK_ERRORS as err:
            self._reconnect(err)

    def reset_input_buffer(self) -> None:
        self._lost = False  # the reader forgets what came so far: the loss with it
        try:
            self._port.reset_input_buffer()
        except LINK_ERRORS as err:
            self._reconnect(err)
            self._lost = False

    @property
    def in_waiting(self) -> int:
        if self._lost:
            return len(LOSS_MARKER)
        try:
            return self._port.in_waiting
        except LINK_ERRORS as err:
            self._reconnect(err)
            return len(LOSS_MARKER)

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._timeout = value
        self._port.timeout = value

    # ------------------------------------------------------------ the rest of a port
    @property
    def port(self) -> str:
        return self.path

    @property
    def name(self) -> str:
        return self.path

    @property
    def is_open(self) -> bool:
        return not self._closed and self._port.is_open

    @property
    def current(self) -> serial.Serial:
        """The pyserial port held now (another object after a reconnect)."""
        return self._port

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(*LINK_ERRORS):
            self._port.close()
        self._stack.close()

    def __enter__(self) -> ReconnectingPort:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ reconnecting
    def _reconnect(self, cause: BaseException) -> None:
        """Close the dead port, find the board again, reopen it; DeviceError after ``timeout_s``."""
        if self._closed:
            raise DeviceError(f"{self.path} was closed", "do not use the device after its port is closed")
        old = self.path
        with contextlib.suppress(*LINK_ERRORS):
            self._port.close()
        self._stack.close()  # the lock of a port this wrapper opened, if it was one
        self._stack = contextlib.ExitStack()
        started = time.monotonic()
        deadline = started + self.timeout_s
        last = f"{cause}"
        while True:
            left = deadline - time.monotonic()
            try:
                path = refind_port(self.board, self.serial_number, max(0.0, left), self.ports_fn)
                # The board already reset (or was not reset and keeps its state): no line toggling.
                port = self._stack.enter_context(open_board_port(path, baudrate=self.baudrate, reset="none",
                                                                 no_reset=True, timeout=self._timeout))
            except NoBoardError as err:
                last = err.problem
            except DeviceError as err:
                # Listed, but the tty node is not there yet or still belongs to the dead device
                # (udev renames and sets permissions after the listing appears): try again.
                last = err.problem
            else:
                self._port, self.path = port, path
                self._lost = True
                self.reconnects += 1
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        raise DeviceError(f"lost {old} ({cause}) and the port of {self.board.id} with USB serial number "
                          f"{self.serial_number} did not come back within {time.monotonic() - started:.1f} s "
                          f"(last: {last})",
                          "check the USB cable and hub; the board may have lost power")
