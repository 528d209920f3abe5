"""Board data files (``boards/*.toml``) -> :class:`Board` objects, and lookup by id."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from microt_deploy import resources
from microt_deploy.errors import MicrotError

BOARDS_DIR = resources.path("boards")
STATUSES = ("ci-host", "ci-emulated", "ci-built", "never-built")


@dataclass(frozen=True)
class Board:
    """One target board: its CPU, memory budget, how it is run and its power model."""

    id: str
    name: str
    family: str
    arch: str
    cpu: str
    cpu_flags: tuple[str, ...]
    flash_bytes: int
    ram_bytes: int
    clock_hz: int
    counter_unit: str
    run: str
    active_mw: float
    cpi: float
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """What CI verifies of this board (the board file's ``status``; the tests pick their boards
        by it, so a board that claims a status is exercised at that level)."""
        return str(self.extra.get("status", "never-built"))

    @property
    def verified(self) -> str:
        """The status in words, for `microt-deploy boards`."""
        machine = self.extra.get("qemu_machine", "")
        return {
            "ci-host": "runs end to end in CI (built for this machine)",
            "ci-emulated": f"runs end to end in CI, emulated (QEMU {machine})",
            "ci-built": "compiled and linked in CI with the project's flags; never run here (no board)",
            "never-built": "never built here (no toolchain for it); the project is rendered only",
        }.get(self.status, f"unknown status {self.status!r}")

    def energy_mj(self, counts: float) -> float:
        """Estimated energy (mJ) of ``counts`` counter units (instructions or cycles) at active power."""
        if self.counter_unit == "ns":
            seconds = counts * 1e-9
        else:
            seconds = counts * self.cpi / self.clock_hz
        return seconds * self.active_mw

    def latency_ms(self, counts: float) -> float:
        """Estimated latency (ms) of ``counts`` counter units on this board's clock."""
        if self.counter_unit == "ns":
            return counts * 1e-6
        return counts * self.cpi / self.clock_hz * 1e3


def known_boards() -> list[str]:
    """Ids of all boards that have a data file."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load_board(board_id: str) -> Board:
    """Load a board by id; an unknown id raises an error that lists the known ones."""
    path = BOARDS_DIR / f"{board_id}.toml"
    if not path.is_file():
        raise MicrotError(
            f"unknown board '{board_id}'",
            f"use one of: {', '.join(known_boards())}",
        )
    data = tomllib.loads(path.read_text())
    if data.get("status", "never-built") not in STATUSES:
        raise MicrotError(f"boards/{board_id}.toml: status {data.get('status')!r} is not one of {', '.join(STATUSES)}",
                          "fix the board file")
    power = data.pop("power", {})
    known = {f for f in Board.__dataclass_fields__ if f not in ("active_mw", "cpi", "extra", "cpu_flags")}
    core = {k: data.pop(k) for k in list(data) if k in known}
    return Board(
        cpu_flags=tuple(data.pop("cpu_flags", ())),
        active_mw=float(power.get("active_mw", 0.0)),
        cpi=float(power.get("cpi", 1.0)),
        extra=data,
        **core,
    )


def board_for_platform(name: str) -> Board:
    """The board a platform name means: one of our board ids, or a Zephyr board name listed in a board
    file's ``zephyr_platforms`` (case-insensitive). A hardware-model name with slashes
    (``nucleo_l4r5zi/stm32l4r5xx``) matches whole first, then by its first component. An unknown name
    raises an error listing the known ids."""
    text = str(name).strip().lower()
    known = known_boards()
    aliases: dict[str, str] = {}
    for board_id in known:
        aliases.setdefault(board_id.lower(), board_id)
    for board_id in known:
        for alias in load_board(board_id).extra.get("zephyr_platforms", ()):
            aliases.setdefault(str(alias).strip().lower(), board_id)
    for candidate in (text, text.split("/")[0]):
        if candidate in aliases:
            return load_board(aliases[candidate])
    raise MicrotError(f"unknown platform '{name}'",
                      f"use one of our board ids ({', '.join(known)}) or a Zephyr name listed in their "
                      "zephyr_platforms")
