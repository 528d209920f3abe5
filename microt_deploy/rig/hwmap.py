"""Rig files: the boards of a CI rig (board farm), in the shape of Zephyr twister's hardware map.

A rig file is a YAML list with one entry per board::

    - connected: true
      id: 0669FF555052836687031752        # USB serial number of the probe
      platform: nucleo_l4r5zi             # Zephyr board name, or one of our board ids
      product: STLINK-V3
      runner: openocd
      serial: /dev/ttyACM0
      # ours (twister ignores them):
      reset: probe                        # probe | dtr-rts | esptool | none
      timeout_multiplier: 2.0
      gates: {accuracy: {min: 0.9}}       # kept raw here; checked by the gates code

Every twister key is read; keys neither twister's nor ours are kept in :attr:`RigEntry.extra` and
written back, in the file's order, by :func:`save_rig` (YAML comments are not kept). A malformed
file raises :class:`~microt_deploy.errors.RigError` (exit 4), one line naming the file, the entry,
the field and the fix. See docs/rig.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from microt_deploy.boards import Board, board_for_platform, known_boards, load_board
from microt_deploy.errors import MicrotError, NoBoardError, RigError

RESETS = ("probe", "dtr-rts", "esptool", "none")
FAMILY_RESET = {"stm32": "probe", "esp32": "dtr-rts"}  # everything else (emulated, host): none
USB_FAMILIES = ("stm32", "esp32")  # families whose boards are real, found by USB probe

# twister's keys, in the (alphabetical) order twister writes them; then ours.
TWISTER_KEYS = ("baud", "connected", "fixtures", "flash_before", "flash_timeout", "id", "notes", "platform",
                "post_flash_script", "post_script", "pre_script", "product", "runner", "runner_params", "serial",
                "serial_pty")
OUR_KEYS = ("board", "reset", "timeout_multiplier", "gates")


@dataclass
class RigEntry:
    """One board of a rig: twister's hardware-map fields, then ours.

    ``platform`` is kept as written (a name, several names separated by spaces, or a list);
    ``board`` is our board id it resolves to. ``connected`` and ``reset`` left None take the board's
    defaults (:func:`default_connected`, :func:`default_reset`). ``extra`` holds the keys that are neither twister's
    nor ours. ``source`` is the mapping as read from the file (None for a new entry): :func:`save_rig`
    keeps its key order and the spelling of unchanged values.
    """

    platform: str | list[str]
    board: str
    id: str | None = None
    product: str | None = None
    runner: str | None = None
    serial: str | None = None
    baud: int | None = None
    connected: bool = None  # type: ignore[assignment]  # None: the board's default (default_connected)
    fixtures: list[Any] = field(default_factory=list)
    flash_timeout: Any = None
    flash_before: Any = None
    runner_params: Any = None
    pre_script: Any = None
    post_script: Any = None
    post_flash_script: Any = None
    serial_pty: Any = None
    notes: Any = None
    reset: str = None  # type: ignore[assignment]  # None: the board family's default (default_reset)
    gates: dict[str, Any] = field(default_factory=dict)
    timeout_multiplier: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.connected is None:
            self.connected = default_connected(self.board)
        if self.reset is None:
            self.reset = default_reset(self.board)

    @property
    def platforms(self) -> list[str]:
        """The platform names of the entry (twister allows several, for variants of one board)."""
        return _platform_names(self.platform)

    def describe(self) -> str:
        """``0669FF... (nucleo_l4r5zi)`` or ``qemu_mps2_an386 (no id)``, for messages."""
        return f"{self.id} ({self.board})" if self.id else f"{self.board} (no id)"


def default_reset(board: Board | str) -> str:
    """How a board of this family is reset when the entry does not say: stm32 -> probe,
    esp32 -> dtr-rts, emulated and host boards -> none."""
    board = load_board(board) if isinstance(board, str) else board
    return FAMILY_RESET.get(board.family, "none")


def default_connected(board: Board | str) -> bool:
    """``connected`` when the entry does not say: false for real boards (as twister), true for
    emulated and host boards (there is nothing to plug in)."""
    board = load_board(board) if isinstance(board, str) else board
    return board.family not in USB_FAMILIES and "usb_ids" not in board.extra


# --- reading -----------------------------------------------------------------------------------------


def _platform_names(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    return []


def _where(path: Path, index: int, raw: Any) -> str:
    where = f"{path}: entry {index}"
    if isinstance(raw, dict) and isinstance(raw.get("id"), (str, int)) and raw.get("id") not in ("", True, False):
        where += f" (id {raw['id']})"
    elif isinstance(raw, dict) and isinstance(raw.get("platform"), str):
        where += f" (platform {raw['platform']})"
    return where


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entry(path: Path, index: int, raw: Any) -> RigEntry:
    """One validated entry; ``index`` counts from 1."""
    if not isinstance(raw, dict):
        raise RigError(f"{path}: entry {index} is {_kind(raw)}, not a mapping",
                       "write each entry as '- platform: NAME' followed by indented 'key: value' lines")
    where = _where(path, index, raw)

    def bad(key: str, problem: str, fix: str) -> RigError:
        return RigError(f"{where}: {key} {problem}", fix)

    raw_id = raw.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        raise bad("id", f"is {raw_id!r}, not a USB serial number", "write it as text in quotes, e.g. id: '0669FF5550'")
    entry_id = None if raw_id in (None, "") else str(raw_id).strip()

    if "platform" not in raw or raw["platform"] in (None, "", []):
        raise RigError(f"{where}: platform is missing",
                       f"add 'platform: NAME' with a Zephyr board name or one of {', '.join(known_boards())}")
    platform = raw["platform"]
    names = _platform_names(platform)
    if not isinstance(platform, (str, list)) or not names or not all(names):
        raise bad("platform", f"is {platform!r}, not a board name",
                  "write a Zephyr board name, several separated by spaces, or a list of them")
    resolved: dict[str, str] = {}
    unknown: list[str] = []
    for name in names:
        try:
            resolved[name] = board_for_platform(name).id
        except MicrotError:
            unknown.append(name)

    explicit = raw.get("board")
    if explicit is not None:
        if not isinstance(explicit, str) or explicit not in known_boards():
            raise bad("board", f"is {explicit!r}, not a board microt-deploy knows",
                      f"use one of {', '.join(known_boards())}, or leave it out to take it from platform")
        other = sorted({b for b in resolved.values() if b != explicit})
        if other:
            raise bad("board", f"is {explicit} but platform {platform!r} means {', '.join(other)}",
                      "leave board out, or correct platform")
        board_id = explicit
    else:
        if unknown:
            raise bad("platform", f"'{unknown[0]}' is not a board microt-deploy knows",
                      f"use one of our board ids ({', '.join(known_boards())}) or a Zephyr name listed in "
                      "their zephyr_platforms (boards/*.toml), or add 'board: ID' to the entry")
        boards = sorted(set(resolved.values()))
        if len(boards) > 1:
            raise bad("platform", f"{platform!r} names different boards ({', '.join(boards)})",
                      "list the variants of one board in an entry, and give each board its own entry")
        board_id = boards[0]
    board = load_board(board_id)

    connected = raw.get("connected", default_connected(board))
    if not isinstance(connected, bool):
        raise bad("connected", f"is {connected!r}, not true/false", "write connected: true or connected: false")

    baud = raw.get("baud")
    if baud is not None and (not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0):
        raise bad("baud", f"is {baud!r}, not a positive whole number", "write e.g. baud: 115200")

    multiplier = raw.get("timeout_multiplier", 1.0)
    if not _is_number(multiplier) or not math.isfinite(multiplier) or multiplier <= 0:
        raise bad("timeout_multiplier", f"is {multiplier!r}, not a number above 0",
                  "write e.g. timeout_multiplier: 2.0 (1.0 keeps the timeouts as they are)")

    reset = raw.get("reset", default_reset(board))
    if reset not in RESETS:
        raise bad("reset", f"is {reset!r}, not one of {', '.join(RESETS)}",
                  f"write e.g. reset: {default_reset(board)} (the default for {board.family} boards)")

    gates = raw.get("gates", {})
    if not isinstance(gates, dict):
        raise bad("gates", f"is {_kind(gates)}, not a mapping", "write gates as indented 'name: value' lines")

    for key in ("serial", "runner", "product"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise bad(key, f"is {value!r}, not text", f"write {key} as text, in quotes if needed")

    fixtures = raw.get("fixtures", [])
    if fixtures is None:
        fixtures = []
    if not isinstance(fixtures, list):
        raise bad("fixtures", f"is {_kind(fixtures)}, not a list",
                  "write fixtures as a list, e.g. fixtures: [gpio_loopback]")

    known = set(TWISTER_KEYS) | set(OUR_KEYS)
    return RigEntry(
        platform=platform,
        board=board_id,
        id=entry_id,
        product=raw.get("product"),
        runner=raw.get("runner"),
        serial=raw.get("serial"),
        baud=baud,
        connected=connected,
        fixtures=fixtures,
        flash_timeout=raw.get("flash_timeout"),
        flash_before=raw.get("flash_before"),
        runner_params=raw.get("runner_params"),
        pre_script=raw.get("pre_script"),
        post_script=raw.get("post_script"),
        post_flash_script=raw.get("post_flash_script"),
        serial_pty=raw.get("serial_pty"),
        notes=raw.get("notes"),
        reset=reset,
        gates=gates,
        timeout_multiplier=float(multiplier),
        extra={k: v for k, v in raw.items() if k not in known},
        source=dict(raw),
    )


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def parse_rig(text: str, path: Path | str = "<rig>") -> list[RigEntry]:
    """The entries of a rig file's text (``path`` only names it in errors)."""
    path = Path(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or type(err).__name__
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise RigError(f"{path}: not valid YAML ({problem}{at})",
                       "fix the YAML syntax: a rig file is a list of '- key: value' entries") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise RigError(f"{path}: the file is {_kind(data)}, not a list of entries",
                       "write one '- platform: NAME' entry per board, as twister's hardware map")
    entries = [_entry(path, i, raw) for i, raw in enumerate(data, start=1)]
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries, start=1):
        if entry.id is None:
            continue
        key = entry.id.lower()
        if key in seen:
            raise RigError(f"{path}: entry {i} (id {entry.id}): id {entry.id} is also entry {seen[key]}'s",
                           "list each probe once; for variants of one board put their names in one entry's "
                           "platform, separated by spaces")
        seen[key] = i
    return entries


def load_rig(path: Path | str) -> list[RigEntry]:
    """The entries of the rig file at ``path`` (an empty file has none)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MicrotError(f"rig file {path} does not exist",
                          "check the path, or create it with `microt-deploy rig FILE --generate`") from None
    except IsADirectoryError:
        raise MicrotError(f"rig file {path} is a folder", "name a YAML file") from None
    except OSError as err:
        raise MicrotError(f"cannot read rig file {path} ({err.strerror})",
                          "check the path and its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RigError(f"{path}: not a text file (not UTF-8)", "name a YAML hardware map") from None
    return parse_rig(text, path)


# --- writing -----------------------------------------------------------------------------------------


def _absent_value(entry: RigEntry, key: str) -> Any:
    """What ``key`` reads as when the file leaves it out (then :func:`save_rig` leaves it out too)."""
    if key == "connected":
        return default_connected(entry.board)
    if key == "reset":
        return default_reset(entry.board)
    if key == "board":
        try:
            names = entry.platforms
            boards = {board_for_platform(n).id for n in names}
        except MicrotError:
            return None
        return entry.board if boards == {entry.board} else None
    return {"timeout_multiplier": 1.0, "gates": {}, "fixtures": []}.get(key)


def _same(key: str, raw: Any, value: Any) -> bool:
    if key == "id" and raw is not None and value is not None:
        return str(raw).strip() == value
    return type(raw) is type(value) and raw == value or (_is_number(raw) and _is_number(value) and raw == value)


def entry_to_dict(entry: RigEntry) -> dict[str, Any]:
    """The mapping :func:`save_rig` writes for ``entry``: the file's keys in the file's order (unchanged
    values spelled as they were), then new keys, twister's then ours, then new unknown keys."""
    source = entry.source or {}
    out: dict[str, Any] = {}
    fields = set(TWISTER_KEYS) | set(OUR_KEYS)
    for key, raw in source.items():
        if key in fields:
            value = getattr(entry, key)
            out[key] = raw if _same(key, raw, value) else value
        elif key in entry.extra:
            out[key] = entry.extra[key]
    for key in (*TWISTER_KEYS, *OUR_KEYS):
        if key in out:
            continue
        value = getattr(entry, key)
        if value != _absent_value(entry, key):
            out[key] = value
    for key, value in entry.extra.items():
        out.setdefault(key, value)
    return out


def dump_rig(entries: Sequence[RigEntry]) -> str:
    """The YAML text of a rig file holding ``entries``."""
    data = [entry_to_dict(e) for e in entries]
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def save_rig(path: Path | str, entries: Sequence[RigEntry]) -> None:
    """Write ``entries`` to the rig file at ``path`` atomically (a temporary file renamed over it):
    unknown keys and the key order of entries read from a file are kept; YAML comments are not."""
    from microt_deploy.atomic import write_text

    write_text(Path(path), dump_rig(entries), fix="name a new or regular rig file")


# --- choosing ----------------------------------------------------------------------------------------


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def select(entries: Sequence[RigEntry], boards: str | Iterable[str] | None = None,
           serial_numbers: str | Iterable[str] | None = None) -> list[RigEntry]:
    """The connected entries that match: by our board id or a platform name (``boards``; a Zephyr
    name is also resolved to our board), and by the probe's USB serial number (``serial_numbers``,
    the entry's ``id``); case-insensitive; None matches all. Nothing matching raises
    :class:`NoBoardError` (exit 5) naming what was asked and what the rig has."""
    board_names = _as_list(boards)
    serials = _as_list(serial_numbers)
    wanted_boards: set[str] | None = None
    if board_names is not None:
        wanted_boards = {n.strip().lower() for n in board_names}
        for name in board_names:
            try:
                wanted_boards.add(board_for_platform(name).id.lower())
            except MicrotError:
                pass
    wanted_serials = None if serials is None else {s.strip().lower() for s in serials}

    def matches(entry: RigEntry) -> bool:
        if not entry.connected:
            return False
        if wanted_boards is not None:
            names = {entry.board.lower(), *(p.lower() for p in entry.platforms)}
            if not names & wanted_boards:
                return False
        if wanted_serials is not None and (entry.id or "").lower() not in wanted_serials:
            return False
        return True

    chosen = [e for e in entries if matches(e)]
    if chosen:
        return chosen
    asked = []
    if board_names is not None:
        asked.append(f"board {', '.join(board_names)}")
    if serials is not None:
        asked.append(f"serial number {', '.join(serials)}")
    asked_text = " and ".join(asked) if asked else "any board"
    if entries:
        has = ", ".join(f"{e.describe()} {'connected' if e.connected else 'not connected'}" for e in entries)
    else:
        has = "no entries"
    raise NoBoardError(f"no connected board of the rig matches {asked_text} (the rig has: {has})",
                       "plug the board in and run `microt-deploy rig RIGFILE --generate`, or ask for one the rig has")
