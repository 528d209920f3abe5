"""The bare-metal STM32 board layer (firmware_templates/boards/stm32, microt_deploy.targets.stm32.layer):
the four ST boards build warning-free with their own startup code and linker script, their vector
tables and memory map match the parts' reference manuals, the B-L475E-IOT01A image answers the real
host client in QEMU's b-l475e-iot01a machine, a model too big for the RAM fails at link time, and bad
board data is a one-line error.

The expected values below are facts about the parts (ST reference manuals and datasheets) or
computed by the test itself, not read back from the board files the layer renders."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import serial

from microt_deploy.boards import Board, load_board
from microt_deploy.errors import DeviceError, MicrotError
from microt_deploy.firmware.render import (
    TEMPLATES,
    graph_prefixes,
    graphs_header,
    plan_sizes,
    read_model_sizes,
    template_env,
)
from microt_deploy.link.device import Device
from microt_deploy.link.protocol import Command, encode
from microt_deploy.targets.stm32.layer import layer_data, render_layer
from tests.firmware.toy_model import toy_outputs, write_toy_model

KIB = 1024
# Per part: flash (origin, size); the RAM ranges the initial SP may point into; the NVIC line of the
# board's ST-LINK virtual COM port UART (RM0351 / RM0432 / RM0385 / RM0455 vector tables).
PARTS = {
    "disco_l475vg_iot01a": {"flash": (0x08000000, 1024 * KIB), "uart_irq": 37,
                            "ram": [(0x20000000, 96 * KIB), (0x10000000, 32 * KIB)]},  # SRAM1, SRAM2
    "nucleo_l4r5zi": {"flash": (0x08000000, 2048 * KIB), "uart_irq": 70,  # LPUART1
                      "ram": [(0x20000000, 640 * KIB)]},  # SRAM1 + SRAM2 + SRAM3
    "disco_f746ng": {"flash": (0x08000000, 1024 * KIB), "uart_irq": 37,
                     "ram": [(0x20000000, 320 * KIB)]},  # DTCM + SRAM1 + SRAM2
    "nucleo_h7a3zi_q": {"flash": (0x08000000, 2048 * KIB), "uart_irq": 39,  # USART3
                        "ram": [(0x24000000, 1024 * KIB), (0x20000000, 128 * KIB)]},  # AXI SRAM, DTCM
}
BOARDS = tuple(PARTS)
OPTIONS = {"max_tasks": 2, "max_classes": 8, "max_slots": 64}
QEMU_MACHINE = "b-l475e-iot01a"

# make test installs the cross compiler and QEMU 10: their absence is a failure, never a skip.


def _tool(name: str) -> str:
    return shutil.which(name) or name


def _render(board: Board, out: Path, compiled: Path, *, sizing_board: Board | None = None) -> tuple[Path, list[str]]:
    """Portable sources + the layer into out/src, link.ld into out (what the PlatformIO renderer does)."""
    src = out / "src"
    src.mkdir(parents=True)
    config = plan_sizes(sizing_board or board, read_model_sizes(compiled / "mdt_model.h"), OPTIONS)
    env = template_env()
    values = {**asdict(config), "board": board, "flash_bytes": board.flash_bytes, "ram_bytes": board.ram_bytes}
    sources = []
    for folder in (TEMPLATES / "runtime", TEMPLATES / "app", compiled):
        for path in sorted(folder.glob("*")):
            if path.suffix in (".c", ".h"):
                shutil.copy2(path, src / path.name)
                if path.suffix == ".c":
                    sources.append(path.name)
    (src / "mdt_graphs.h").write_text(graphs_header(graph_prefixes(compiled / "mdt_model.h")))
    (src / "mdt_config.h").write_text(env.get_template("app/mdt_config.h.j2").render(**values))
    layer = render_layer(env, board, values, src, out)
    return src, sources + layer


def _link(board: Board, out: Path, src: Path, sources: list[str]) -> subprocess.CompletedProcess:
    cmd = [_tool("arm-none-eabi-gcc"), "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{src}",
           f"-I{TEMPLATES / 'app'}", *board.cpu_flags, "-ffunction-sections", "-fdata-sections",
           *[str(src / name) for name in sources], "-T", str(out / "link.ld"), "-nostartfiles", "--specs=nano.specs",
           "-Wl,--gc-sections", "-Wl,--print-memory-usage", "-lm", "-o", str(out / "firmware.elf")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _usage(log: str) -> dict[str, int]:
    units = {"B": 1, "KB": KIB, "MB": KIB * KIB}
    return {m[1]: int(m[2]) * units[m[3]] for m in re.finditer(r"^\s*(\w+):\s+(\d+)\s*(B|KB|MB)\s", log, re.M)}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every STM32 board's firmware around the toy model: {board: (ELF, linker output)}."""
    root = tmp_path_factory.mktemp("stm32")
    compiled = write_toy_model(root / "compiled")
    built = {}
    for board_id in BOARDS:
        board = load_board(board_id)
        src, sources = _render(board, root / board_id, compiled)
        result = _link(board, root / board_id, src, sources)
        assert result.returncode == 0, f"{board_id}:\n{result.stderr}"
        assert "warning" not in result.stderr, result.stderr
        built[board_id] = (root / board_id / "firmware.elf", result.stdout)
    return built


def _symbols(elf: Path) -> dict[str, int]:
    out = subprocess.run([_tool("arm-none-eabi-nm"), str(elf)], capture_output=True, text=True, check=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in (line.split() for line in out.splitlines()) if len(parts) == 3}


def _vectors(elf: Path, count: int) -> list[int]:
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        section = ELFFile(f).get_section_by_name(".isr_vector")
        assert section is not None and section["sh_addr"] == 0x08000000
        data = section.data()
    assert len(data) >= 4 * count
    return list(struct.unpack(f"<{len(data) // 4}I", data))


@pytest.mark.parametrize("board_id", BOARDS)
def test_builds_hard_float_with_the_parts_vector_table_and_memory_map(images, board_id):
    elf, log = images[board_id]
    part = PARTS[board_id]
    attrs = subprocess.run([_tool("arm-none-eabi-readelf"), "-A", str(elf)], capture_output=True, text=True,
                           check=True).stdout
    assert re.search(r"Tag_ABI_VFP_args:\s+VFP registers", attrs)
    sym = _symbols(elf)
    vec = _vectors(elf, 16 + part["uart_irq"] + 1)
    flash_lo, flash_size = part["flash"]
    # Initial SP: the top of a RAM range of this part (8-byte aligned, AAPCS); reset: a Thumb address in flash.
    assert any(lo < vec[0] <= lo + size for lo, size in part["ram"]) and vec[0] % 8 == 0
    assert vec[1] & 1 and flash_lo <= vec[1] < flash_lo + flash_size and vec[1] & ~1 == sym["Reset_Handler"]
    thumb = {name: addr | 1 for name, addr in sym.items()}
    assert vec[15] == thumb["SysTick_Handler"]
    assert vec[16 + part["uart_irq"]] == thumb["mdt_uart_irq_handler"]
    others = [v for i, v in enumerate(vec) if i >= 2 and i not in (7, 8, 9, 10, 13, 15, 16 + part["uart_irq"])]
    assert set(others) == {thumb["Default_Handler"]}  # nothing unused returns silently
    usage = _usage(log)
    assert 0 < usage["FLASH"] < flash_size and 0 < usage["RAM"] <= max(size for _, size in part["ram"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Qemu:
    """qemu-system-arm -M b-l475e-iot01a under a hard time limit, UART on a loopback socket."""

    def __init__(self, elf: Path, limit_s: int = 120) -> None:
        self.port_no = _free_port()
        cmd = ["timeout", "-s", "KILL", str(limit_s), _tool("qemu-system-arm"), "-M", QEMU_MACHINE,
               "-icount", "shift=0", "-nographic", "-monitor", "none",
               "-chardev", f"socket,id=s0,host=127.0.0.1,port={self.port_no},server=on,wait=on,nodelay=on",
               "-serial", "chardev:s0", "-kernel", str(elf)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.port = None

    def __enter__(self) -> _Qemu:
        deadline = time.monotonic() + 20
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"QEMU did not start: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                self.port = serial.serial_for_url(f"socket://127.0.0.1:{self.port_no}", timeout=0.1)
            except serial.SerialException:
                time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        if self.port is not None:
            self.port.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session QEMU was started in, by its id
        self.proc.wait(timeout=10)
        self.proc.stderr.close()


def _qemu_machine_available() -> bool:
    if shutil.which("qemu-system-arm") is None:
        return False
    out = subprocess.run(["qemu-system-arm", "-machine", "help"], capture_output=True, text=True).stdout
    return QEMU_MACHINE in out


def needs_qemu(test):
    """QEMU with the B-L475E-IOT01A machine is required (make test installs it from bookworm-backports)."""
    def wrapper(*args, **kwargs):
        assert _qemu_machine_available(), f"no qemu-system-arm with -M {QEMU_MACHINE}: run make test's setup"
        return test(*args, **kwargs)
    return functools.wraps(test)(wrapper)


def _hello_when_ready(port: serial.Serial) -> tuple[Device, object]:
    """QEMU's STM32L4x5 USART model drops bytes that arrive before the guest has enabled the
    receiver (it accepts them whatever UE/RE say), and the guest only starts once the socket is
    connected: ask until the firmware answers."""
    for _ in range(40):
        device = Device(port, timeout=0.3, long_timeout=60)
        try:
            return device, device.hello()
        except DeviceError:
            continue
    raise AssertionError("the B-L475E-IOT01A image never answered HELLO in QEMU")


@needs_qemu
def test_l475_image_answers_the_host_client_in_qemu(images):
    elf, _ = images["disco_l475vg_iot01a"]
    x = np.arange(-8, 8, dtype=np.int8) * 9
    with _Qemu(elf) as qemu:
        port = qemu.port
        device, info = _hello_when_ready(port)
        # QEMU has no DWT: the layer falls back to SysTick and reports retired instructions; the
        # RCC model's PLL locks, so the core runs at the board's 80 MHz.
        assert (info.board, info.clock_hz, info.counter_unit) == ("disco_l475vg_iot01a", 80_000_000, "instructions")
        counts = []
        for _ in range(2):
            device.load_input(x)
            counts.append(device.run_graphs())
            got = [np.frombuffer(device.read_tensor(i), np.int8) for i in range(3)]
            for have, want in zip(got, toy_outputs(x), strict=True):
                np.testing.assert_array_equal(have, want)
        assert counts[0] == counts[1] and all(0 < v < 10_000 for v in counts[0].values())
        # A frame cut short is dropped after the byte timeout (SysTick keeps time while the core
        # sleeps in WFI); the next frame is answered.
        port.write(encode(Command.LOAD_INPUT, 77, struct.pack("<I", 0) + bytes(16))[:-5])
        time.sleep(0.6)
        assert port.in_waiting == 0
        assert device.hello().board == "disco_l475vg_iot01a"
        device.exit(0)
        # No semihosting on STM32 (a board without a debugger would fault): the firmware sleeps
        # and the emulator keeps running until the host kills it.
        time.sleep(0.3)
        assert qemu.proc.poll() is None


COUNTER_MAIN = r"""
#include <stdint.h>
#include "mdt_board.h"
#define LOOPS %(loops)du
int main(int argc, char **argv)
{
    uint8_t out[13];
    uint64_t c0, c1, d;
    uint32_t hz, i;
    mdt_board_init(argc, argv);
    while (mdt_board_read_byte(1000u) < 0) {
    }
    mdt_board_counter_align();
    c0 = mdt_board_counter();
    __asm__ volatile("mov r0, %%0\n1: subs r0, r0, #1\n bne 1b" ::"r"(LOOPS) : "r0", "cc");
    c1 = mdt_board_counter();
    d = c1 - c0;
    hz = mdt_board_clock_hz();
    for (i = 0; i < 8; i++) {
        out[i] = (uint8_t)(d >> (8u * i));
    }
    for (i = 0; i < 4; i++) {
        out[8 + i] = (uint8_t)(hz >> (8u * i));
    }
    out[12] = mdt_board_counter_unit();
    mdt_board_write(out, 13u);
    for (;;) {
        (void)mdt_board_read_byte(1000u);
    }
}
"""


@needs_qemu
def test_l475_counter_is_systick_at_the_core_clock_in_qemu(tmp_path):
    """A loop of known length (2 * LOOPS + 1 instructions, 1 ns each under -icount shift=0) measured
    with the layer's counter: right only if QEMU's SysTick really ticks at the clock the layer
    believes it set (it follows the RCC model's HCLK), across many 1 ms SysTick wraps."""
    loops = 5_000_000
    board = load_board("disco_l475vg_iot01a")
    compiled = write_toy_model(tmp_path / "compiled")
    src, _ = _render(board, tmp_path / "fw", compiled)
    (src / "counter_main.c").write_text(COUNTER_MAIN % {"loops": loops})
    result = _link(board, tmp_path / "fw", src, ["counter_main.c", "mdt_board_stm32.c", "startup_stm32.c"])
    assert result.returncode == 0, result.stderr
    with _Qemu(tmp_path / "fw" / "firmware.elf") as qemu:
        port = qemu.port
        answer = b""
        deadline = time.monotonic() + 30
        while len(answer) < 13 and time.monotonic() < deadline:
            if not answer:
                port.write(b"g")
            answer += port.read(13 - len(answer))
    assert len(answer) == 13
    delta, hz, unit = struct.unpack("<QIB", answer)
    assert (hz, unit) == (80_000_000, 0)  # MDT_UNIT_INSTRUCTIONS
    # The loop plus the counter's own cost and ten 1 ms SysTick interrupts: within 0.01 %.
    assert delta == pytest.approx(2 * loops + 1, rel=1e-4)


def test_model_too_big_for_the_l475_ram_fails_at_link_time(tmp_path):
    board = load_board("disco_l475vg_iot01a")
    compiled = write_toy_model(tmp_path / "compiled")
    header = compiled / "mdt_model.h"
    arena = 120_000  # more than the part's 96 KB SRAM1 on its own
    header.write_text(header.read_text().replace("#define MDT_ARENA_SIZE 48", f"#define MDT_ARENA_SIZE {arena}"))
    # Sized as if RAM were unlimited (ram_bytes 0 skips the planner's fit check): the linker decides.
    src, sources = _render(board, tmp_path / "fw", compiled, sizing_board=dataclasses.replace(board, ram_bytes=0))
    result = _link(board, tmp_path / "fw", src, sources)
    assert result.returncode != 0
    match = re.search(r"region `RAM' overflowed by (\d+) bytes", result.stderr)
    assert match and int(match[1]) >= arena - 96 * KIB


def _with(board: Board, **changes) -> Board:
    """The board with [stm32] keys changed (dotted keys reach [stm32.clock] / pll)."""
    data = {**board.extra["stm32"], "clock": {**board.extra["stm32"]["clock"]}}
    data["clock"]["pll"] = {**data["clock"]["pll"]}
    for key, value in changes.items():
        table, *path = key.split(".")
        target = data
        for part in [table, *path][:-1]:
            target = target[part]
        target[[table, *path][-1]] = value
    return dataclasses.replace(board, extra={**board.extra, "stm32": data})


@pytest.mark.parametrize(("board_id", "changes", "names"), [
    ("disco_l475vg_iot01a", {"tx": "PZ9"}, "[stm32] tx"),
    ("disco_l475vg_iot01a", {"rx": "PB16"}, "[stm32] rx"),
    ("disco_l475vg_iot01a", {"clock.pll.n": 36}, "clock_hz"),          # 4 MHz * 36 / 2 = 72 MHz, not 80
    ("nucleo_h7a3zi_q", {"clock.pll.p": 3}, "pll p = 3"),                        # PLL1 P must be even
    ("disco_f746ng", {"clock.apb1_div": 2}, "APB1"),                     # 108 MHz > the F7's 54 MHz APB1
    ("disco_f746ng", {"clock.flash_latency": 5}, "flash_latency"),       # 216 MHz needs 7 wait states
    ("nucleo_l4r5zi", {"clock.boost": False}, "boost"),                  # 120 MHz needs range 1 boost
    ("nucleo_l4r5zi", {"uart": "USART9"}, "[stm32] uart"),
    ("disco_l475vg_iot01a", {"irq_count": 30}, "[stm32] irq_count"),             # leaves out USART1's line 37
    ("disco_l475vg_iot01a", {"hal_header": "stm32l4xx_hal.h"}, "hal_header"),
    ("disco_l475vg_iot01a", {"memory": {"FLASH": {"origin": 0x08000000, "length": 1 << 20},
                                        "RAM": {"origin": 0x20000000, "length": 131072}}}, "ram_bytes"),
    ("disco_l475vg_iot01a", {"stack_region": "CCM"}, "[stm32] stack_region"),
])
def test_bad_board_data_is_a_one_line_error(board_id, changes, names):
    board = _with(load_board(board_id), **changes)
    with pytest.raises(MicrotError) as err:
        layer_data(board)
    text = str(err.value)
    assert "\n" not in text and f"boards/{board_id}.toml" in text and names in text


def test_the_four_boards_data_is_accepted_and_the_divisors_follow_the_kernel_clock():
    # BRR from the UART's kernel clock: USART 16x oversampling f / baud, LPUART 256 * f / baud.
    expected = {"disco_l475vg_iot01a": round(80e6 / 115200), "nucleo_l4r5zi": round(256 * 120e6 / 115200),
                "disco_f746ng": round(108e6 / 115200), "nucleo_h7a3zi_q": round(140e6 / 115200)}
    for board_id, brr in expected.items():
        data = layer_data(load_board(board_id))
        assert data["brr"] == brr
        assert data["uart_irq"] == PARTS[board_id]["uart_irq"]


def test_a_stack_that_does_not_fit_its_region_is_refused(tmp_path):
    board = load_board("disco_l475vg_iot01a")  # its stack lives in the 32 KB SRAM2
    values = {"stack_bytes": 64 * KIB, "board": board}
    (tmp_path / "src").mkdir()
    with pytest.raises(MicrotError, match="stack") as err:
        render_layer(template_env(), board, values, tmp_path / "src", tmp_path)
    assert "\n" not in str(err.value)
