"""Writing a rig file from the probes plugged in (`microt-deploy rig FILE --generate`), like twister's
``--generate-hardware-map``, merged into what the file already says.

The serial ports whose USB VID:PID belongs to a board family we know (ST-LINK, the ESP32 USB-UART
bridges: :mod:`microt_deploy.link.ports`) are the rig's probes, identified by their USB serial
number (the entry's ``id``). An entry of the file with that id gets its ``serial``, ``product`` and
``connected: true`` updated and keeps everything else; a probe the file lacks gets a new entry whose
platform is guessed from the boards whose own probe has that VID:PID (with a ``notes`` line when
several could be meant); the file's entries whose probe is not plugged in are set ``connected:
false``. Emulated and host entries are left alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from serial.tools.list_ports_common import ListPortInfo

from microt_deploy.boards import Board, known_boards, load_board
from microt_deploy.errors import MicrotError
from microt_deploy.link.ports import FAMILY_USB_IDS, PROBE_NAMES, UsbId, board_usb_ids, candidate_ports
from microt_deploy.rig.hwmap import USB_FAMILIES, RigEntry, default_reset, load_rig, save_rig

BY_ID_DIR = Path("/dev/serial/by-id")
FAMILY_RUNNER = {"stm32": "openocd", "esp32": "esp32"}


@dataclass
class GenerateSummary:
    """What :func:`generate` did to the rig file at ``path``; ``entries`` is the file as written."""

    path: Path
    entries: list[RigEntry] = field(default_factory=list)
    added: list[RigEntry] = field(default_factory=list)
    updated: list[RigEntry] = field(default_factory=list)  # seen, and serial / product / connected changed
    unchanged: list[RigEntry] = field(default_factory=list)  # seen, nothing to change
    disconnected: list[RigEntry] = field(default_factory=list)  # newly marked connected: false
    ignored: list[str] = field(default_factory=list)  # USB serial ports of no board family we know
    created: bool = False  # the file did not exist before


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _usb_boards() -> list[tuple[Board, tuple[UsbId, ...], UsbId | None]]:
    """Every board found by a USB probe, with its accepted ids and its own probe's id."""
    found = []
    for board_id in known_boards():
        board = load_board(board_id)
        try:
            ids, own = board_usb_ids(board)
        except MicrotError:
            continue  # emulated / host: no port to look for
        found.append((board, ids, own))
    return found


def _fmt(usb_id: UsbId) -> str:
    return f"{usb_id[0]:04X}:{usb_id[1]:04X}"


def by_id_links(by_id_dir: Path | str = BY_ID_DIR) -> dict[str, str]:
    """``{real device path: persistent link}`` from the symbolic links in ``by_id_dir``
    (``/dev/serial/by-id``); empty where the folder is missing."""
    links: dict[str, str] = {}
    try:
        names = sorted(os.listdir(by_id_dir))
    except OSError:
        return links
    for name in names:
        link = Path(by_id_dir) / name
        if link.is_symlink():
            links.setdefault(os.path.realpath(link), str(link))
    return links


def _guess(usb_id: UsbId, boards: list[tuple[Board, tuple[UsbId, ...], UsbId | None]]) -> tuple[Board, str | None]:
    """The board a new probe most likely belongs to, and a note when it is a guess among several."""
    own = [b for b, _ids, mine in boards if mine == usb_id]
    accepted = [b for b, ids, mine in boards if usb_id in ids and mine != usb_id]
    candidates = own or accepted  # the boards it is soldered on, else every board that accepts it
    if len(own) == 1:
        return own[0], None
    probe = PROBE_NAMES.get(usb_id, "USB serial")
    others = ", ".join(b.id for b in candidates[1:])
    note = (f"platform guessed from USB id {_fmt(usb_id)} ({probe}); it could also be {others}: "
            "check it and correct platform")
    return candidates[0], note


def generate(path: Path | str, persistent: bool = False, ports: Iterable[ListPortInfo] | None = None,
             by_id_dir: Path | str = BY_ID_DIR) -> GenerateSummary:
    """Scan the serial ports (``ports``: default :func:`serial.tools.list_ports.comports`) and merge
    the probes of our board families into the rig file at ``path`` (created if missing); see the module
    docstring. ``persistent`` writes each port's ``/dev/serial/by-id/...`` link (found in
    ``by_id_dir``) instead of its ``/dev/ttyACMn`` name. Returns what was added, updated and marked
    disconnected."""
    path = Path(path)
    created = not path.exists()
    entries = [] if created else load_rig(path)
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    ports = list(ports)
    boards = _usb_boards()
    family_ids = {i for ids in FAMILY_USB_IDS.values() for i in ids}
    mine = {id(p) for board, _ids, _own in boards for p in candidate_ports(board, ports)}
    ours = sorted((p for p in ports if id(p) in mine or (p.vid is not None and (p.vid, p.pid) in family_ids)),
                  key=lambda p: _natural(p.device))
    summary = GenerateSummary(path=path, created=created)
    summary.ignored = [f"{p.device} ({_fmt((p.vid, p.pid or 0))})" for p in ports
                       if p.vid is not None and p not in ours]
    links = by_id_links(by_id_dir) if persistent else {}

    def port_path(port: ListPortInfo) -> str:
        return links.get(os.path.realpath(port.device), port.device) if persistent else port.device

    # One probe can have several ports (an ST-LINK V3's two virtual COM ports): the first one counts.
    probes: list[ListPortInfo] = []
    seen_serials: set[str] = set()
    for port in ours:
        key = (port.serial_number or "").strip().lower()
        if key and key in seen_serials:
            continue
        if key:
            seen_serials.add(key)
        probes.append(port)

    by_id = {e.id.lower(): e for e in entries if e.id}
    present_paths = {os.path.realpath(p.device) for p in ours}
    touched: set[int] = set()
    for port in probes:
        serial_no = (port.serial_number or "").strip() or None
        new_path = port_path(port)
        entry = by_id.get(serial_no.lower()) if serial_no else None
        if entry is None and serial_no is None:  # no USB serial number: match by port instead
            entry = next((e for e in entries if e.id is None and e.serial
                          and os.path.realpath(e.serial) == os.path.realpath(port.device)), None)
        if entry is None:
            board, note = _guess((port.vid, port.pid), boards)
            entry = RigEntry(platform=board.id, board=board.id, id=serial_no, product=port.product,
                             runner=FAMILY_RUNNER.get(board.family, "unknown"), serial=new_path, connected=True,
                             notes=note, reset=default_reset(board))
            entries.append(entry)
            summary.added.append(entry)
            touched.add(id(entry))
            continue
        touched.add(id(entry))
        changed = False
        same_port = bool(entry.serial) and os.path.realpath(entry.serial) == os.path.realpath(port.device)
        if not same_port or (persistent and entry.serial != new_path):
            entry.serial, changed = new_path, True
        if port.product and entry.product != port.product:
            entry.product, changed = port.product, True
        if not entry.connected:
            entry.connected, changed = True, True
        (summary.updated if changed else summary.unchanged).append(entry)

    for entry in entries:
        if id(entry) in touched or not entry.connected:
            continue
        if entry.id is not None:
            entry.connected = False
            summary.disconnected.append(entry)
        elif (load_board(entry.board).family in USB_FAMILIES and entry.serial
              and os.path.realpath(entry.serial) not in present_paths):
            entry.connected = False
            summary.disconnected.append(entry)
    save_rig(path, entries)
    summary.entries = entries
    return summary


__all__ = ["BY_ID_DIR", "GenerateSummary", "by_id_links", "generate"]
