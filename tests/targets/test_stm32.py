"""The STM32 boards as users get them: each generated PlatformIO project built by `pio run` (offline:
the registry-free core with the stand-in ST platform and Debian's arm-none-eabi-gcc), with the
project's own extra script giving every compile, assemble and link step the FPU flags and -O2.
Checked against what the toolchain itself reports: the compile lines PlatformIO ran, the ELF's
ABI attributes and vector table, ld's memory regions."""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import struct
import subprocess

import pytest

from microt_deploy.boards import known_boards, load_board
from microt_deploy.errors import MicrotError
from microt_deploy.targets import build, image_path, render_firmware
from microt_deploy.targets import platformio as pio

STM32_BOARDS = [b for b in known_boards() if load_board(b).family == "stm32"]


@pytest.fixture(scope="module")
def stm32_built(split_model, tmp_path_factory):
    """board id -> (folder, BuildResult), built on first use."""
    cache: dict = {}

    def get(board_id: str):
        if board_id not in cache:
            board = load_board(board_id)
            fw = tmp_path_factory.mktemp(board_id) / "fw"
            render_firmware(split_model["compiled"], board, fw, {"max_tasks": 2, "max_classes": 10})
            cache[board_id] = (fw, build(board, fw))
        return cache[board_id]

    return get


def test_every_stm32_board_is_built_in_ci():
    # `boards` tells users what CI verifies; every STM32 board file must claim one of the levels this
    # module exercises (the emulated one also runs end to end in test_devices / test_end_to_end).
    assert STM32_BOARDS and all(load_board(b).status in ("ci-built", "ci-emulated") for b in STM32_BOARDS)
    assert "disco_l475vg_iot01a" in STM32_BOARDS and load_board("disco_l475vg_iot01a").status == "ci-emulated"


def _compile_lines(log: str) -> list[list[str]]:
    return [shlex.split(line) for line in log.splitlines()
            if line.startswith("arm-none-eabi-gcc") and " -c " in line and "/src/" in line]


@pytest.mark.parametrize("board_id", STM32_BOARDS)
def test_stm32_project_builds_with_pio_hard_float_and_strict(stm32_built, board_id):
    board = load_board(board_id)
    fw, result = stm32_built(board_id)
    assert result.image == image_path(board, fw) == fw / ".pio" / "build" / board_id / "firmware.elf"
    assert "offline" in result.built_by and not result.estimate
    assert 0 < result.flash_bytes <= board.flash_bytes and 0 < result.ram_bytes <= board.ram_bytes
    log = (fw / "build.log").read_text()
    assert "warning:" not in log
    want_cpu = list(board.cpu_flags)
    lines = _compile_lines(log)
    assert len(lines) >= 10, log[-2000:]
    for argv in lines:  # our sources: what PlatformIO really ran
        for flag in ("-std=c99", "-Wall", "-Wextra", "-Werror", *want_cpu):
            assert flag in argv, (flag, argv)
        assert [f for f in argv if re.fullmatch(r"-O\w*", f)][-1] == "-O2", argv  # the last -O wins
    link = next(line for line in log.splitlines() if line.startswith("arm-none-eabi-g") and " -o " in line
                and "firmware.elf" in line)
    assert "-mfloat-abi=hard" in link and "link.ld" in link and "-nostartfiles" in link and "stdc++" not in link
    # The ELF itself says hard-float calling convention (the soft-float image the issue found had none).
    attrs = subprocess.run(["arm-none-eabi-readelf", "-A", str(result.image)], capture_output=True, text=True,
                           check=True).stdout
    assert "Tag_ABI_VFP_args: VFP registers" in attrs and "Tag_FP_arch" in attrs
    # Boot: the first two words of the image are the initial stack pointer and the reset handler.
    sp, reset = _vector_table(result.image)
    ram_regions = [(r["origin"], r["origin"] + r["length"]) for name, r in board.extra["stm32"]["memory"].items()
                   if name != "FLASH"]
    assert any(lo < sp <= hi for lo, hi in ram_regions) and sp % 8 == 0, (hex(sp), ram_regions)
    assert 0x0800_0000 <= reset < 0x0800_0000 + board.flash_bytes and reset & 1  # Thumb


def _vector_table(image) -> tuple[int, int]:
    out = subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".isr_vector", str(image), "/dev/stdout"],
                         capture_output=True, check=True).stdout
    return struct.unpack("<II", out[:8])


@pytest.mark.parametrize("board_id", STM32_BOARDS)
def test_stm32_project_is_what_platformio_expects(stm32_built, board_id):
    board = load_board(board_id)
    fw, _ = stm32_built(board_id)
    env = pio.project_config(fw)[f"env:{board_id}"]
    assert env["platform"] == "ststm32" and env["board"] == board.extra["pio_board"]
    assert "framework" not in env  # bare metal: no vendor HAL to install
    assert env["board_build.ldscript"] == "link.ld" and env["upload_protocol"] == "stlink"
    assert env["extra_scripts"] == ["post:mdt_build.py"]
    assert env["custom_mdt_cpu_flags"] == " ".join(board.cpu_flags)
    own = fw / "boards" / f"{board.extra['pio_board']}.json"
    # PlatformIO's ST platform does not know the H7A3ZI-Q: its project carries the definition.
    assert own.is_file() == (board_id == "nucleo_h7a3zi_q")
    if own.is_file():
        assert '"product_line": "STM32H7A3xxQ"' in own.read_text()
    src = {p.name for p in (fw / "src").iterdir()}
    assert {"mdt_app.c", "mdt_model.c", "mdt_board_stm32.c", "mdt_config.h"} <= src
    assert not any("cmsdk" in name or "host" in name or "esp32" in name for name in src)


def test_a_board_platformio_does_not_know_is_refused_before_writing(split_model, tmp_path):
    board = load_board("nucleo_h7a3zi_q")
    typo = dataclasses.replace(board, extra=dict(board.extra, pio_board="nucleo_h7a3zi"))
    with pytest.raises(MicrotError, match=r"pio_board 'nucleo_h7a3zi' is not a board id PlatformIO's ST platform "
                                          r"knows .*; use PlatformIO's id"):
        render_firmware(split_model["compiled"], typo, tmp_path / "fw", {})
    assert not (tmp_path / "fw").exists()


def test_offline_upload_without_a_probe_fails_in_one_line(stm32_built):
    from microt_deploy.targets import flash

    fw, _ = stm32_built("nucleo_l4r5zi")
    with pytest.raises(MicrotError) as err:
        flash(load_board("nucleo_l4r5zi"), fw, None, offline=True)
    text = str(err.value)
    assert text.startswith("flashing nucleo_l4r5zi failed: ") and "\n" not in text and "Traceback" not in text
    if shutil.which("openocd") is None:  # the offline upload uses the system's OpenOCD and says how to get it
        assert "openocd is not installed" in text and "apt-get install openocd" in text


@pytest.fixture(scope="module")
def l475_runs(stm32_built, split_model):
    """Two sessions of the very image `pio run` made for the B-L475E-IOT01A, booted in QEMU 10's
    b-l475e-iot01a machine, talking over its USART1 (the ST-LINK VCP) to the real host client."""
    from microt_deploy.link.device import Device
    from microt_deploy.targets import launch
    from tests.targets.test_devices import _session

    board = load_board("disco_l475vg_iot01a")
    _, result = stm32_built(board.id)
    runs = []
    for _ in range(2):
        with launch(board, result.image, limit_s=180) as port:
            runs.append(_session(Device(port, timeout=20), split_model["paths"]))
    return runs


def test_l475_in_qemu_is_bit_exact_and_counts_instructions(l475_runs, split_model):
    # _session already compared the split / part / full tensors with TFLite's reference kernels.
    first, second = l475_runs
    info = first["info"]
    assert (info.board, info.counter_unit, info.clock_hz) == ("disco_l475vg_iot01a", "instructions", 80_000_000)
    macs = {g["prefix"]: g["macs"] for g in split_model["plan"]["graphs"]}
    for r in first["infers"]:
        assert macs["trunk"] < r.counters["trunk"] < 100 * macs["trunk"]
    # The emulator counts retired instructions deterministically: two boots, the same counts.
    assert [r.counters for r in first["infers"]] == [r.counters for r in second["infers"]]
    assert first["train"] == second["train"] and first["threshold"] == second["threshold"]
    for r in first["infers"]:
        assert r.exit_stage == (0 if r.confidence >= first["threshold"] else 1)
