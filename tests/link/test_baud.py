"""[device] baud: the schema's range, each board's max_baud, the UART clock's divisor (one-line errors
naming the nearest working rate), and the rate rendered into the firmware."""

import dataclasses

import pytest

from microt_deploy.boards import load_board
from microt_deploy.config_schema import default_config, validate
from microt_deploy.errors import MicrotError
from microt_deploy.link.baud import DEFAULT_BAUD, check_baud
from microt_deploy.targets import render_firmware
from microt_deploy.targets.stm32.layer import layer_data
from tests.firmware.toy_model import write_toy_model


@pytest.mark.parametrize(("board_id", "max_baud"), [
    ("nucleo_l4r5zi", 2_000_000), ("disco_f746ng", 2_000_000), ("disco_l475vg_iot01a", 2_000_000),
    ("nucleo_h7a3zi_q", 15_000_000), ("esp32dev", 921_600), ("esp32-s3-devkitc-1", 3_000_000),
])
def test_every_real_board_names_its_bridges_max_baud(board_id, max_baud):
    board = load_board(board_id)
    assert board.extra["max_baud"] == max_baud
    assert check_baud(board, None) == DEFAULT_BAUD
    with pytest.raises(MicrotError) as err:
        check_baud(board, max_baud + 1)
    text = str(err.value)
    assert "\n" not in text and f"nearest working: {max_baud:,}" in text and board_id in text


def test_schema_accepts_baud_in_range_only():
    config = default_config()
    config["device"]["baud"] = 921600
    validate(config)
    for bad in (300, 20_000_000, "fast", 1.5):
        config["device"]["baud"] = bad
        with pytest.raises(MicrotError, match="device.baud"):
            validate(config)


def test_stm32_uart_clock_limits_name_the_nearest_working_rate():
    # nucleo_l4r5zi's LPUART1 at 120 MHz: BRR = 256 * f / baud needs 3 * baud <= f (40 Mbaud is far out).
    board = load_board("nucleo_l4r5zi")
    data = layer_data(board, 2_000_000)
    assert (data["baud"], data["brr"]) == (2_000_000, round(256 * 120e6 / 2_000_000))
    # disco_f746ng's USART1 at 108 MHz: 16x oversampling, BRR >= 16 -> at most 6.75 Mbaud.
    f746 = load_board("disco_f746ng")
    with pytest.raises(MicrotError) as err:
        layer_data(dataclasses.replace(f746, extra={**f746.extra, "max_baud": 15_000_000}), 10_000_000)
    text = str(err.value)
    assert "\n" not in text and "nearest working: 6,750,000" in text
    # A rate the whole-number divisor misses by more than 2 %: 108 MHz / 3,000,000 = 36 exactly is fine,
    # 108 MHz / 3,100,000 = 34.8 -> 35 -> 3,085,714 (0.5 %) is fine too; 6,500,000 -> 17 -> 6,352,941 (2.3 %) is not.
    assert layer_data(f746, 3_000_000)["brr"] == 36
    with pytest.raises(MicrotError, match="nearest working: 6,352,941"):
        layer_data(f746, 6_500_000)


def test_emulated_cmsdk_uart_divisor():
    board = load_board("qemu_mps2_an386")
    assert check_baud(board, 1_562_500) == 1_562_500  # 25 MHz / 16
    with pytest.raises(MicrotError, match="max_baud 1,562,500"):
        check_baud(board, 2_000_000)
    no_cap = dataclasses.replace(board, extra={k: v for k, v in board.extra.items() if k != "max_baud"})
    with pytest.raises(MicrotError, match="nearest working: 1,562,500"):
        check_baud(no_cap, 3_000_000)


def test_baud_is_rendered_into_the_firmware(tmp_path):
    compiled = write_toy_model(tmp_path / "compiled")
    board = load_board("qemu_mps2_an386")
    render_firmware(compiled, board, tmp_path / "fw", {"max_tasks": 1, "max_classes": 4, "baud": 921600})
    assert "#define MDT_BAUD 921600u" in (tmp_path / "fw" / "mdt_config.h").read_text()
    render_firmware(compiled, board, tmp_path / "fw2", {"max_tasks": 1, "max_classes": 4})
    assert "#define MDT_BAUD 115200u" in (tmp_path / "fw2" / "mdt_config.h").read_text()
    with pytest.raises(MicrotError, match="max_baud"):
        render_firmware(compiled, board, tmp_path / "fw3", {"max_tasks": 1, "max_classes": 4, "baud": 3_000_000})
    assert not (tmp_path / "fw3").exists()
