"""PlatformIO, fenced: every ``pio`` call goes through :func:`run_pio`, which gives it a private core
folder, turns telemetry off and, offline, runs it in a network namespace with loopback only.

Owns: finding ``pio``, the isolation, the validation of a rendered project's configuration
(``pio project config``), the offline build of the emulated board, and ``pio run -t upload``.
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

from microt_deploy.boards import Board
from microt_deploy.errors import MicrotError, ToolMissingError

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
            timeout_s: float = PIO_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``pio <args>`` in ``project_dir``; ``offline`` (or MICROT_PIO_OFFLINE=1) isolates it from
    the network. ``core_dir`` None uses the user's own PlatformIO folder (installed platforms)."""
    env = dict(os.environ, PLATFORMIO_SETTING_ENABLE_TELEMETRY="No", PLATFORMIO_DISABLE_PROGRESSBAR="true",
               PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL="3650", PLATFORMIO_NO_ANSI="true")
    if core_dir is not None:
        Path(core_dir).mkdir(parents=True, exist_ok=True)
        remove_stale_links(Path(core_dir))
        env["PLATFORMIO_CORE_DIR"] = str(Path(core_dir).resolve())
    cmd = [pio_executable(), *args]
    if offline or forced_offline():
        cmd = [*isolation_prefix(), "sh", "-c", _LO_UP, *cmd]
    try:
        return subprocess.run(cmd, cwd=project_dir, env=env, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MicrotError(f"PlatformIO ({' '.join(args[:2])}) took over {timeout_s:.0f} s",
                          "check the machine's load and the project folder") from None


def _last_error(log: str) -> str:
    """The line of a pio log that says what went wrong, with what pio was installing at the time
    (an unreachable registry shows up as a bare ``HTTPClientError:``)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    error = next((line for line in reversed(lines)
                  if any(word in line.lower() for word in ("error", "could not", "unknown"))),
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
    return {"platform": board.extra["pio_platform"], "board": board.extra["pio_board"],
            "framework": board.extra["pio_framework"], "upload_protocol": board.extra["upload_protocol"],
            "monitor_speed": "115200"}


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
    src_flags = " ".join(options.get("build_src_flags") or [])
    if board.family == "stm32" and not all(f in src_flags for f in ("-std=c99", "-Wall", "-Wextra", "-Werror")):
        raise MicrotError(f"[{section}] build_src_flags lack the strict C99 flags ({src_flags!r})",
                          "render the firmware again with `microt-deploy build`")
    return options


def build_offline(board: Board, project_dir: Path, core_dir: Path) -> str:
    """``pio run`` of the emulated board's project, in a network namespace; returns its log."""
    proc = run_pio(["run", "-e", board.id], project_dir, core_dir, offline=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        from microt_deploy.targets.builder import overflow_error

        err = overflow_error(board, log)
        if err is not None:
            raise err
        raise MicrotError(f"`pio run` failed for {board.id}: {_last_error(log)}",
                          f"see the full log: cd {project_dir} && PLATFORMIO_CORE_DIR={core_dir} pio run")
    return log


def upload(board: Board, fw_dir: Path, port: str | None = None, *, offline: bool = False) -> str:
    """``pio run -e <board> -t upload [--upload-port PORT]`` in the rendered folder; returns the log.

    On a user's machine PlatformIO installs the board's platform from its registry the first time.
    ``offline`` (tests) runs it in a network namespace with a private core folder."""
    fw_dir = Path(fw_dir)
    if not (fw_dir / "platformio.ini").is_file():
        raise MicrotError(f"{fw_dir} has no platformio.ini", f"run `microt-deploy build --board {board.id}` first")
    args = ["run", "-e", board.id, "-t", "upload"]
    if port:
        args += ["--upload-port", port]
    offline = offline or forced_offline()
    with tempfile.TemporaryDirectory(prefix="microt-pio-core-") as tmp:
        proc = run_pio(args, fw_dir, Path(tmp) if offline else None, offline=offline)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        where = f" to {port}" if port else ""
        raise MicrotError(f"flashing {board.id}{where} failed: {_last_error(log)}",
                          f"check the cable, the port and that PlatformIO can install "
                          f"{board.extra.get('pio_platform')}; full log: cd {fw_dir} && pio run -t upload")
    return log
