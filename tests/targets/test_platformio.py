"""PlatformIO, for real and always offline (network namespace, private core folder): the ESP32
projects validated by `pio project config` with their fit estimate, an STM32 model that does not
fit refused with the numbers, `flash` failing with one line, and the emulated board built by
`pio run` and booted in QEMU. The STM32 builds themselves are in test_stm32.py."""

import json
import os
import re
import subprocess
import sys

import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import MicrotError
from microt_deploy.link.device import Device
from microt_deploy.targets import build, flash, image_path, launch, render_firmware
from microt_deploy.targets import platformio as pio
from tests.firmware.toy_model import HEADER, SOURCE, write_toy_model

ESP32_BOARDS = ["esp32dev", "esp32-s3-devkitc-1"]


@pytest.fixture(autouse=True)
def _pio_offline(monkeypatch):
    # Belt and braces: any pio call a code path makes in these tests stays off the network.
    monkeypatch.setenv(pio.OFFLINE_ENV, "1")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_model(tmp_path_factory.mktemp("toy") / "compiled")


def test_the_isolation_really_cuts_the_network():
    probe = ("import socket\ns = socket.socket()\ns.settimeout(3)\n"
             "try:\n    s.connect(('1.1.1.1', 443)); print('CONNECTED')\nexcept OSError as e:\n    print('NONET', e)\n"
             "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(); print('LOOPBACK')")
    out = subprocess.run([*pio.isolation_prefix(), "sh", "-c", pio._LO_UP, sys.executable, "-c", probe],
                         capture_output=True, text=True, timeout=30).stdout
    assert "NONET" in out and "CONNECTED" not in out and "LOOPBACK" in out


@pytest.mark.parametrize("board_id", ESP32_BOARDS)
def test_esp32_project_is_validated_and_its_fit_estimated(toy, tmp_path, board_id):
    board = load_board(board_id)
    fw = tmp_path / "fw"
    render_firmware(toy, board, fw, {"max_tasks": 2, "max_classes": 8})
    result = build(board, fw)
    assert result.image == fw / "fit" / "firmware_fit.elf" and result.image.read_bytes()[:4] == b"\x7fELF"
    assert 0 < result.flash_bytes < board.flash_bytes and 0 < result.ram_bytes <= board.ram_bytes
    env = pio.project_config(fw)[f"env:{board_id}"]
    assert env["platform"] == board.extra["pio_platform"] and env["board"] == board.extra["pio_board"]
    assert env["framework"] == [board.extra["pio_framework"]]
    assert env["upload_protocol"] == board.extra["upload_protocol"]
    desc = json.loads((fw / "build.json").read_text())
    assert desc["result"]["ram_bytes"] == result.ram_bytes
    assert result.estimate is True and desc["result"]["estimate"] is True
    assert any("pio project config parses" in line for line in desc["verified"])
    assert any("nothing ran on the board" in line for line in desc["not_verified"])
    # No Xtensa compiler here: the portable C was compiled for an ARM stand-in, and said so.
    assert "-mcpu=cortex-m4" in " ".join(desc["cflags"]) and any("estimate" in line for line in desc["not_verified"])
    assert image_path(board, fw) == fw / ".pio" / "build" / board_id / "firmware.elf"


def _bloated_model(out_dir, bss_bytes: int):
    # A model whose code keeps a large static buffer alive: it fits the planner, not the board.
    out_dir.mkdir(parents=True)
    (out_dir / "mdt_model.h").write_text(HEADER)
    source = SOURCE.replace("void mdt_trunk_run(int8_t *arena)\n{",
                            f"static int8_t bloat[{bss_bytes}];\nvoid mdt_trunk_run(int8_t *arena)\n{{\n"
                            "    bloat[arena[0] & 1023] = arena[1];\n    arena[2] = bloat[arena[3] & 1023];", 1)
    (out_dir / "mdt_model.c").write_text(source)
    return out_dir


def test_model_that_does_not_fit_is_refused_with_numbers(tmp_path):
    board = load_board("nucleo_l4r5zi")
    fw = tmp_path / "fw"
    render_firmware(_bloated_model(tmp_path / "big", 700_000), board, fw, {"max_slots": 64})
    with pytest.raises(MicrotError) as err:
        build(board, fw)
    text = str(err.value)
    match = re.fullmatch(r"model does not fit nucleo_l4r5zi: RAM overflowed by ([\d,]+) bytes "
                         r"\(needs ([\d,]+) of 655,360\); .+", text)
    assert match, text
    over, needs = (int(g.replace(",", "")) for g in match.groups())
    assert needs == 655_360 + over and over > 700_000 - 655_360
    assert not image_path(board, fw).exists()
    assert "result" not in json.loads((fw / "build.json").read_text())


def test_a_project_that_disagrees_with_the_board_file_is_refused(toy, tmp_path):
    board = load_board("disco_f746ng")
    fw = tmp_path / "fw"
    render_firmware(toy, board, fw, {})
    ini = fw / "platformio.ini"
    ini.write_text(ini.read_text().replace("board = disco_f746ng", "board = nucleo_f746zg"))
    with pytest.raises(MicrotError, match=r"\[env:disco_f746ng\] board is 'nucleo_f746zg', the board file says "
                                          r"'disco_f746ng'"):
        pio.validate_project(board, fw)
    ini.write_text("[env:disco_f746ng\nplatform = ")
    with pytest.raises(MicrotError, match=r"PlatformIO rejects .*platformio.ini"):
        pio.validate_project(board, fw)


@pytest.mark.slow  # PlatformIO retries its registry with a fixed back-off: about 60 s
def test_flash_through_the_registry_without_it_fails_in_one_line(toy, tmp_path):
    # What a user without network gets from the registry path (here in a namespace with no network).
    board = load_board("nucleo_l4r5zi")
    fw = tmp_path / "fw"
    render_firmware(toy, board, fw, {})
    with pytest.raises(MicrotError) as err:
        pio.upload(board, fw, "/dev/ttyACM0", offline=True)
    text = str(err.value)
    assert text.startswith("flashing nucleo_l4r5zi to /dev/ttyACM0 failed: PlatformIO could not install ststm32 "
                           "from its registry") and "\n" not in text
    assert "Traceback" not in text
    with pytest.raises(MicrotError, match="is not flashed"):
        flash(load_board("qemu_mps2_an386"), fw, None)
    with pytest.raises(MicrotError, match="has no platformio.ini"):
        flash(board, tmp_path, None, offline=True)


def test_stale_links_are_removed(tmp_path):
    packages = tmp_path / "core" / "packages"
    packages.mkdir(parents=True)
    live = tmp_path / "tool"
    live.mkdir()
    spec = {"owner": "platformio", "id": None, "name": "x", "requirements": None}
    (packages / "dead.pio-link").write_text(json.dumps({"cwd": str(tmp_path), "spec": {**spec, "uri": "symlink://gone"}}))
    (packages / "live.pio-link").write_text(json.dumps({"cwd": "/", "spec": {**spec, "uri": f"symlink://{live}"}}))
    assert [p.name for p in pio.remove_stale_links(tmp_path / "core")] == ["dead.pio-link"]
    assert (packages / "live.pio-link").is_file()


def test_emulated_board_built_by_pio_offline_is_the_direct_image_and_boots(toy, tmp_path):
    board = load_board("qemu_mps2_an386")
    direct_fw, pio_fw = tmp_path / "direct", tmp_path / "pio"
    options = {"max_tasks": 2, "max_classes": 8, "max_slots": 64}
    render_firmware(toy, board, direct_fw, options)
    render_firmware(toy, board, pio_fw, {**options, "pio": True})
    direct = build(board, direct_fw)
    via_pio = build(board, pio_fw)
    assert "Memory region" in via_pio.log and (pio_fw / ".pio" / "build" / board.id / "firmware.elf").is_file()
    assert via_pio.image == image_path(board, pio_fw)
    assert via_pio.image.read_bytes() == direct.image.read_bytes()  # the very same image, byte for byte
    assert (via_pio.flash_bytes, via_pio.ram_bytes) == (direct.flash_bytes, direct.ram_bytes)
    # A stale link left by a moved toolchain folder must not break the next pio call.
    core = pio_fw / "pio" / "core"
    (core / "packages" / "old.pio-link").write_text(json.dumps(
        {"cwd": "/", "spec": {"owner": "platformio", "id": None, "name": "old", "requirements": None,
                              "uri": "symlink:///nonexistent/toolchain"}}))
    targets = pio.run_pio(["run", "--list-targets"], pio_fw, core, offline=True, timeout_s=120)
    assert targets.returncode == 0 and re.search(r"\bCustom\s+qemu\s+QEMU\b", targets.stdout), targets.stdout
    with launch(board, via_pio.image, limit_s=60) as port:
        info = Device(port, timeout=10.0).hello()
    assert info.board == board.id


def test_cli_build_for_a_real_board(toy, tmp_path):
    # The user's path: `microt-deploy build --board nucleo_l4r5zi` in a project with a compiled model.
    project = tmp_path / "proj"
    cli = [sys.executable, "-m", "microt_deploy.cli"]
    env = {**os.environ, pio.OFFLINE_ENV: "1", "COLUMNS": "200"}
    done = subprocess.run([*cli, "init", str(project), "--board", "nucleo_l4r5zi"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    (project / "compiled").mkdir()
    for name in ("mdt_model.h", "mdt_model.c"):
        (project / "compiled" / name).write_text((toy / name).read_text())
    done = subprocess.run([*cli, "build", "--project", str(project)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r"built nucleo_l4r5zi: flash [\d,]+ B of 2,097,152 .*RAM [\d,]+ B of 655,360 .*"
                     r"\[PlatformIO, offline", done.stdout), done.stdout
    assert re.search(r"feature store: [\d,]+ samples", done.stdout)
    fw = project / "firmware" / "nucleo_l4r5zi"
    assert (fw / "platformio.ini").is_file() and (fw / "src" / "mdt_board_stm32.c").is_file()
    assert json.loads((fw / "build.json").read_text())["result"]["estimate"] is False
    assert (fw / ".pio" / "build" / "nucleo_l4r5zi" / "firmware.elf").is_file()
