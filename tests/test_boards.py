"""Board data files load, and the energy model does what the report says it does."""

from __future__ import annotations

import pytest

from microt_deploy.boards import known_boards, load_board
from microt_deploy.errors import MicrotError


def test_every_board_file_loads_with_a_memory_budget() -> None:
    boards = known_boards()
    assert {"qemu_mps2_an386", "host", "nucleo_l4r5zi"} <= set(boards)
    for board_id in boards:
        board = load_board(board_id)
        assert board.id == board_id
        assert board.active_mw > 0 and board.clock_hz > 0
        if board.run != "host":
            assert board.flash_bytes > 0 and board.ram_bytes > 0


def test_emulated_board_has_the_l4r5zi_budget() -> None:
    qemu, l4 = load_board("qemu_mps2_an386"), load_board("nucleo_l4r5zi")
    assert (qemu.flash_bytes, qemu.ram_bytes) == (l4.flash_bytes, l4.ram_bytes) == (2 * 1024 * 1024, 640 * 1024)
    assert qemu.counter_unit == "instructions"


def test_energy_is_counts_over_clock_times_power() -> None:
    board = load_board("nucleo_l4r5zi")
    # 120 M cycles at 120 MHz is one second: energy in mJ equals the power in mW.
    assert board.energy_mj(120_000_000) == pytest.approx(board.active_mw)
    assert board.latency_ms(120_000) == pytest.approx(1.0)


def test_unknown_board_lists_known() -> None:
    with pytest.raises(MicrotError, match="use one of: .*nucleo_l4r5zi"):
        load_board("stm32_unknown")
