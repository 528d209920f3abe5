"""PlatformIO extra script (post) of microt-deploy's STM32 projects: the last word on the flags.

The ST platform builds bare-metal projects at -Os with only -mcpu and -mthumb, so an image would
be soft-float; its link also names libstdc++ and newlib's crt0. Here every compile, assemble and
link step gets the board's CPU and FPU flags (custom_mdt_cpu_flags) and the optimisation level
(custom_mdt_optimize); the link gets our startup (no crt0), newlib-nano, a map file and the
per-region memory use that microt-deploy reads back.
"""

Import("env", "projenv")  # noqa: F821 - SCons injects Import

cpu_flags = env.GetProjectOption("custom_mdt_cpu_flags").split()  # noqa: F821
optimize = env.GetProjectOption("custom_mdt_optimize").split()  # noqa: F821


def _without_optimisation(flags):
    return [flag for flag in flags if not (isinstance(flag, str) and flag.startswith("-O"))]


for scope in (env, projenv):  # noqa: F821 - projenv builds src/, env the link and libraries
    scope.Replace(
        CCFLAGS=_without_optimisation(scope.get("CCFLAGS", [])) + cpu_flags + optimize,
        ASFLAGS=_without_optimisation(scope.get("ASFLAGS", [])) + cpu_flags,
        LINKFLAGS=_without_optimisation(scope.get("LINKFLAGS", [])) + cpu_flags + optimize + [
            "-nostartfiles", "--specs=nano.specs", "-Wl,--print-memory-usage",
            "-Wl,-Map=${BUILD_DIR}/firmware.map"],
        LIBS=[lib for lib in scope.get("LIBS", []) if lib not in ("stdc++", "nosys")],
    )
