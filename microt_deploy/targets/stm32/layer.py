"""The STM32 board layer: a board file's ``[stm32]`` tables checked against the facts of its series,
and rendered into the layer's header, its C sources and the linker script.

Owns: what each supported series allows (PLL ranges, flash wait states, bus limits, the UARTs the
C layer knows with their interrupt line and kernel clock), the validation of a board's data
(``layer_data``) and the files the layer adds to a firmware folder (``render_layer``). Register
addresses and field encodings live in ``firmware_templates/boards/stm32/mdt_board_stm32.c``.

Board file schema (``boards/<id>.toml``)::

    [stm32]
    part = "STM32L475VG"       # for comments and messages
    series = "L4"              # "L4" (RM0351), "L4+" (RM0432), "F7" (RM0385), "H7" (RM0455, H7A3/B3)
    irq_count = 82             # the part's NVIC interrupt lines: the vector table's size - 16
    uart = "USART1"            # the ST-LINK virtual COM port
    tx = "PB6"
    rx = "PB7"
    af = 7                     # the pins' alternate function number
    baud = 115200
    vddio2 = false             # L4 / L4+: power port G from VddIO2 (PWR_CR2.IOSV)
    stack_region = "SRAM2"     # the [stm32.memory] region that holds the stack

    [stm32.clock]
    source = "MSI"             # L4: MSI (4 MHz, its reset range); F7 / H7: HSE or HSE_BYPASS
    source_hz = 4000000
    pll = { m = 1, n = 40, r = 2 }   # L4: R feeds SYSCLK; F7 / H7: P (F7 also needs q)
    flash_latency = 4
    ahb_div = 1                # and apb1_div, apb2_div (H7 also apb3_div, apb4_div)
    boost = false              # L4+: range 1 boost mode (needed above 80 MHz)
    overdrive = false          # F7: over-drive (needed above 180 MHz)
    supply = "SMPS_DIRECT"     # H7: SMPS_DIRECT or LDO (what the board's core supply is wired to)
    vos = 0                    # H7: voltage scale 0 or 1

    [stm32.memory]             # linker regions: FLASH (= flash_bytes), RAM (.data/.bss, = ram_bytes), others
    FLASH = { origin = 0x08000000, length = 1048576 }
    RAM = { origin = 0x20000000, length = 98304 }
    SRAM2 = { origin = 0x10000000, length = 32768 }
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError
from microt_deploy.firmware.render import TEMPLATES
from microt_deploy.link.baud import check_divided, nearest_divided

LAYER_DIR = TEMPLATES / "boards" / "stm32"
HEADER = "mdt_board_stm32.h"
SOURCES = ("mdt_board_stm32.c", "startup_stm32.c")
FLASH_ORIGIN = 0x08000000
MHZ = 1_000_000
_PIN = re.compile(r"^P([A-Z])(\d{1,2})$")
_REGION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DIVIDERS = (1, 2, 4, 8, 16)
KEYS = {
    "[stm32]": {"part", "series", "irq_count", "uart", "tx", "rx", "af", "baud", "vddio2", "stack_region", "clock",
                "memory"},
    "[stm32.clock]": {"source", "source_hz", "pll", "flash_latency", "ahb_div", "apb1_div", "apb2_div", "apb3_div",
                      "apb4_div", "boost", "overdrive", "supply", "vos"},
    "[stm32.clock] pll": {"m", "n", "p", "q", "r"},
}


@dataclass(frozen=True)
class Uart:
    """A UART the C layer knows on a series: its NVIC line and the APB bus clock that feeds it."""

    irq: int
    bus: str
    lp: bool = False  # LPUART: BRR = 256 * f / baud


@dataclass(frozen=True)
class Series:
    """What a series allows, from its reference manual and datasheets."""

    name: str
    macro: str
    manual: str
    cortex_m7: bool
    sources: tuple[str, ...]
    out_key: str  # the PLL divider that feeds SYSCLK
    m: range
    n: range
    outs: tuple[int, ...]
    vco_in: tuple[float, float]
    vco_out: tuple[float, float]
    ports: str
    buses: tuple[str, ...]
    uarts: dict[str, Uart]
    max_hz: Callable[[dict[str, Any]], int]  # SYSCLK / HCLK limit for the clock options
    bus_max: Callable[[dict[str, Any], str], int]
    min_latency: Callable[[dict[str, Any], int], int]  # flash wait states needed at an HCLK
    defaults: dict[str, int] = field(default_factory=dict)  # PLL dividers the board need not name
    q: tuple[int, ...] = ()


def _steps(hz: int, step_mhz: float) -> int:
    return max(0, math.ceil(hz / (step_mhz * MHZ)) - 1)


_L4_UARTS = {"USART1": Uart(37, "apb2"), "LPUART1": Uart(70, "apb1", lp=True)}
SERIES: dict[str, Series] = {
    # RM0351 6.2.5 (PLL: VCO input 4..16 MHz, output 64..344 MHz, SYSCLK <= 80 MHz), 3.3.3 Table 9
    # (range 1: one wait state per 16 MHz).
    "L4": Series(
        name="L4", macro="L4", manual="RM0351", cortex_m7=False, sources=("MSI",), out_key="r",
        m=range(1, 9), n=range(8, 87), outs=(2, 4, 6, 8), vco_in=(4e6, 16e6), vco_out=(64e6, 344e6),
        ports="ABCDEFGHI", buses=("apb1", "apb2"), uarts=_L4_UARTS,
        max_hz=lambda c: 80 * MHZ, bus_max=lambda c, bus: 80 * MHZ,
        min_latency=lambda c, hz: _steps(hz, 16), defaults={"p": 7, "q": 2}, q=(2, 4, 6, 8)),
    # RM0432 6.2.5 (PLL: VCO input 2.66..8 MHz, N 8..127), 5.1.8 (range 1 boost above 80 MHz, up to
    # 120 MHz), 3.3.3 (boost: one wait state per 20 MHz; normal mode checked at 16 MHz steps).
    "L4+": Series(
        name="L4+", macro="L4P", manual="RM0432", cortex_m7=False, sources=("MSI",), out_key="r",
        m=range(1, 17), n=range(8, 128), outs=(2, 4, 6, 8), vco_in=(2.66e6, 8e6), vco_out=(64e6, 344e6),
        ports="ABCDEFGHI", buses=("apb1", "apb2"), uarts=_L4_UARTS,
        max_hz=lambda c: (120 if c.get("boost") else 80) * MHZ,
        bus_max=lambda c, bus: (120 if c.get("boost") else 80) * MHZ,
        min_latency=lambda c, hz: _steps(hz, 20 if c.get("boost") else 16), defaults={"p": 7, "q": 2},
        q=(2, 4, 6, 8)),
    # RM0385 5.2.5 / 5.3.2 (M 2..63, N 50..432, VCO input ~1..2 MHz, output 100..432 MHz), 4.1.4
    # (over-drive above 180 MHz), 3.3.2 Table 5 (2.7-3.6 V: one wait state per 30 MHz); APB1 <= 54,
    # APB2 <= 108 MHz.
    "F7": Series(
        name="F7", macro="F7", manual="RM0385", cortex_m7=True, sources=("HSE", "HSE_BYPASS"), out_key="p",
        m=range(2, 64), n=range(50, 433), outs=(2, 4, 6, 8), vco_in=(0.95e6, 2.1e6), vco_out=(100e6, 432e6),
        ports="ABCDEFGHIJK", buses=("apb1", "apb2"), uarts={"USART1": Uart(37, "apb2")},
        max_hz=lambda c: (216 if c.get("overdrive") else 180) * MHZ,
        bus_max=lambda c, bus: {"apb1": 54, "apb2": 108}.get(bus, 216) * MHZ,
        min_latency=lambda c, hz: _steps(hz, 30), defaults={"r": 2}, q=tuple(range(2, 16))),
    # RM0455 7.5.5 (PLL1: DIVM1 1..63, DIVN1 4..512, wide VCO 128..560 MHz from a 2..16 MHz
    # reference, DIVP1 even), 6.8.6 (VOS0 up to 280 MHz, VOS1 225 MHz), 4.3.8 Table 15 (VOS0: one
    # wait state per 44 MHz, VOS1 per 42 MHz); APB1..4 <= 140 MHz.
    "H7": Series(
        name="H7", macro="H7", manual="RM0455", cortex_m7=True, sources=("HSE", "HSE_BYPASS"), out_key="p",
        m=range(1, 64), n=range(4, 513), outs=tuple(range(2, 129, 2)), vco_in=(2e6, 16e6), vco_out=(128e6, 560e6),
        ports="ABCDEFGHIJK", buses=("apb1", "apb2", "apb3", "apb4"),
        uarts={"USART3": Uart(39, "apb1"), "USART1": Uart(37, "apb2")},
        max_hz=lambda c: {0: 280, 1: 225}.get(c.get("vos"), 0) * MHZ,
        bus_max=lambda c, bus: {0: 140, 1: 112}.get(c.get("vos"), 0) * MHZ,
        min_latency=lambda c, hz: min(_steps(hz, 44 if c.get("vos") == 0 else 42), 7),
        defaults={"q": 2, "r": 2}, q=tuple(range(1, 129))),
}
H7_SUPPLIES = ("SMPS_DIRECT", "LDO")


def _fail(board: Board, problem: str, fix: str) -> MicrotError:
    return MicrotError(f"boards/{board.id}.toml: {problem}", fix)


def _known(board: Board, table: dict[str, Any], where: str) -> None:
    unknown = sorted(set(table) - KEYS[where])
    if unknown:
        raise _fail(board, f"{where} has unknown keys {', '.join(unknown)}",
                    f"use only {', '.join(sorted(KEYS[where]))} (the layer needs no HAL names)")


def _int(board: Board, table: dict[str, Any], key: str, where: str, lo: int | None = None,
         hi: int | None = None) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(board, f"{where} {key} is {value!r}, not an integer", f"set {where} {key} = <integer>")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(board, f"{where} {key} = {value} is outside {lo}..{hi}", f"use a value in {lo}..{hi}")
    return value


def _pin(board: Board, series: Series, key: str, name: Any) -> tuple[str, int]:
    match = _PIN.match(name) if isinstance(name, str) else None
    if not match or int(match[2]) > 15 or match[1] not in series.ports:
        raise _fail(board, f"[stm32] {key} = {name!r} is not a pin of an {series.name} part",
                    f"write pins as P<port {series.ports[0]}..{series.ports[-1]}><0..15>, like PB6")
    return match[1], int(match[2])


def _clock(board: Board, series: Series, data: dict[str, Any]) -> dict[str, Any]:
    clock = data.get("clock")
    if not isinstance(clock, dict):
        raise _fail(board, "no [stm32.clock] table", "add the clock tree: source, source_hz, pll, flash_latency, "
                    "ahb_div, apb1_div, apb2_div")
    where = "[stm32.clock]"
    _known(board, clock, where)
    source = clock.get("source")
    if source not in series.sources:
        raise _fail(board, f"{where} source = {source!r} is not one this layer drives on the {series.name}",
                    f"use one of {', '.join(series.sources)}")
    source_hz = _int(board, clock, "source_hz", where, 1)
    if source == "MSI" and source_hz != 4 * MHZ:
        raise _fail(board, f"{where} source_hz = {source_hz:,}: the layer keeps the MSI at its 4 MHz reset range",
                    "set source_hz = 4000000")
    pll_in = clock.get("pll")
    if not isinstance(pll_in, dict):
        raise _fail(board, f"{where} pll is {pll_in!r}", f"write pll = {{ m = .., n = .., {series.out_key} = .. }}")
    pll_where = f"{where} pll"
    _known(board, pll_in, pll_where)
    pll = {**series.defaults, **pll_in}
    m = _int(board, pll, "m", pll_where, series.m.start, series.m.stop - 1)
    n = _int(board, pll, "n", pll_where, series.n.start, series.n.stop - 1)
    out = _int(board, pll, series.out_key, pll_where)
    if out not in series.outs:
        raise _fail(board, f"{pll_where} {series.out_key} = {out} is not a divider the {series.name} PLL has",
                    f"use one of {', '.join(map(str, series.outs[:8]))}{' ...' if len(series.outs) > 8 else ''}")
    q = _int(board, pll, "q", pll_where)
    if q not in series.q:
        raise _fail(board, f"{pll_where} q = {q} is not a divider the {series.name} PLL has",
                    f"use {series.q[0]}..{series.q[-1]}")
    vco_in = source_hz / m
    vco = vco_in * n
    sysclk = source_hz * n // (m * out)
    if not series.vco_in[0] <= vco_in <= series.vco_in[1]:
        raise _fail(board, f"{pll_where}: the VCO input {vco_in / MHZ:g} MHz (source / m) is outside "
                    f"{series.vco_in[0] / MHZ:g}..{series.vco_in[1] / MHZ:g} MHz", "choose another m")
    if not series.vco_out[0] <= vco <= series.vco_out[1]:
        raise _fail(board, f"{pll_where}: the VCO output {vco / MHZ:g} MHz is outside "
                    f"{series.vco_out[0] / MHZ:g}..{series.vco_out[1] / MHZ:g} MHz", "choose another n")
    opts: dict[str, Any] = {}
    if series.name == "L4+":
        opts["boost"] = bool(clock.get("boost", False))
    if series.name == "F7":
        opts["overdrive"] = bool(clock.get("overdrive", False))
    if series.name == "H7":
        opts["vos"] = _int(board, clock, "vos", where, 0, 1)
        opts["supply"] = clock.get("supply")
        if opts["supply"] not in H7_SUPPLIES:
            raise _fail(board, f"{where} supply = {opts['supply']!r} is not a supply configuration this layer "
                        "sets", f"use one of {', '.join(H7_SUPPLIES)} (what the board's core supply is wired to)")
    for key in ("boost", "overdrive", "vos", "supply"):
        if key in clock and key not in opts:
            raise _fail(board, f"{where} {key} does not apply to the {series.name}", f"remove {key}")
    divs = {}
    for bus in ("ahb", *series.buses):
        key = f"{bus}_div"
        divs[key] = _int(board, clock, key, where)
        if divs[key] not in DIVIDERS:
            raise _fail(board, f"{where} {key} = {divs[key]} is not a bus prescaler",
                        f"use one of {', '.join(map(str, DIVIDERS))}")
    hclk = sysclk // divs["ahb_div"]
    if hclk != board.clock_hz or sysclk % divs["ahb_div"]:
        raise _fail(board, f"{where} gives {hclk:,} Hz ({source} {source_hz:,} / m {m} * n {n} / {series.out_key} "
                    f"{out} / ahb {divs['ahb_div']}), clock_hz says {board.clock_hz:,}",
                    "fix the pll values or clock_hz")
    limit = series.max_hz(opts)
    if sysclk > limit:
        mode = {"L4+": " without boost = true", "F7": " without overdrive = true"}.get(series.name, "")
        raise _fail(board, f"{where}: {sysclk:,} Hz is above the {series.name}'s {limit:,} Hz{mode}",
                    "lower the clock or enable the mode that allows it")
    buses = {bus: hclk // divs[f"{bus}_div"] for bus in series.buses}
    for bus, hz in buses.items():
        if hz > series.bus_max(opts, bus):
            raise _fail(board, f"{where}: {bus.upper()} at {hz:,} Hz is above its {series.bus_max(opts, bus):,} Hz "
                        "maximum", f"raise {bus}_div")
    latency = _int(board, clock, "flash_latency", where, 0, 15)
    need = series.min_latency(opts, hclk)
    if latency < need:
        raise _fail(board, f"{where} flash_latency = {latency} is too few wait states for {hclk:,} Hz "
                    f"(the {series.manual} asks for {need})", f"set flash_latency = {need}")
    return {
        "source": source, "source_hz": source_hz, "out_key": series.out_key,
        "pll": {"m": m, "n": n, "p": int(pll.get("p", 0)), "q": q, "r": int(pll.get("r", 0))},
        "flash_latency": latency, "vco_in_hz": vco_in, "vco_hz": vco, "sysclk_hz": sysclk, "hclk_hz": hclk,
        "bus_hz": buses, "boost": opts.get("boost", False), "overdrive": opts.get("overdrive", False),
        "vos": opts.get("vos"), "supply": opts.get("supply"),
        # RM0455 4.3.8 Table 15: the programming delay that goes with the read latency.
        "wrhighfreq": min(latency // 2, 3),
        **divs,
    }


def _memory(board: Board, data: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    memory = data.get("memory")
    where = "[stm32.memory]"
    if not isinstance(memory, dict) or not memory:
        raise _fail(board, f"no {where} table", "add FLASH = { origin = .., length = .. } and RAM = { .. }")
    regions = []
    for name, region in memory.items():
        if not _REGION.match(name) or not isinstance(region, dict):
            raise _fail(board, f"{where} {name} is not a region", "write NAME = { origin = 0x.., length = .. }")
        origin = _int(board, region, "origin", f"{where} {name}", 0, 0xFFFFFFFF)
        length = _int(board, region, "length", f"{where} {name}", 1, 0x100000000 - origin)
        regions.append({"name": name, "origin": origin, "length": length, "attrs": "rx" if name == "FLASH" else "rwx"})
    names = {r["name"]: r for r in regions}
    if "FLASH" not in names or "RAM" not in names:
        raise _fail(board, f"{where} needs the regions FLASH and RAM",
                    "name the flash region FLASH and the region for .data/.bss RAM")
    if names["FLASH"]["origin"] != FLASH_ORIGIN or names["FLASH"]["length"] != board.flash_bytes:
        raise _fail(board, f"{where} FLASH is {names['FLASH']['length']:,} B at {names['FLASH']['origin']:#010x}, "
                    f"flash_bytes says {board.flash_bytes:,} B at {FLASH_ORIGIN:#010x}",
                    "make FLASH start at 0x08000000 with length = flash_bytes")
    if names["RAM"]["length"] != board.ram_bytes:
        raise _fail(board, f"{where} RAM is {names['RAM']['length']:,} B, ram_bytes says {board.ram_bytes:,}",
                    "ram_bytes is the length of the region holding .data/.bss: make them equal")
    spans = sorted((r["origin"], r["origin"] + r["length"], r["name"]) for r in regions)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise _fail(board, f"{where} regions {a} and {b} overlap", "fix their origin / length")
    stack = data.get("stack_region", "RAM")
    if stack not in names or stack == "FLASH":
        raise _fail(board, f"[stm32] stack_region = {stack!r} is not a RAM region of {where}",
                    f"use one of {', '.join(n for n in names if n != 'FLASH')}")
    return regions, stack


def layer_data(board: Board, baud_override: int | None = None) -> dict[str, Any]:
    """The board's ``[stm32]`` data, checked against its series: pins, the PLL giving ``clock_hz``,
    bus limits and flash wait states, the UART's kernel clock and divisor, the memory regions
    against ``flash_bytes`` / ``ram_bytes``. Raises a one-line MicrotError naming the file and key.
    ``baud_override`` (the project's ``[device] baud``) replaces the board file's ``[stm32] baud``; a rate
    the UART's kernel clock cannot divide to (within 2 %) is refused naming the nearest one it can."""
    data = board.extra.get("stm32")
    if not isinstance(data, dict):
        raise _fail(board, "has no [stm32] table", "add the part's series, UART, pins, [stm32.clock] and "
                    "[stm32.memory] (see microt_deploy/targets/stm32/layer.py)")
    _known(board, data, "[stm32]")
    series = SERIES.get(data.get("series"))
    if series is None:
        raise _fail(board, f"[stm32] series = {data.get('series')!r} is not supported",
                    f"use one of {', '.join(SERIES)}")
    if board.arch != "arm" or (board.cpu == "cortex-m7") != series.cortex_m7:
        raise _fail(board, f"cpu = {board.cpu!r} does not match an {series.name} part",
                    f"use cpu = \"{'cortex-m7' if series.cortex_m7 else 'cortex-m4'}\"")
    uart_name = data.get("uart")
    uart = series.uarts.get(uart_name)
    if uart is None:
        raise _fail(board, f"[stm32] uart = {uart_name!r} is not a UART this layer drives on the {series.name}",
                    f"use one of {', '.join(series.uarts)} (or add it to the layer)")
    irq_count = _int(board, data, "irq_count", "[stm32]", 1, 496)
    if uart.irq >= irq_count:
        raise _fail(board, f"[stm32] irq_count = {irq_count} leaves out {uart_name}'s interrupt line {uart.irq}",
                    "set irq_count to the part's number of NVIC lines")
    tx, rx = _pin(board, series, "tx", data.get("tx")), _pin(board, series, "rx", data.get("rx"))
    af = _int(board, data, "af", "[stm32]", 0, 15)
    baud = _int(board, data, "baud", "[stm32]", 1200, 15_000_000) if "baud" in data else 115200
    if baud_override is not None:
        baud = int(baud_override)
    vddio2 = data.get("vddio2", False)
    if not isinstance(vddio2, bool) or (vddio2 and series.name not in ("L4", "L4+")):
        raise _fail(board, f"[stm32] vddio2 = {vddio2!r}", "vddio2 = true exists only on the L4 / L4+ (port G)")
    clock = _clock(board, series, data)
    kernel = clock["bus_hz"][uart.bus]
    if uart.lp:
        brr, lo, hi = round(256 * kernel / baud), 0x300, 0xFFFFF
        ok = 3 * baud <= kernel <= 4096 * baud
    else:
        brr, lo, hi = round(kernel / baud), 16, 0xFFFF
        ok = True
    if not (ok and lo <= brr <= hi):
        _, nearest = nearest_divided(kernel, baud, lo, hi, 256 if uart.lp else 1)
        if uart.lp:  # the LPUART also needs 3 * baud <= kernel <= 4096 * baud
            nearest = min(max(nearest, -(-kernel // 4096)), kernel // 3)
        raise _fail(board, f"[stm32] {uart_name} at {kernel:,} Hz gives BRR {brr} for {baud} baud, outside "
                    f"{lo:#x}..{hi:#x} (nearest working: {nearest:,} baud)",
                    f"set [device] baud = {nearest}, or change the {uart.bus} prescaler")
    # The divisor is a whole number: refuse a rate it misses by more than the receivers tolerate.
    check_divided(f"{board.id} {uart_name}", kernel, baud, lo, hi, f", or change the {uart.bus} prescaler",
                  256 if uart.lp else 1)
    regions, stack = _memory(board, data)
    vectors = ["Default_Handler"] * irq_count
    vectors[uart.irq] = "mdt_uart_irq_handler"
    return {
        "part": str(data.get("part", board.id)), "series": series.name, "macro": series.macro,
        "manual": series.manual, "cortex_m7": series.cortex_m7, "irq_count": irq_count,
        "uart": uart_name, "uart_irq": uart.irq, "uart_bus": uart.bus, "uart_lp": uart.lp,
        "uart_kernel_hz": kernel, "baud": baud, "brr": brr,
        "tx": tx, "rx": rx, "tx_port": ord(tx[0]) - ord("A"), "rx_port": ord(rx[0]) - ord("A"), "af": af,
        "vddio2": vddio2, "clock": clock, "memory": regions, "stack_region": stack, "vectors": vectors,
    }


def render_layer(env: jinja2.Environment, board: Board, values: dict[str, Any], src: Path, root: Path) -> list[str]:
    """Write the layer into a firmware folder: its C sources and the rendered ``mdt_board_stm32.h``
    into ``src``, the linker script into ``root/link.ld``. Returns the names of the .c files."""
    data = layer_data(board, values.get("baud"))
    stack_bytes = int(values["stack_bytes"])
    region = next(r for r in data["memory"] if r["name"] == data["stack_region"])
    if data["stack_region"] != "RAM" and stack_bytes > region["length"]:
        raise MicrotError(f"a {stack_bytes:,} B stack does not fit {board.id}'s {region['name']} "
                          f"({region['length']:,} B, where boards/{board.id}.toml puts the stack)",
                          f"use stack_bytes <= {region['length']}")
    src, root = Path(src), Path(root)
    (src / HEADER).write_text(env.get_template(f"boards/stm32/{HEADER}.j2").render(board=board, s=data))
    for name in SOURCES:
        shutil.copy2(LAYER_DIR / name, src / name)
    (root / "link.ld").write_text(env.get_template("boards/stm32/link.ld.j2").render(
        board=board, s=data, stack_bytes=stack_bytes))
    return list(SOURCES)
