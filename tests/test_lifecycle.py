"""Nothing lost, nothing left behind: a bad-input / fault matrix on the real CLI, each case checking
the exit code, the one-line message and that the previous outputs are intact.

- `infer --output` that is a symlink, FIFO, device node, folder or under a file: refused, untouched;
- a build that fails (model does not fit, no compiler) keeps the last good image and build.json;
- SIGTERM / SIGHUP / SIGINT to `build` while the compiler runs, and to a command running QEMU:
  exit 128+signo, `interrupted by SIG...`, no process of the children's groups alive, no temporaries;
- SIGKILL: the next command holding the project lock removes what the killed one left;
- two commands on one project: the second is refused at once (or waits with --wait).

The "compiler" of the interrupted builds is a script in front of arm-none-eabi-gcc that, while a
marker file exists, records its pid and waits on a child of its own instead of compiling.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from microt_deploy.project import init_project
from tests.firmware.toy_model import HEADER, SOURCE, write_toy_model

CLI = [sys.executable, "-m", "microt_deploy.cli"]
BOARD = "qemu_mps2_an386"
SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
REAL_GCC = shutil.which("arm-none-eabi-gcc")

FAKE_GCC = """#!/bin/sh
if [ -e "$MICROT_TEST_MARK/slow" ]; then
  sleep 300 &
  echo $! > "$MICROT_TEST_MARK/child.pid"
  echo $$ > "$MICROT_TEST_MARK/gcc.pid.part" && mv "$MICROT_TEST_MARK/gcc.pid.part" "$MICROT_TEST_MARK/gcc.pid"
  wait
  exit 1
fi
exec {gcc} "$@"
"""


def env_for(mark: Path | None = None, path: str | None = None) -> dict[str, str]:
    env = dict(os.environ, MICROT_PIO_OFFLINE="1", COLUMNS="200")
    if mark is not None:
        env["MICROT_TEST_MARK"] = str(mark)
        env["PATH"] = f"{mark / 'bin'}:{env['PATH']}"
    if path is not None:
        env["PATH"] = path
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env or env_for())


def start(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path: Path, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {path.name}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.05)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def leftovers(root: Path) -> list[Path]:
    """Temporary files and folders of the atomic writes and staged folders under ``root``."""
    return [p for p in root.rglob(".*") if ".pio" not in p.parts
            and (p.name.endswith((".tmp", ".old")) or ".tmp." in p.name)]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mark(tmp_path_factory) -> Path:
    """A folder with the slow stand-in compiler in bin/ (slow while mark/slow exists)."""
    root = tmp_path_factory.mktemp("mark")
    (root / "bin").mkdir()
    gcc = root / "bin" / "arm-none-eabi-gcc"
    gcc.write_text(FAKE_GCC.format(gcc=REAL_GCC))
    gcc.chmod(0o755)
    return root


@pytest.fixture()
def slow(mark: Path):
    (mark / "slow").touch()
    for name in ("gcc.pid", "child.pid"):
        (mark / name).unlink(missing_ok=True)
    yield mark
    (mark / "slow").unlink(missing_ok=True)
    for name in ("gcc.pid", "child.pid"):  # whatever a test left running of the stand-in
        pid_file = mark / name
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project with a compiled (toy) model and a good build of the emulated board."""
    root = tmp_path_factory.mktemp("life") / "proj"
    init_project(root, {"device": {"board": BOARD}})
    write_toy_model(root / "compiled")
    res = cli("build", "-p", str(root))
    assert res.returncode == 0, res.stderr
    # built in a staging folder, then swapped in: what build.json records names the final folder
    desc = json.loads((root / "firmware" / BOARD / "build.json").read_text())
    assert desc["result"]["image"] == str(root / "firmware" / BOARD / "firmware.elf")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    fw = root / "firmware" / BOARD
    return {name: (fw / name).read_bytes() for name in ("firmware.elf", "build.json", "mdt_model.c")}


# ---------------------------------------------------------------- infer --output


@pytest.fixture()
def infer_inputs(tmp_path: Path) -> tuple[Path, Path]:
    model, data = tmp_path / "m.tflite", tmp_path / "in.npy"
    model.write_bytes(b"not read: the output is checked first")
    np.save(data, np.zeros((1, 4), np.int8))
    return model, data


def _refused(model: Path, data: Path, output: Path, kind: str) -> str:
    res = cli("infer", str(model), "--input", str(data), "--output", str(output))
    assert res.returncode == 2, res.stderr
    line = one_line(res.stderr)
    assert f"cannot write {output}" in line and kind in line and "- for standard output" in line, line
    assert not leftovers(model.parent)  # the test's own folder (the outputs all lie in it)
    return line


def test_infer_refuses_a_symlink_and_leaves_it_and_its_target(tmp_path, infer_inputs) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "out.npy"
    link.symlink_to(target)
    _refused(*infer_inputs, link, "a symbolic link")
    assert link.is_symlink() and target.read_text() == "keep me"


def test_infer_refuses_a_fifo(tmp_path, infer_inputs) -> None:
    fifo = tmp_path / "out.npy"
    os.mkfifo(fifo)
    _refused(*infer_inputs, fifo, "a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_infer_refuses_a_device_node(tmp_path, infer_inputs) -> None:
    dev = tmp_path / "null"
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    _refused(*infer_inputs, dev, "a device")
    st = os.lstat(dev)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def test_infer_refuses_a_folder_and_a_path_under_a_file(tmp_path, infer_inputs) -> None:
    folder = tmp_path / "outdir"
    (folder / "inside").mkdir(parents=True)
    _refused(*infer_inputs, folder, "a folder")
    assert (folder / "inside").is_dir()
    plain = tmp_path / "plain.txt"
    plain.write_text("a file")
    line = _refused(*infer_inputs, plain / "out.npy", "is not a folder")
    assert str(plain) in line and plain.read_text() == "a file"


def test_infer_dash_writes_the_npy_to_stdout_and_the_summary_to_stderr(tmp_path, infer_inputs, monkeypatch) -> None:
    import io

    from click.testing import CliRunner

    from microt_deploy import cli as cli_module
    from microt_deploy.compiler import host_runner

    want = np.arange(-4, 4, dtype=np.int8).reshape(2, 4)
    monkeypatch.setattr(host_runner, "run_model", lambda model, inputs: [want])
    model, data = infer_inputs
    res = CliRunner().invoke(cli_module.main, ["infer", str(model), "--input", str(data), "--output", "-"])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(io.BytesIO(res.stdout_bytes)), want)
    assert "wrote the output to stdout: int8 (2, 4)" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "m.tflite"]


# ---------------------------------------------------------------- failed builds keep the last good one


def test_a_build_that_does_not_fit_keeps_the_previous_image(project: Path) -> None:
    before = snapshot(project)
    model = project / "compiled" / "mdt_model.c"
    good = model.read_text()
    bloated = SOURCE.replace("void mdt_trunk_run(int8_t *arena)\n{",
                             "static int8_t bloat[900000];\nvoid mdt_trunk_run(int8_t *arena)\n{\n"
                             "    bloat[arena[0] & 1023] = arena[1];\n    arena[2] = bloat[arena[3] & 1023];", 1)
    assert bloated != SOURCE and (project / "compiled" / "mdt_model.h").read_text() == HEADER
    model.write_text(bloated)
    try:
        res = cli("build", "-p", str(project))
    finally:
        model.write_text(good)
    assert res.returncode == 2, res.stderr
    assert re.search(rf"model does not fit {BOARD}: RAM overflowed by [\d,]+ bytes", one_line(res.stderr))
    assert snapshot(project) == before
    assert not leftovers(project)
    failed = project / "firmware" / f"{BOARD}.failed.log"
    assert "does not fit" in failed.read_text().splitlines()[0]
    assert cli("build", "-p", str(project)).returncode == 0 and not failed.exists()  # cleared by a good one


def test_a_build_without_its_compiler_keeps_the_previous_image(project: Path, tmp_path: Path) -> None:
    before = snapshot(project)
    res = cli("build", "-p", str(project), env=env_for(path=str(tmp_path)))
    assert res.returncode == 4
    assert "arm-none-eabi-gcc is not installed" in one_line(res.stderr)
    assert snapshot(project) == before and not leftovers(project)
    (project / "firmware" / f"{BOARD}.failed.log").unlink()


def test_flash_refuses_while_the_last_build_failed(tmp_path: Path) -> None:
    # The folder still holds the build before the failed one: flashing it would look like success.
    root = tmp_path / "proj"
    init_project(root, {"device": {"board": "nucleo_l4r5zi"}})
    fw = root / "firmware" / "nucleo_l4r5zi"
    fw.mkdir(parents=True)
    (fw / "build.json").write_text('{"board": "nucleo_l4r5zi", "result": {"image": "x"}}')
    (fw.parent / "nucleo_l4r5zi.failed.log").write_text("model does not fit nucleo_l4r5zi: RAM overflowed\nfix\n")
    res = cli("flash", "-p", str(root), "--offline")
    assert res.returncode == 2
    line = one_line(res.stderr)
    assert "the last build of nucleo_l4r5zi failed (model does not fit nucleo_l4r5zi: RAM overflowed)" in line
    assert "holds an earlier build" in line


# ---------------------------------------------------------------- signals while the compiler runs


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_the_build_ends_the_compiler_and_keeps_the_last_build(project, slow, signo) -> None:
    before = snapshot(project)
    proc = start("build", "-p", str(project), env=env_for(slow))
    wait_for(slow / "gcc.pid", proc)
    gcc, child = int((slow / "gcc.pid").read_text()), int((slow / "child.pid").read_text())
    assert alive(gcc) and alive(child) and os.getpgid(gcc) == gcc  # the compiler leads its own group
    assert leftovers(project / "firmware")  # the staging folder of the build in progress
    os.kill(proc.pid, signo)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signo, err
    assert one_line(err) == f"interrupted by {signal.Signals(signo).name}"
    assert gone([gcc, child]) and not group_members(gcc)
    assert snapshot(project) == before and not leftovers(project)


def test_sigkill_leftovers_are_removed_by_the_next_command(project, slow) -> None:
    before = snapshot(project)
    proc = start("build", "-p", str(project), env=env_for(slow))
    wait_for(slow / "gcc.pid", proc)
    gcc = int((slow / "gcc.pid").read_text())
    proc.kill()  # no handler runs: the staging folder stays, the compiler is orphaned
    proc.communicate(timeout=30)
    os.killpg(gcc, signal.SIGKILL)
    stale = leftovers(project / "firmware")
    assert stale and all(p.name.startswith(f".{BOARD}.") for p in stale)
    res = cli("report", "-p", str(project))  # any verb that takes the project lock
    assert res.returncode == 2 and "no runs" in res.stderr
    assert not leftovers(project) and snapshot(project) == before


# ---------------------------------------------------------------- one command at a time


def test_a_second_command_is_refused_at_once_and_waits_with_wait(project, slow) -> None:
    first = start("build", "-p", str(project), env=env_for(slow))
    wait_for(slow / "gcc.pid", first)
    t0 = time.monotonic()
    res = cli("build", "-p", str(project))
    assert time.monotonic() - t0 < 15
    assert res.returncode == 2
    line = one_line(res.stderr)
    match = re.fullmatch(r"error: project is busy: build \(pid (\d+)\) since \d\d:\d\d:\d\d; wait for it or stop it",
                         line)
    assert match and int(match[1]) == first.pid, line
    (slow / "slow").unlink()
    waiter = start("build", "-p", str(project), "--wait", env=env_for(slow))
    time.sleep(1.5)
    assert waiter.poll() is None  # still waiting for the first
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 128 + signal.SIGTERM
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert f"built {BOARD}" in out and not leftovers(project)


# ---------------------------------------------------------------- signals while QEMU runs

HARNESS = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from microt_deploy.boards import load_board
    from microt_deploy.cli import _friendly
    from microt_deploy.targets import launch

    @_friendly
    def main():
        with launch(load_board(sys.argv[1]), Path(sys.argv[2]), 120) as port:
            print(port.process.pid, flush=True)
            time.sleep(120)

    main()
""")


@pytest.mark.parametrize("signo", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_qemu_runs_ends_qemu(project, tmp_path, signo) -> None:
    # What `eval` does on the emulated board, without a trained project: launch, then wait.
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    proc = subprocess.Popen([sys.executable, str(script), BOARD, str(project / "firmware" / BOARD / "firmware.elf")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(),
                            cwd=Path(__file__).resolve().parent.parent)
    qemu = int(proc.stdout.readline())
    assert alive(qemu) and os.getpgid(qemu) == qemu
    assert "qemu-system-arm" in Path(f"/proc/{qemu}/cmdline").read_text()
    os.kill(proc.pid, signo)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signo, err
    assert one_line(err) == f"interrupted by {signal.Signals(signo).name}"
    assert gone([qemu]) and not group_members(qemu)
