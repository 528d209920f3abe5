"""SCons script of microt-deploy's offline stand-in for PlatformIO's ST STM32 platform.

It does what the registry platform does for a project without a framework (read from its public
builder/main.py and builder/frameworks/_bare.py): the arm-none-eabi tools, -Os, function and data
sections, -Wall, -mthumb and the board's -mcpu, libc/libgcc/libm/libstdc++, the ELF turned into a
.bin, the size check against the board's limits. The project's own extra script then sets the
flags microt-deploy relies on, on either platform. Upload uses the system's OpenOCD (Debian's
`openocd` package) with the board's OpenOCD configuration, since the registry's is out of reach.
"""

import shutil
import sys
from os.path import join

from SCons.Script import AlwaysBuild, Builder, Default, DefaultEnvironment

env = DefaultEnvironment()
board = env.BoardConfig()
cpu = board.get("build.cpu")

env.Replace(
    AR="arm-none-eabi-ar", AS="arm-none-eabi-as", CC="arm-none-eabi-gcc", CXX="arm-none-eabi-g++",
    GDB="arm-none-eabi-gdb", OBJCOPY="arm-none-eabi-objcopy", RANLIB="arm-none-eabi-ranlib",
    SIZETOOL="arm-none-eabi-size", ARFLAGS=["rc"],
    SIZEPROGREGEXP=r"^(?:\.text|\.data|\.rodata|\.text.align|\.ARM.exidx)\s+(\d+).*",
    SIZEDATAREGEXP=r"^(?:\.data|\.bss|\.noinit)\s+(\d+).*",
    SIZECHECKCMD="$SIZETOOL -A -d $SOURCES", SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    PROGSUFFIX=".elf", PROGNAME="firmware",
)
env.Append(
    ASFLAGS=["-x", "assembler-with-cpp"],
    CCFLAGS=["-Os", "-ffunction-sections", "-fdata-sections", "-Wall", "-mthumb", "-mcpu=%s" % cpu],
    CXXFLAGS=["-fno-rtti", "-fno-exceptions"],
    CPPDEFINES=[("F_CPU", "$BOARD_F_CPU")],
    LINKFLAGS=["-Os", "-Wl,--gc-sections,--relax", "-mthumb", "-mcpu=%s" % cpu],
    LIBS=["c", "gcc", "m", "stdc++"],
    BUILDERS=dict(ElfToBin=Builder(
        action=env.VerboseAction("$OBJCOPY -O binary $SOURCES $TARGET", "Building $TARGET"), suffix=".bin")),
)
env.Append(ASFLAGS=env.get("CCFLAGS", [])[:])

target_elf = env.BuildProgram()
target_bin = env.ElfToBin(join("$BUILD_DIR", "${PROGNAME}"), target_elf)
Default([env.Alias("buildprog", target_bin, target_bin)])
AlwaysBuild(env.Alias("size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE")))

debug = board.get("debug", {})
openocd_config = (["-f", "board/%s.cfg" % debug["openocd_board"]] if "openocd_board" in debug else
                  ["-f", "interface/stlink.cfg", "-c", "transport select hla_swd",
                   "-f", "target/%s.cfg" % debug.get("openocd_target", "stm32l4x")])


def _upload(target, source, env):  # noqa: ARG001 - SCons action signature
    openocd = shutil.which("openocd")
    if openocd is None:
        sys.stderr.write("Error: openocd is not installed (offline upload uses the system's): "
                         "apt-get install openocd\n")
        return 1
    return env.Execute(env.VerboseAction(
        " ".join([openocd, *openocd_config, "-c", '"program {$SOURCE} verify reset; shutdown;"']),
        "Uploading $SOURCE"))


AlwaysBuild(env.Alias("upload", target_elf, _upload))
