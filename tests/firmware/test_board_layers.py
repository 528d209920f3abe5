"""The stm32 and esp32 board layers and the PlatformIO projects they are rendered into (layout,
per-board data, refusals); the builds and PlatformIO itself are tested in tests/targets."""

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.pio_project import stm32_clock_hz, stm32_layer_data
from microt_deploy.firmware.render import render_firmware
from tests.firmware.toy_model import write_toy_model

STM32 = {
    "nucleo_l4r5zi": ("stm32l4xx_hal.h", "LPUART1", "GPIO_AF8_LPUART1", ("G", 7), ("G", 8), True),
    "nucleo_h7a3zi_q": ("stm32h7xx_hal.h", "USART3", "GPIO_AF7_USART3", ("D", 8), ("D", 9), False),
    "disco_f746ng": ("stm32f7xx_hal.h", "USART1", "GPIO_AF7_USART1", ("A", 9), ("B", 7), False),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return write_toy_model(tmp_path_factory.mktemp("toy") / "compiled")


@pytest.mark.parametrize("board_id", sorted(STM32))
def test_stm32_data_gives_the_boards_clock_and_vcp_pins(board_id):
    board = load_board(board_id)
    data = stm32_layer_data(board)
    assert stm32_clock_hz(data) == board.clock_hz
    hal, uart, af, tx, rx, vddio2 = STM32[board_id]
    assert (data["hal_header"], data["uart"], data["uart_af"], data["tx"], data["rx"], data["vddio2"]) == (
        hal, uart, af, tx, rx, vddio2)


@pytest.mark.parametrize("board_id", sorted(STM32))
def test_stm32_project_layout_and_rendered_header(compiled, tmp_path, board_id):
    board = load_board(board_id)
    fw = tmp_path / "fw"
    config = render_firmware(compiled, board, fw, {"max_tasks": 2, "max_classes": 8})
    hal, uart, af, (tx_port, tx_pin), (rx_port, rx_pin), vddio2 = STM32[board_id]
    header = (fw / "src" / "mdt_board_stm32.h").read_text()
    for line in (f'#include "{hal}"', f"#define MDT_UART_INSTANCE {uart}", f"#define MDT_UART_AF {af}",
                 f"#define MDT_TX_PORT GPIO{tx_port}", f"#define MDT_TX_PIN GPIO_PIN_{tx_pin}",
                 f"#define MDT_RX_PORT GPIO{rx_port}", f"#define MDT_RX_PIN GPIO_PIN_{rx_pin}",
                 f"#define MDT_STM32_VDDIO2 {int(vddio2)}",
                 f"#define MDT_UART_CLK_ENABLE() __HAL_RCC_{uart}_CLK_ENABLE()"):
        assert line in header
    ini = (fw / "platformio.ini").read_text()
    assert f"[env:{board_id}]" in ini and "framework = stm32cube" in ini and "platform = ststm32" in ini
    assert "build_src_flags = -std=c99 -Wall -Wextra -Werror" in ini and "monitor_speed = 115200" in ini
    # The HAL computes baud divisors from HSE_VALUE: boards clocked from HSE must pass it.
    assert ("-DHSE_VALUE=" in ini) == (board_id != "nucleo_l4r5zi")
    src = {p.name for p in (fw / "src").iterdir()}
    assert {"mdt_app.c", "mdt_protocol.c", "mdt_model.c", "mdt_board_stm32.c", "mdt_config.h", "mdt_graphs.h"} <= src
    assert not any("cmsdk" in name or "host" in name for name in src)  # one board layer only
    assert f"#define MDT_MAX_SLOTS {config.max_slots}u" in (fw / "src" / "mdt_config.h").read_text()
    ld = (fw / "fit" / "link.ld").read_text()  # the fit check links against the board's own budget
    assert f"LENGTH = {board.flash_bytes}" in ld and f"LENGTH = {board.ram_bytes}" in ld


def test_board_layers_name_no_board_in_the_portable_app():
    from microt_deploy.firmware.render import TEMPLATES

    app = "".join(p.read_text() for p in (TEMPLATES / "app").glob("*.[ch]"))
    assert not re.search(r"stm32|esp32|HAL_|uart_driver", app, re.IGNORECASE)
    stm32 = (TEMPLATES / "boards" / "stm32" / "mdt_board_stm32.c").read_text()
    assert "malloc" not in stm32 and "DWT->CYCCNT" in stm32 and "HAL_PWREx_EnableVddIO2" in stm32
    assert not re.search(r"LPUART1|USART3|GPIOG|PG7", stm32)  # per-board values come from the data file
    esp32 = (TEMPLATES / "boards" / "esp32" / "mdt_board_esp32.c").read_text()
    assert "uart_driver_install(MDT_UART" in esp32 and "esp_cpu_get_cycle_count" in esp32
    assert "void app_main(void)" in esp32 and "malloc" not in esp32


@pytest.mark.parametrize("board_id", ["esp32dev", "esp32-s3-devkitc-1"])
def test_esp32_project_is_an_idf_project_with_a_quiet_uart0(compiled, tmp_path, board_id):
    board = load_board(board_id)
    fw = tmp_path / "fw"
    render_firmware(compiled, board, fw, {})
    assert "framework = espidf" in (fw / "platformio.ini").read_text()
    assert "project.cmake" in (fw / "CMakeLists.txt").read_text()
    component = (fw / "src" / "CMakeLists.txt").read_text()
    assert "mdt_board_esp32.c" in component and "mdt_app.c" in component and "-std=c99;-O2;-Wall;-Wextra;-Werror" \
        in component
    sdk = (fw / "sdkconfig.defaults").read_text()
    assert "CONFIG_ESP_CONSOLE_NONE=y" in sdk and "CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_240=y" in sdk
    assert "CONFIG_ESP_MAIN_TASK_STACK_SIZE=16384" in sdk


def test_bad_board_data_is_refused_before_anything_is_written(compiled, tmp_path):
    board = load_board("nucleo_l4r5zi")
    stm32 = dict(board.extra["stm32"], pll=dict(board.extra["stm32"]["pll"], n=70))
    wrong_clock = dataclasses.replace(board, extra=dict(board.extra, stm32=stm32))
    with pytest.raises(MicrotError, match=r"the PLL gives 140,000,000 Hz, clock_hz says 120,000,000"):
        render_firmware(compiled, wrong_clock, tmp_path / "a", {})
    bad_pin = dataclasses.replace(board, extra=dict(board.extra, stm32=dict(board.extra["stm32"], tx="G7")))
    with pytest.raises(MicrotError, match=r"pin 'G7' is not like PG7"):
        render_firmware(compiled, bad_pin, tmp_path / "a", {})
    no_table = dataclasses.replace(board, extra={k: v for k, v in board.extra.items() if k != "stm32"})
    with pytest.raises(MicrotError, match=r"no complete \[stm32\] table"):
        render_firmware(compiled, no_table, tmp_path / "a", {})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_pio_option_only_for_the_emulated_board(compiled, tmp_path):
    with pytest.raises(MicrotError, match="PlatformIO option is for the emulated board"):
        render_firmware(compiled, load_board("host"), tmp_path / "h", {"pio": True})


def test_emulated_project_is_registry_free(compiled, tmp_path):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.fail("arm-none-eabi-gcc is required (apt-get install gcc-arm-none-eabi)")
    fw = tmp_path / "fw"
    render_firmware(compiled, load_board("qemu_mps2_an386"), fw, {"pio": True})
    ini = (fw / "platformio.ini").read_text()
    assert "platform = file://${PROJECT_DIR}/pio/platform" in ini
    assert "platformio/toolchain-gccarmnoneeabi@symlink://${PROJECT_DIR}/pio/toolchain" in ini
    gcc = fw / "pio" / "toolchain" / "bin" / "arm-none-eabi-gcc"
    assert gcc.is_symlink() and gcc.resolve() == Path(shutil.which("arm-none-eabi-gcc")).resolve()
    scons = fw / "pio" / "core" / "packages" / "tool-scons"
    assert '"owner": "platformio"' in (scons / ".piopm").read_text() and (scons / "scons.py").is_file()
    # The direct build still works from the same folder (same files, Makefile, link.ld).
    assert (fw / "Makefile").is_file() and (fw / "link.ld").is_file()
