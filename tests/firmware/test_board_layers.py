"""The stm32 and esp32 board layers and the PlatformIO projects they are rendered into (layout,
per-board data, refusals); the builds and PlatformIO itself are tested in tests/targets."""

import json
import re

import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import MicrotError
from microt_deploy.targets import render_firmware
from tests.firmware.toy_model import write_toy_model


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return write_toy_model(tmp_path_factory.mktemp("toy") / "compiled")


def test_board_layers_name_no_board_in_the_portable_app():
    from microt_deploy.firmware.render import TEMPLATES

    app = "".join(p.read_text() for p in (TEMPLATES / "app").glob("*.[ch]"))
    assert not re.search(r"stm32|esp32|HAL_|uart_driver", app, re.IGNORECASE)
    stm32 = "".join(p.read_text() for p in (TEMPLATES / "boards" / "stm32").glob("*.[ch]"))
    assert "malloc" not in stm32 and not re.search(r'#include\s+"stm32|HAL_', stm32)  # no vendor HAL
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


def test_pio_option_only_for_the_emulated_board(compiled, tmp_path):
    with pytest.raises(MicrotError, match="PlatformIO option is for the emulated board"):
        render_firmware(compiled, load_board("host"), tmp_path / "h", {"pio": True})


def test_emulated_project_is_registry_free(compiled, tmp_path):
    fw = tmp_path / "fw"
    render_firmware(compiled, load_board("qemu_mps2_an386"), fw, {"pio": True})
    ini = (fw / "platformio.ini").read_text()
    assert "platform = file://${PROJECT_DIR}/pio/platform" in ini and "platform_packages" not in ini
    assert json.loads((fw / "pio" / "platform" / "platform.json").read_text())["name"] == "microtqemu"
    # The direct build still works from the same folder (same files, Makefile, link.ld).
    assert (fw / "Makefile").is_file() and (fw / "link.ld").is_file()
