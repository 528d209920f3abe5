"""PlatformIO, fenced: every ``pio`` call goes through :func:`run_pio`, which gives it a private core
folder, turns telemetry off and, offline, runs it in a network namespace with loopback only.

Owns: finding ``pio``, the isolation, the registry-free core folder (Debian's arm-none-eabi
toolchain and PyPI's SCons as installed PlatformIO packages, plus any local platform), the
validation of a rendered project's configuration (``pio project config``), ``pio run`` and
``pio run -t upload``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from microt_deploy import children
from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError, ToolMissingError
from microt_deploy.targets.toolchain import overflow_error, require_tool

PIO_TIMEOUT_S = 600
# Tests set this so that any pio call a code path makes stays off the network.
OFFLINE_ENV = "MICROT_PIO_OFFLINE"
# Loopback up inside the fresh namespace (QEMU targets talk over 127.0.0.1), then exec pio.
_LO_UP = 'ip link set lo up 2>/dev/null; exec "$0" "$@"'


def pio_executable() -> str:
    """The ``pio`` next to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("pio")
    if beside.is_file():
        return str(beside)
    found = shutil.which("pio")
    if found is None:
        raise ToolMissingError("PlatformIO (pio) is not installed", "install it: pip install platformio==6.2.0")
    return found


def isolation_prefix() -> list[str]:
    """``unshare`` arguments for a new network namespace (a user namespace too when not root)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise ToolMissingError("unshare is not installed (needed to keep PlatformIO offline)",
                               "install it: apt-get install util-linux")
    return [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]


def forced_offline() -> bool:
    """True when the environment asks for every pio call to be kept off the network."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def remove_stale_links(core_dir: Path) -> list[Path]:
    """Delete ``*.pio-link`` files whose target folder is gone: PlatformIO fails on every later call
    while one is there."""
    removed = []
    packages = Path(core_dir) / "packages"
    for link in packages.glob("*.pio-link") if packages.is_dir() else []:
        try:
            data = json.loads(link.read_text())
            target = Path(data["spec"]["uri"][len("symlink://"):])
            if not target.is_absolute():
                target = Path(data["cwd"]) / target
            alive = target.is_dir()
        except (OSError, ValueError, KeyError, TypeError):
            alive = False
        if not alive:
            link.unlink(missing_ok=True)
            removed.append(link)
    return removed


def run_pio(args: list[str], project_dir: Path, core_dir: Path | None, *, offline: bool = True,
            timeout_s: float = PIO_TIMEOUT_S, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``pio <args>`` in ``project_dir``; ``offline`` (or MICROT_PIO_OFFLINE=1) isolates it from
    the network. ``core_dir`` None uses the user's own PlatformIO folder (installed platforms)."""
    env = dict(os.environ, PLATFORMIO_SETTING_ENABLE_TELEMETRY="No", PLATFORMIO_DISABLE_PROGRESSBAR="true",
               PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL="3650", PLATFORMIO_NO_ANSI="true")
    env.update(extra_env or {})
    if core_dir is not None:
        Path(core_dir).mkdir(parents=True, exist_ok=True)
        remove_stale_links(Path(core_dir))
        env["PLATFORMIO_CORE_DIR"] = str(Path(core_dir).resolve())
    cmd = [pio_executable(), *args]
    if offline or forced_offline():
        cmd = [*isolation_prefix(), "sh", "-c", _LO_UP, *cmd]
    try:
        return children.run(cmd, cwd=project_dir, env=env, capture_output=True, text=True, timeout=timeout_s,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MicrotError(f"PlatformIO ({' '.join(args[:2])}) took over {timeout_s:.0f} s",
                          "check the machine's load and the project folder") from None


def _last_error(log: str) -> str:
    """The line of a pio log that says what went wrong, with what pio was installing at the time
    (an unreachable registry shows up as a bare ``HTTPClientError:``)."""
    lines = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith("Processing ")]
    strong = re.compile(r"(\w*(Error|Exception)\b:?|error:|\*\*\* \[|could not|Unknown)", re.IGNORECASE)
    error = next((line for line in lines if strong.search(line) and "Werror" not in line),
                 lines[-1] if lines else "no output")
    installing = re.findall(r"Installing (\S+)", log)
    if installing and ("HTTPClientError" in error or "Internet" in error or "registry" in error.lower()):
        return f"PlatformIO could not install {installing[-1]} from its registry ({error.rstrip(': ')})"
    return error


def project_config(project_dir: Path, core_dir: Path | None = None) -> dict[str, dict[str, object]]:
    """``pio project config --json-output`` of a project, as {section: {option: value}}; run offline
    (reading a configuration needs no network) with a private core folder when none is given."""
    with tempfile.TemporaryDirectory(prefix="microt-pio-core-") as tmp:
        proc = run_pio(["project", "config", "--json-output"], project_dir, core_dir or Path(tmp), offline=True,
                       timeout_s=120)
    if proc.returncode != 0:
        raise MicrotError(f"PlatformIO rejects {project_dir}/platformio.ini: {_last_error(proc.stdout + proc.stderr)}",
                          "render the firmware again with `microt-deploy build`")
    try:
        sections = json.loads(proc.stdout)
    except ValueError:
        raise MicrotError(f"`pio project config` printed no JSON for {project_dir}",
                          "check the PlatformIO version (6.2 is pinned)") from None
    return {name: dict(options) for name, options in sections}


def expected_options(board: Board) -> dict[str, str]:
    """The options a real board's environment must carry, from its data file."""
    want = {"platform": board.extra["pio_platform"], "board": board.extra["pio_board"],
            "upload_protocol": board.extra["upload_protocol"], "monitor_speed": "115200"}
    if board.extra.get("pio_framework"):
        want["framework"] = board.extra["pio_framework"]
    return want


def validate_project(board: Board, project_dir: Path) -> dict[str, object]:
    """Check that PlatformIO parses the project and that ``env:<board>`` has the board's platform,
    board, framework, upload protocol and strict build flags; returns the parsed environment."""
    config = project_config(project_dir)
    section = f"env:{board.id}"
    if section not in config:
        raise MicrotError(f"{project_dir}/platformio.ini has no [{section}] (found {sorted(config)})",
                          "render the firmware again with `microt-deploy build`")
    options = config[section]
    for name, want in expected_options(board).items():
        got = options.get(name)
        got = ",".join(got) if isinstance(got, list) else str(got)
        if got != want:
            raise MicrotError(f"[{section}] {name} is {got!r}, the board file says {want!r}",
                              "render the firmware again with `microt-deploy build`")
    if board.family == "stm32" and options.get("framework"):
        raise MicrotError(f"[{section}] names a framework ({options['framework']}); the STM32 layer is bare metal",
                          "render the firmware again with `microt-deploy build`")
    src_flags = " ".join(options.get("build_src_flags") or [])
    if board.family == "stm32" and not all(f in src_flags for f in ("-std=c99", "-Wall", "-Wextra", "-Werror")):
        raise MicrotError(f"[{section}] build_src_flags lack the strict C99 flags ({src_flags!r})",
                          "render the firmware again with `microt-deploy build`")
    return options


def _scons() -> tuple[str, Path]:
    try:
        import SCons
    except ImportError:
        raise ToolMissingError("SCons is not installed (PlatformIO's build engine, offline)",
                               "install it: pip install scons==4.11.1") from None
    return SCons.__version__, Path(SCons.__file__).resolve().parent.parent


def pio_version(release: str, prefix: int) -> str:
    """PlatformIO's package version for a tool release: SCons 4.11.1 -> 4.41101.0 (prefix 4)."""
    parts = [int(p) for p in re.findall(r"\d+", release)[:3]] + [0, 0]
    return f"{prefix}.{parts[0]}{parts[1]:02d}{parts[2]:02d}.0"


def _installed(folder: Path, kind: str, name: str, version: str) -> None:
    """What PlatformIO's own installer writes beside a package: its owner, name and version."""
    meta = {"type": kind, "name": name, "version": version,
            "spec": {"owner": "platformio", "id": None, "name": name, "requirements": None, "uri": None}}
    (folder / ".piopm").write_text(json.dumps(meta))


def gcc_release() -> str:
    """The version of Debian's arm-none-eabi-gcc, e.g. 12.2.1."""
    gcc = require_tool("arm-none-eabi-gcc")
    return children.run([gcc, "-dumpversion"], capture_output=True, text=True, check=True).stdout.strip()


def offline_core(core_dir: Path, platforms: dict[str, Path] | None = None) -> Path:
    """A PlatformIO core folder that needs no registry: Debian's arm-none-eabi toolchain and PyPI's
    SCons installed as the packages ``toolchain-gccarmnoneeabi`` and ``tool-scons``, and each of
    ``platforms`` ({name: folder with platform.json}) installed under its name. Rewritten whole."""
    from microt_deploy.firmware.render import template_env

    core_dir = Path(core_dir)
    if core_dir.exists():
        shutil.rmtree(core_dir)
    env = template_env()
    gcc = Path(require_tool("arm-none-eabi-gcc"))
    toolchain = core_dir / "packages" / "toolchain-gccarmnoneeabi"
    (toolchain / "bin").mkdir(parents=True)
    gcc_version = pio_version(gcc_release(), 1)
    (toolchain / "package.json").write_text(
        env.get_template("pio/qemu/toolchain/package.json.j2").render(gcc_version=gcc_version))
    for tool in sorted(gcc.parent.glob("arm-none-eabi-*")):
        (toolchain / "bin" / tool.name).symlink_to(tool)
    _installed(toolchain, "tool", "toolchain-gccarmnoneeabi", gcc_version)
    scons_release, scons_path = _scons()
    scons = core_dir / "packages" / "tool-scons"
    scons.mkdir(parents=True)
    scons_version = pio_version(scons_release, 4)
    (scons / "package.json").write_text(env.get_template("pio/qemu/tool-scons/package.json.j2").render(
        scons_version=scons_version, scons_release=scons_release))
    (scons / "scons.py").write_text(
        env.get_template("pio/qemu/tool-scons/scons.py.j2").render(scons_path=str(scons_path)))
    _installed(scons, "tool", "tool-scons", scons_version)
    for name, source in (platforms or {}).items():
        dest = core_dir / "platforms" / name
        shutil.copytree(source, dest)
        version = json.loads((dest / "platform.json").read_text())["version"]
        _installed(dest, "platform", name, version)
    return core_dir


def run_build(board: Board, project_dir: Path, core_dir: Path | None, *, offline: bool) -> str:
    """``pio run -e <board>`` of a rendered project (``core_dir`` None: the user's own PlatformIO
    with its registry); returns the log, also kept as build.log. A region overflow becomes the
    one-line fit error with the numbers."""
    proc = run_pio(["run", "-v", "-e", board.id], project_dir, core_dir, offline=offline)
    log = proc.stdout + proc.stderr
    (Path(project_dir) / "build.log").write_text(log)
    if proc.returncode != 0:
        err = overflow_error(board, log)
        if err is not None:
            raise err
        where = f"PLATFORMIO_CORE_DIR={core_dir} " if core_dir else ""
        hint = ("or build without the registry: microt-deploy build --offline" if not offline and core_dir is None
                else "see build.log in the folder")
        raise MicrotError(f"`pio run` failed for {board.id}: {_last_error(log)}",
                          f"full log: cd {project_dir} && {where}pio run -v; {hint}")
    return log


def upload_env(board: Board, serial_number: str | None) -> dict[str, str]:
    """Environment that makes PlatformIO's upload pick one probe of several by its USB serial number:
    for ST-LINK uploads (OpenOCD 0.12, PlatformIO's tool-openocd) the `adapter serial` command in
    PLATFORMIO_UPLOAD_FLAGS, which PlatformIO appends to the uploader's arguments."""
    if not serial_number or board.extra.get("upload_protocol") != "stlink":
        return {}
    return {"PLATFORMIO_UPLOAD_FLAGS": f'-c "adapter serial {serial_number}"'}


def upload(board: Board, fw_dir: Path, port: str | None = None, *, offline: bool = False,
           core_dir: Path | None = None, timeout_s: float | None = None, serial_number: str | None = None) -> str:
    """``pio run -e <board> -t upload [--upload-port PORT]`` in the rendered folder; returns the log.

    On a user's machine PlatformIO installs the board's platform from its registry the first time.
    ``offline`` runs it in a network namespace, with ``core_dir`` (a registry-free core) or else a
    private empty one (which then cannot install anything)."""
    fw_dir = Path(fw_dir)
    if not (fw_dir / "platformio.ini").is_file():
        raise MicrotError(f"{fw_dir} has no platformio.ini", f"run `microt-deploy build --board {board.id}` first")
    args = ["run", "-e", board.id, "-t", "upload"]
    if port:
        args += ["--upload-port", port]
    offline = offline or forced_offline()
    extra_env = upload_env(board, serial_number)
    with tempfile.TemporaryDirectory(prefix="microt-pio-core-") as tmp:
        core = core_dir or (Path(tmp) if offline else None)
        proc = run_pio(args, fw_dir, core, offline=offline, timeout_s=timeout_s or PIO_TIMEOUT_S, extra_env=extra_env)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        where = f" to {port}" if port else ""
        raise MicrotError(f"flashing {board.id}{where} failed: {_last_error(log)}",
                          f"check the cable, the port and that PlatformIO can install "
                          f"{board.extra.get('pio_platform')}; full log: cd {fw_dir} && pio run -t upload")
    return log
