"""Finding a real board's serial port by USB VID:PID, and opening it so that a busy port is a clear error.

A board's data file lists the USB ids of the probes whose serial port can be its console::

    usb_ids = ["0483:374E", "0483:374B", ...]   # VID:PID, hex; the first is the board's own probe

Every listed id is accepted (users swap probes); a port with the first id (the probe soldered on
the board) wins over the others. Boards without the key fall back to their family's known ids
(:data:`FAMILY_USB_IDS`: the ST-LINK virtual COM ports, the ESP32 USB-UART bridges) with no
preference among them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import serial
from serial.tools.list_ports_common import ListPortInfo

from microt_deploy.boards import Board, load_board
from microt_deploy.errors import DeviceError, MicrotError, NoBoardError

UsbId = tuple[int, int]

# Probes and USB-UART bridges that carry a board's console, by (VID, PID).
PROBE_NAMES: dict[UsbId, str] = {
    (0x0483, 0x374B): "ST-LINK V2-1",
    (0x0483, 0x3752): "ST-LINK V2-1 (no mass storage)",
    (0x0483, 0x374E): "ST-LINK V3",
    (0x0483, 0x374F): "ST-LINK V3 (bridge)",
    (0x0483, 0x3753): "ST-LINK V3 (dual VCP)",
    (0x0483, 0x3754): "ST-LINK V3 (no mass storage)",
    (0x0483, 0x3757): "ST-LINK V3PWR",
    (0x10C4, 0xEA60): "CP210x USB-UART",
    (0x1A86, 0x7523): "CH340 USB-UART",
    (0x1A86, 0x55D4): "CH9102 USB-UART",
    (0x303A, 0x1001): "ESP32-S3 USB serial/JTAG",
}

# Fallback for a board whose data file has no ``usb_ids``: every id its family is known to use.
FAMILY_USB_IDS: dict[str, tuple[UsbId, ...]] = {
    "stm32": tuple(k for k in PROBE_NAMES if k[0] == 0x0483),
    "esp32": ((0x10C4, 0xEA60), (0x1A86, 0x7523), (0x1A86, 0x55D4), (0x303A, 0x1001)),
}

# UUCP lock files (minicom, cu, picocom -l): LCK..ttyACM0 holding the owner's pid.
LOCK_DIRS: tuple[Path, ...] = (Path("/run/lock"), Path("/var/lock"))

_USB_ID = re.compile(r"^([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})$")


def _fmt_id(usb_id: UsbId) -> str:
    return f"{usb_id[0]:04X}:{usb_id[1]:04X}"


def _as_board(board: Board | str) -> Board:
    return load_board(board) if isinstance(board, str) else board


def board_usb_ids(board: Board | str) -> tuple[tuple[UsbId, ...], UsbId | None]:
    """The (VID, PID) pairs accepted for ``board``, most preferred first, and its own probe's id (or None)."""
    board = _as_board(board)
    raw = board.extra.get("usb_ids")
    if raw is None:
        ids = FAMILY_USB_IDS.get(board.family, ())
        if not ids:
            raise MicrotError(f"board {board.id} has no USB serial port to look for",
                              "microt-deploy starts it itself; pass --port only for real boards")
        return ids, None
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw:
        raise MicrotError(f"boards/{board.id}.toml: usb_ids must be a non-empty list of \"VID:PID\" strings",
                          'write e.g. usb_ids = ["0483:374B"]')
    ids: list[UsbId] = []
    for item in raw:
        match = _USB_ID.match(str(item).strip())
        if match is None:
            raise MicrotError(f"boards/{board.id}.toml: usb_ids entry {item!r} is not a hex VID:PID",
                              'write it like "0483:374B"')
        usb_id = (int(match[1], 16), int(match[2], 16))
        if usb_id not in ids:
            ids.append(usb_id)
    return tuple(ids), ids[0]


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def candidate_ports(board: Board | str, ports: Iterable[ListPortInfo] | None = None) -> list[ListPortInfo]:
    """The serial ports that can be ``board``'s console, matched by USB VID:PID.

    ``ports`` defaults to :func:`serial.tools.list_ports.comports`. The result is ordered by
    preference: the board's own probe first, then the order of its ``usb_ids``, then by device name.
    """
    ids, _own = board_usb_ids(board)
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    rank = {usb_id: i for i, usb_id in enumerate(ids)}
    found = [p for p in ports if p.vid is not None and p.pid is not None and (p.vid, p.pid) in rank]
    return sorted(found, key=lambda p: (rank[(p.vid, p.pid)], _natural(p.device)))


def _probe(port: ListPortInfo) -> str:
    return PROBE_NAMES.get((port.vid, port.pid)) or port.product or "USB serial"


def _describe(port: ListPortInfo) -> str:
    """``ST-LINK V3 (0483:374E, serial 0669FF...)``."""
    ident = _fmt_id((port.vid, port.pid))
    serial_no = f", serial {port.serial_number}" if port.serial_number else ""
    return f"{_probe(port)} ({ident}{serial_no})"


def _listing(ports: Sequence[ListPortInfo]) -> str:
    return ", ".join(f"{p.device} ({_probe(p)}, serial {p.serial_number or 'unknown'})" for p in ports)


def find_port(board: Board | str, ports: Iterable[ListPortInfo] | None = None,
              serial_number: str | None = None) -> tuple[str, str]:
    """The one serial port of ``board`` that is plugged in: ``(device path, why it was chosen)``.

    ``serial_number`` (the probe's USB serial number, case-insensitive) picks one of several.
    Several candidates of which exactly one is the board's own probe: that one is chosen.
    Raises :class:`NoBoardError` (exit 5) when none matches and :class:`MicrotError` when the choice
    is ambiguous; both name what was seen and what to pass.
    """
    board = _as_board(board)
    ids, own = board_usb_ids(board)
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    ports = list(ports)
    found = candidate_ports(board, ports)
    looked_for = ", ".join(_fmt_id(i) + (f" {PROBE_NAMES[i]}" if i in PROBE_NAMES else "") for i in ids)

    if serial_number is not None:
        wanted = serial_number.strip().lower()
        chosen = [p for p in found if (p.serial_number or "").lower() == wanted]
        if not chosen:
            seen = f"found: {_listing(found)}" if found else "no matching probe is connected"
            raise NoBoardError(f"no serial port of {board.id} with serial number {serial_number} ({seen})",
                               "check the serial number, plug in the board or pass --port")
        if len(chosen) == 1:
            return chosen[0].device, f"chose {chosen[0].device}: {_describe(chosen[0])}, by serial number"
        found = chosen  # one probe with several ports (e.g. dual VCP): let the user say which

    if not found:
        usb_seen = [p for p in ports if p.vid is not None]
        seen = ""
        if usb_seen:
            seen = "; other USB serial ports: " + ", ".join(f"{p.device} ({_fmt_id((p.vid, p.pid or 0))})"
                                                            for p in usb_seen)
        raise NoBoardError(f"no serial port of {board.id} found (looked for USB VID:PID {looked_for}{seen})",
                           "plug in the board or pass --port")
    if len(found) == 1:
        return found[0].device, f"chose {found[0].device}: {_describe(found[0])}"
    if own is not None and serial_number is None:
        mine = [p for p in found if (p.vid, p.pid) == own]
        if len(mine) == 1:
            others = [p for p in found if p is not mine[0]]
            return mine[0].device, (f"chose {mine[0].device}: {_describe(mine[0])}, the board's own probe "
                                    f"(also connected: {_listing(others)}; pass --port to use another)")
    raise MicrotError(f"{len(found)} serial ports could be {board.id}: {_listing(found)}",
                      "pass --port to choose one" if serial_number else "pass --port or --serial-number to choose one")


def _uucp_lock_owner(path: str) -> int | None:
    """The live process holding a UUCP lock file (LCK..ttyACM0) on ``path``, if any."""
    name = os.path.basename(path)
    for lock_dir in LOCK_DIRS:
        try:
            text = (lock_dir / f"LCK..{name}").read_bytes()
        except OSError:
            continue
        try:
            pid = int(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            pid = int.from_bytes(text[:4], "little") if len(text) == 4 else 0  # old binary format
        if pid <= 0 or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue  # stale lock
        except PermissionError:
            pass  # alive, another user's
        return pid
    return None


def _busy(path: str, why: str) -> DeviceError:
    return DeviceError(f"port {path} is busy ({why})",
                       "close the other program using it (e.g. `pio device monitor`)")


def _open_error(path: str, err: serial.SerialException) -> DeviceError:
    code = err.errno
    text = str(err)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return _busy(path, "another program holds its lock")
    if code == errno.EBUSY or "Access is denied" in text:  # Windows says "access denied" for a port in use
        return _busy(path, "another program has it open exclusively")
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "FileNotFoundError" in text:
        return DeviceError(f"serial port {path} does not exist",
                           "plug in the board, or leave out --port to find it")
    if code in (errno.EACCES, errno.EPERM):
        return DeviceError(f"no permission to open serial port {path}",
                           "add your user to the dialout (Debian/Ubuntu) or uucp (Arch) group and log in again")
    if "://" in path:
        return DeviceError(f"cannot open {path} ({text})", "check that the emulator is running and the URL is right")
    return DeviceError(f"cannot open serial port {path} ({text})", "check the cable and the port name")


@contextlib.contextmanager
def open_serial(path: str, baudrate: int = 115200, timeout: float = 0.1, *,
                dtr: bool | None = None, rts: bool | None = None) -> Iterator[serial.Serial]:
    """Open a board's serial port for the length of the ``with``; closed on exit.

    A device path is opened with ``exclusive=True`` (an advisory lock that other pyserial programs,
    another microt-deploy included, respect); a port that is locked or in exclusive use raises a
    one-line :class:`DeviceError`, as does a missing one. URLs (``socket://`` for an emulator) open
    as they are.

    ``dtr`` / ``rts`` (None: pyserial's default, asserted) are the modem-control states the port
    opens with: they are set before ``open()``, which applies them as it opens, so a board whose
    reset hangs on these lines is not pulsed by a set-after-open (see microt_deploy.link.connect).
    """
    if "://" in path:
        kwargs: dict = {}
    else:
        kwargs = {"exclusive": True}
        if os.name == "posix":
            owner = _uucp_lock_owner(path)
            if owner is not None:
                raise _busy(path, f"locked by process {owner}")
    try:
        port = serial.serial_for_url(path, baudrate=baudrate, timeout=timeout, do_not_open=True, **kwargs)
        if dtr is not None:
            port.dtr = dtr
        if rts is not None:
            port.rts = rts
        port.open()
    except serial.SerialException as err:
        raise _open_error(path, err) from None
    try:
        yield port
    finally:
        port.close()
