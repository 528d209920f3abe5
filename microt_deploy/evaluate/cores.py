"""The runtime on every core QEMU emulates: each Cortex-M core of the installed QEMU's MPS2 / MPS3
machines and a 32-bit RISC-V core (rv32imc, the portable path ESP32-C3 / C6-class parts take).

One ``Core`` per target: compiler and flags, QEMU machine, memory map for the linker script, the UART
the bench harness (firmware_templates/bench/mdt_bench_main.c) writes its report to and the counter it
reads, and which kernel path (``dsp`` or ``portable``) the runtime's gate (mdt_dsp.h) must select.
The Cortex-M machines reuse the CMSDK board layer (firmware_templates/boards/cmsdk: UART, SysTick,
semihosting exit) with their UART base and SysTick clock passed as -D; the RISC-V one has its own
small layer (firmware_templates/boards/riscv_virt: NS16550A UART, the minstret CSR).

Used by ``microt-deploy bench --cores`` (the cores table) and tests/compiler/test_cores.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jinja2
import numpy as np
from rich.console import Console
from rich.table import Table

from microt_deploy import atomic, children
from microt_deploy.compiler import RUNTIME_DIR, GraphSpec, compile_program
from microt_deploy.errors import DeviceError, MicrotError, ToolMissingError
from microt_deploy.evaluate.bench_image import BENCH_DIR, STACK_BYTES, BenchRun, _bench_files, parse_report
from microt_deploy.firmware import render

APT_QEMU_ARM = "apt-get install -t bookworm-backports qemu-system-arm"
APT_QEMU_MISC = "apt-get install -t bookworm-backports qemu-system-misc"
APT_ARM_GCC = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
APT_RISCV_GCC = "apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf"
# The DSP fast paths' entry points (mdt_dsp.h): linked into an image exactly when the gate selected them.
DSP_SYMBOL = re.compile(r"^mdt_\w+_dsp$")
MiB = 1 << 20


@dataclass(frozen=True)
class Core:
    """One emulated core: how to build for it, where its memory is, how QEMU runs it."""

    id: str
    name: str
    arch: str                    # "arm" | "riscv"
    machine: str                 # QEMU -M
    cflags: tuple[str, ...]      # -mcpu / -march, FPU and ABI
    path: str                    # the kernel path the gate must select: "dsp" | "portable"
    flash_origin: int            # code + constants (read-only memory of the machine)
    flash_bytes: int
    ram_origin: int              # data, bss, arena, stack
    ram_bytes: int
    defines: tuple[str, ...] = ()  # board-layer parameters (UART base, SysTick clock)
    note: str = ""
    extra_qemu: tuple[str, ...] = field(default=())

    @property
    def family(self) -> str:
        return "cmsdk" if self.arch == "arm" else "riscv_virt"

    @property
    def qemu(self) -> str:
        return "qemu-system-arm" if self.arch == "arm" else "qemu-system-riscv32"

    @property
    def cc(self) -> str:
        return "arm-none-eabi-gcc" if self.arch == "arm" else "riscv64-unknown-elf-gcc"

    @property
    def tool_prefix(self) -> str:
        return "arm-none-eabi-" if self.arch == "arm" else "riscv64-unknown-elf-"

    @property
    def install(self) -> str:
        return APT_QEMU_ARM if self.arch == "arm" else APT_QEMU_MISC


def _systick(hz: int) -> tuple[str, ...]:
    """The CMSDK layer's SysTick clock and its instructions per tick (1e9 / hz under -icount shift=0)."""
    g = math.gcd(10**9, hz)
    return (f"MDT_CMSDK_SYSTICK_HZ={hz}u", f"MDT_CMSDK_INSN_PER_TICK_NUM={10**9 // g}u",
            f"MDT_CMSDK_INSN_PER_TICK_DEN={hz // g}u")


# MPS2 (AN385 / AN386 / AN500): ZBT SSRAM1 4 MB at 0 (code), SSRAM2/3 4 MB at 0x20000000, CMSDK UART0
# at 0x40004000, 25 MHz. The TrustZone machines boot in the secure state (SVTOR 0x10000000): their
# memories and UART are used through the secure aliases, which the MPCs / PPCs let through at reset.
# AN505 (SSE-200, 20 MHz): SSRAM1 4 MB at 0x10000000, SSRAM2+3 4 MB at 0x38000000, UART0 at 0x50200000.
# AN547 (SSE-300, 32 MHz): ITCM 512 KB at 0x10000000, DTCM 512 KB at 0x30000000, UART0 at 0x59303000.
# (Checked with `info mtree` on QEMU 10.0: tests/compiler/test_cores.py boots each.)
CORES: tuple[Core, ...] = (
    Core("cortex-m3", "Cortex-M3", "arm", "mps2-an385",
         ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"), "portable",
         0x00000000, 4 * MiB, 0x20000000, 4 * MiB, _systick(25_000_000),
         "ARMv7-M, no DSP extension, no FPU: the path M0 / M0+ / M3 users get"),
    Core("cortex-m4", "Cortex-M4F", "arm", "mps2-an386",
         ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"), "dsp",
         0x00000000, 4 * MiB, 0x20000000, 4 * MiB, _systick(25_000_000), "ARMv7E-M, DSP, SP FPU"),
    Core("cortex-m7", "Cortex-M7", "arm", "mps2-an500",
         ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"), "dsp",
         0x00000000, 4 * MiB, 0x20000000, 4 * MiB, _systick(25_000_000),
         "ARMv7E-M, DSP, DP FPU (QEMU's M7 has FPv5 with double precision)"),
    Core("cortex-m33", "Cortex-M33", "arm", "mps2-an505",
         ("-mcpu=cortex-m33", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"), "dsp",
         0x10000000, 4 * MiB, 0x38000000, 4 * MiB,
         ("MDT_CMSDK_UART0_BASE=0x50200000u", *_systick(20_000_000)),
         "ARMv8-M Mainline with the DSP extension, SP FPU; TrustZone, run in the secure state"),
    Core("cortex-m55", "Cortex-M55", "arm", "mps3-an547",
         ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"), "dsp",
         0x10000000, 512 * 1024, 0x30000000, 512 * 1024,
         ("MDT_CMSDK_UART0_BASE=0x59303000u", *_systick(32_000_000)),
         "ARMv8.1-M with DSP, MVE (integer + float) and DP FPU; code in ITCM, data in DTCM"),
    Core("rv32imc", "RISC-V rv32imc", "riscv", "virt",
         ("-march=rv32imc", "-mabi=ilp32"), "portable",
         0x80000000, 4 * MiB, 0x80400000, 4 * MiB, (),
         "RV32IMC (ESP32-C3-class), picolibc, no DSP: the portable kernels", ("-bios", "none")),
)
CORE_IDS = tuple(c.id for c in CORES)


def get_core(core_id: str) -> Core:
    for c in CORES:
        if c.id == core_id:
            return c
    raise MicrotError(f"no core {core_id!r}", f"choose one of: {', '.join(CORE_IDS)}")


def _tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f"{name} is not installed", f"install it: {install}")
    return path


_MACHINES: dict[str, str] = {}


def require_core(core: Core) -> None:
    """Raise ToolMissingError (with the install command) unless the compiler, its C library and a
    QEMU with the core's machine are installed."""
    if core.arch == "arm":
        _tool(core.cc, APT_ARM_GCC)
    else:
        _tool(core.cc, APT_RISCV_GCC)
        if not Path("/usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs").is_file():
            raise ToolMissingError("picolibc for riscv64-unknown-elf is not installed",
                                   f"install it: {APT_RISCV_GCC}")
    qemu = _tool(core.qemu, core.install)
    if qemu not in _MACHINES:
        _MACHINES[qemu] = children.run([qemu, "-M", "help"], capture_output=True, text=True, timeout=30).stdout
    if not re.search(rf"^{re.escape(core.machine)}\s", _MACHINES[qemu], re.MULTILINE):
        raise ToolMissingError(f"{core.qemu} has no machine {core.machine} ({core.name})",
                               f"install a QEMU that has it (10.0 here): {core.install}")


def toolchain(core: Core, opt: str = "-O2") -> dict:
    """Compiler, flags and link flags of a bench image for ``core`` (the flags of the firmware's
    direct build: -std=c99 -Wall -Wextra -Werror, sections collected by the linker)."""
    cflags = ["-std=c99", opt, "-Wall", "-Wextra", "-Werror", "-I.", *core.cflags,
              "-ffunction-sections", "-fdata-sections", *(f"-D{d}" for d in core.defines)]
    if core.arch == "arm":
        ldflags = ["-T", "link.ld", "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections", "-lm"]
    else:  # picolibc's headers and libc (its specs once: the compile and the link are one call)
        ldflags = ["--specs=picolibc.specs", "-T", "link.ld", "-nostartfiles", "-Wl,--gc-sections", "-lm"]
    return {"cc": core.cc, "cflags": cflags, "ldflags": ldflags, "image": "firmware.elf"}


def render_core_bench(compiled_dir: Path, plan: dict, x: np.ndarray, core: Core, out_dir: Path,
                      defines: tuple[str, ...] = (), opt: str = "-O2") -> Path:
    """A buildable bench folder for ``core``: the runtime, the core family's board layer, the bench
    harness, the compiled graph and its input, link.ld and build.json."""
    if len(plan["graphs"]) != 1:
        raise MicrotError("the bench harness measures one graph per image", "compile each graph on its own")
    layer = render.TEMPLATES / "boards" / core.family
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(render.TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    tool = toolchain(core, opt)
    with atomic.staged_dir(Path(out_dir)) as tmp:
        for path in [*RUNTIME_DIR.glob("*.[ch]"), render.TEMPLATES / "app" / "mdt_board.h",
                     render.TEMPLATES / "app" / "mdt_board_uart_only.h", *layer.glob("*.c"),
                     BENCH_DIR / "mdt_bench_main.c", Path(compiled_dir) / "mdt_model.c",
                     Path(compiled_dir) / "mdt_model.h"]:
            shutil.copy2(path, tmp / path.name)
        sources = sorted(p.name for p in RUNTIME_DIR.glob("*.c"))
        sources += sorted(p.name for p in layer.glob("*.c")) + ["mdt_bench_main.c"]
        cfg, data = _bench_files(plan, x)
        (tmp / "bench_cfg.h").write_text(cfg)
        (tmp / "bench_data.h").write_text(data)
        (tmp / "mdt_config.h").write_text("#define MDT_CLOCK_HZ 100000000u\n#define MDT_BAUD 115200u\n")
        (tmp / "link.ld").write_text(env.get_template(f"boards/{core.family}/link.ld.j2").render(
            board={"id": core.id}, flash_origin=hex(core.flash_origin), flash_bytes=core.flash_bytes,
            ram_origin=hex(core.ram_origin), ram_bytes=core.ram_bytes, stack_bytes=STACK_BYTES))
        desc = {"core": core.id, "sources": sources, **tool,
                "cflags": [*tool["cflags"], *(f"-D{d}" for d in defines)]}
        (tmp / "build.json").write_text(json.dumps(desc, indent=2) + "\n")
    return Path(out_dir)


@dataclass(frozen=True)
class CoreImage:
    elf: Path
    flash_bytes: int   # text + data (code, constants, .data's initial values)
    ram_bytes: int     # data + bss (arena, statics, the reserved stack)
    path: str          # "dsp" when a DSP fast path is linked, else "portable"


def build_core_bench(core: Core, fw_dir: Path, timeout_s: float = 600.0) -> CoreImage:
    """Compile and link a rendered folder; the image, its sizes and the kernel path linked into it."""
    require_core(core)
    fw_dir = Path(fw_dir)
    desc = json.loads((fw_dir / "build.json").read_text())
    elf = fw_dir / desc["image"]
    cmd = [desc["cc"], *desc["cflags"], *desc["sources"], "-o", elf.name, *desc["ldflags"]]
    res = children.run(cmd, cwd=fw_dir, capture_output=True, text=True, timeout=timeout_s)
    if res.returncode != 0:
        raise MicrotError(f"the {core.name} bench image did not build: {(res.stderr or res.stdout)[-1500:]}",
                          f"rerun by hand in {fw_dir}: {' '.join(cmd)}")
    size = children.run([core.tool_prefix + "size", str(elf)], capture_output=True, text=True, check=True,
                        timeout=60).stdout.splitlines()[1].split()
    text, data, bss = int(size[0]), int(size[1]), int(size[2])
    return CoreImage(elf=elf, flash_bytes=text + data, ram_bytes=data + bss, path=kernel_path(core, elf))


def symbols(core: Core, elf: Path) -> dict[str, int]:
    """Name -> address of every symbol in ``elf`` (``nm``)."""
    out = children.run([core.tool_prefix + "nm", str(elf)], capture_output=True, text=True, check=True,
                       timeout=60).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    return syms


def kernel_path(core: Core, elf: Path) -> str:
    """"dsp" when the image links a DSP fast path (mdt_*_dsp), else "portable"."""
    return "dsp" if any(DSP_SYMBOL.match(s) for s in symbols(core, elf)) else "portable"


def qemu_command(core: Core, elf: Path) -> list[str]:
    """Deterministic counting (-icount shift=0), the UART on stdout, semihosting for the exit."""
    return [shutil.which(core.qemu) or core.qemu, "-M", core.machine, *core.extra_qemu, "-icount", "shift=0",
            "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]


def run_core_image(core: Core, image: CoreImage, n_layers: int, limit_s: float = 300.0) -> BenchRun:
    """Run a bench image in QEMU to its semihosting exit; its parsed report."""
    require_core(core)
    start = time.monotonic()
    cmd = qemu_command(core, image.elf)
    try:
        res = children.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=limit_s)
    except subprocess.TimeoutExpired as e:
        raise DeviceError(f"{core.name} ({core.machine}) did not finish within {limit_s:.0f} s",
                          f"run it by hand: {' '.join(cmd)}") from e
    text = res.stdout.decode(errors="replace")
    if res.returncode != 0:
        raise DeviceError(f"{core.name} ({core.machine}) exited with status {res.returncode}: "
                          f"{(text + res.stderr.decode(errors='replace'))[-300:]!r}",
                          f"run it by hand: {' '.join(cmd)}")
    unit, total, layers, out = parse_report(text, n_layers)
    return BenchRun(unit=unit, total=total, layers=layers, output=np.frombuffer(out, dtype=np.int8).copy(),
                    flash_bytes=image.flash_bytes, ram_bytes=image.ram_bytes, text_bytes=image.flash_bytes,
                    wall_s=time.monotonic() - start)


@dataclass
class CoreResult:
    """One model on one core."""

    core: str
    model: str
    path: str
    bit_exact: bool
    differing_bytes: int
    instructions: int
    flash_bytes: int
    ram_bytes: int
    wall_s: float


def run_on_core(core: Core, compiled: Path, plan: dict, x: np.ndarray, expected: np.ndarray, work: Path,
                model: str = "net", opt: str = "-O2", limit_s: float = 300.0) -> CoreResult:
    """Build ``compiled`` (one graph) for ``core``, run it on ``x``, compare with ``expected``."""
    start = time.monotonic()
    fw = render_core_bench(compiled, plan, x, core, work / f"fw_{core.id}", opt=opt)
    image = build_core_bench(core, fw)
    run = run_core_image(core, image, len(plan["graphs"][0]["layers"]), limit_s)
    expected = np.asarray(expected, dtype=np.int8).reshape(-1)
    same_shape = run.output.shape == expected.shape
    diff = int(np.count_nonzero(run.output != expected)) if same_shape else int(expected.size)
    return CoreResult(core=core.id, model=model, path=image.path, bit_exact=same_shape and diff == 0,
                      differing_bytes=diff, instructions=run.total, flash_bytes=image.flash_bytes,
                      ram_bytes=image.ram_bytes, wall_s=round(time.monotonic() - start, 1))


def _fits(core: Core, plan: dict) -> bool:
    """Whether the model's constants and arena leave room for code and stack in the core's memory."""
    return plan["const_bytes"] + 64 * 1024 <= core.flash_bytes and \
        plan["arena_size"] + STACK_BYTES + 16 * 1024 <= core.ram_bytes


def cores_table(results: list[dict], models: list[str]) -> Table:
    """One row per core and model: kernel path, bit-exact, instructions (and against the M4's), flash."""
    table = Table(title="microt-deploy on every core QEMU emulates (-icount shift=0: retired instructions; "
                        "bit-exact: every output byte vs TFLite BUILTIN_REF)")
    for col in ("core", "QEMU machine", "path", "model", "bit-exact", "instr / inference", "x Cortex-M4F",
                "flash B"):
        table.add_column(col, justify="left" if col in ("core", "QEMU machine", "path", "model") else "right")
    m4 = next((r["models"] for r in results if r["core"] == "cortex-m4"), {})
    for r in results:
        path = r["path"] if r["path"] == r["expected_path"] else \
            f"[bold red]{r['path']} (expected {r['expected_path']})[/bold red]"
        first = True
        for m in models:
            run = r["models"].get(m)
            if run is None:
                table.add_row(r["name"] if first else "", r["machine"] if first else "", path if first else "",
                              m, "-", "does not fit", "-", "-")
            else:
                exact = "yes" if run["bit_exact"] else f"[bold red]NO ({run['differing_bytes']} B)[/bold red]"
                ratio = f"{run['instructions'] / m4[m]['instructions']:.2f}" if m in m4 else "-"
                table.add_row(r["name"] if first else "", r["machine"] if first else "", path if first else "",
                              m, exact, f"{run['instructions']:,}", ratio, f"{run['flash_bytes']:,}")
            first = False
        table.add_section()
    return table


def run_cores(models: list[Path], json_path: Path | None, console: Console,
              core_ids: tuple[str, ...] = CORE_IDS) -> dict:
    """Every model on every core: path, bit-exactness, instructions per inference, flash. Prints the
    table, writes JSON where ``json_path`` says; returns the results."""
    from microt_deploy.evaluate.bench import bench_input, reference_output

    cores = [get_core(c) for c in core_ids]
    for core in cores:
        require_core(core)
    names = [m.name.removesuffix(".tflite").removeprefix("mlperf_tiny_") for m in models]
    per_core: dict[str, dict] = {c.id: {} for c in cores}
    with tempfile.TemporaryDirectory(prefix="microt-cores-") as tmp:
        for i, (model, name) in enumerate(zip(models, names, strict=True)):
            work = Path(tmp) / f"m{i}"
            plan = compile_program([GraphSpec(model, "net")], work / "compiled")
            x = bench_input(plan["graphs"][0]["inputs"][0]["shape"])
            expected = reference_output(model, x)
            for core in cores:
                if not _fits(core, plan):
                    console.print(f"[dim]{name} does not fit {core.name}'s memory: skipped[/dim]")
                    continue
                console.print(f"[dim]cores: {name} on {core.name} ({core.machine})[/dim]")
                per_core[core.id][name] = asdict(run_on_core(core, work / "compiled", plan, x, expected, work,
                                                             model=name))
    results = []
    for core in cores:
        runs = per_core[core.id]
        paths = {r["path"] for r in runs.values()}
        results.append({"core": core.id, "name": core.name, "machine": core.machine, "cflags": list(core.cflags),
                        "note": core.note, "expected_path": core.path,
                        "path": paths.pop() if len(paths) == 1 else ("mixed" if paths else "-"),
                        "bit_exact": bool(runs) and all(r["bit_exact"] for r in runs.values()),
                        "models": runs})
    console.print(cores_table(results, names))
    bad = [r["name"] for r in results if not r["bit_exact"] or r["path"] != r["expected_path"]]
    if bad:
        console.print(f"[bold red]NOT BIT-EXACT or wrong kernel path on: {', '.join(bad)}[/bold red]")
    out = {"note": "instructions: QEMU -icount shift=0 retired instructions of one inference (Cortex-M: "
                   "SysTick-based, resolution 40 / 50 / 31.25; RISC-V: minstret, exact); flash: text + data",
           "cores": results}
    if json_path:
        atomic.write_text(Path(json_path), json.dumps(out, indent=1) + "\n")
    return out
