"""SCons script of the microt-deploy emulated-board platform.

Builds exactly what the project's build.json describes (the sources, compiler flags, linker flags
and linker script of microt-deploy's direct build), so `pio run` makes the same image, and adds a
`qemu` target that runs it with UART0 on a loopback TCP port.
"""

import json
import os

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment, Environment

env = DefaultEnvironment()
project = env.subst("$PROJECT_DIR")
build_dir = env.subst("$BUILD_DIR")
with open(os.path.join(project, "build.json"), encoding="utf-8") as handle:
    desc = json.load(handle)

toolchain = env.PioPlatform().get_package_dir("toolchain-gccarmnoneeabi")
cc = os.path.join(toolchain, "bin", desc["cc"])
# "-I." of the direct build means the project folder; SCons scans headers through CPPPATH.
cflags = [flag for flag in desc["cflags"] if flag != "-I."]
ldflags = []
for flag in desc["ldflags"]:
    if flag == "link.ld":
        flag = os.path.join(project, "link.ld")
    elif flag.startswith("-Wl,-Map="):
        flag = "-Wl,-Map=" + os.path.join(build_dir, "firmware.map")
    ldflags.append(flag)

cenv = Environment(ENV=env["ENV"], CC=cc, CCFLAGS=cflags, CPPPATH=[project])
objects = [cenv.Object(os.path.join(build_dir, name[:-2] + ".o"), os.path.join(project, name))
           for name in desc["sources"]]
elf = cenv.Command(os.path.join(build_dir, "firmware.elf"), objects,
                   " ".join([cc, *cflags, "$SOURCES", *ldflags, "-o", "$TARGET"]))
cenv.Depends(elf, os.path.join(project, "link.ld"))
Default(elf)

qemu = " ".join(desc["pio"]["qemu"])
env.AddCustomTarget(
    name="qemu", dependencies=elf, actions=[qemu + " -kernel $SOURCE"], title="QEMU",
    description="Run the image in QEMU; UART0 waits for a client on " + desc["pio"]["qemu_serial"])
AlwaysBuild(env.Alias("elf", elf))
