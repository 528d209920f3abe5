"""The protocol link's speed: ``[device] baud`` checked against the board (its USB-serial bridge's
``max_baud`` in boards/<id>.toml, and the divisor its UART clock allows) at build time, so that a
rate the board cannot make is a one-line error naming the nearest one it can."""

from __future__ import annotations

from typing import Any

from microt_deploy.errors import MicrotError

DEFAULT_BAUD = 115200
# A UART receiver tolerates a few per cent of rate mismatch in total; keep each side within 2 %.
TOLERANCE = 0.02
CMSDK_UART_HZ = 25_000_000  # the mps2 boards' UART clock (mdt_board_cmsdk.c: BAUDDIV = 25 MHz / baud)
CMSDK_MIN_DIV = 16  # the CMSDK UART needs BAUDDIV >= 16


def nearest_divided(clock_hz: int, baud: int, lo: int, hi: int, scale: int = 1) -> tuple[int, int]:
    """(divisor, the rate it gives) nearest to ``baud`` for ``rate = scale * clock / divisor`` with
    lo <= divisor <= hi."""
    div = min(max(round(scale * clock_hz / baud), lo), hi)
    return div, round(scale * clock_hz / div)


def check_divided(what: str, clock_hz: int, baud: int, lo: int, hi: int, fix: str, scale: int = 1) -> int:
    """The divisor for ``baud``; a MicrotError naming the nearest rate that works when none is within
    TOLERANCE."""
    div, got = nearest_divided(clock_hz, baud, lo, hi, scale)
    if abs(got - baud) > TOLERANCE * baud:
        raise MicrotError(f"{what}: {baud:,} baud is not possible from a {clock_hz:,} Hz UART clock "
                          f"(nearest working: {got:,} baud)", f"set [device] baud = {got}{fix}")
    return div


def check_baud(board: Any, baud: int | None) -> int:
    """The link speed for ``board`` (DEFAULT_BAUD when ``baud`` is None); refuses one above the board's
    ``max_baud`` or one the emulated CMSDK UART cannot divide to. STM32 boards' UART clocks are
    checked by their layer (microt_deploy/targets/stm32/layer.py), which knows the clock tree."""
    if baud is None:
        return DEFAULT_BAUD
    baud = int(baud)
    extra = getattr(board, "extra", {}) or {}
    max_baud = extra.get("max_baud")
    if max_baud is not None and baud > int(max_baud):
        raise MicrotError(f"[device] baud = {baud:,} is above {board.id}'s max_baud {int(max_baud):,} "
                          f"(nearest working: {int(max_baud):,})", f"set [device] baud <= {int(max_baud)}")
    if getattr(board, "family", "") == "cmsdk":
        check_divided(board.id, CMSDK_UART_HZ, baud, CMSDK_MIN_DIV, 0xFFFFF, "")
    return baud
