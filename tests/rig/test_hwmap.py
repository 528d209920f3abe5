"""Rig files in the shape of twister's hardware map: load, round-trip, platform aliases, errors, select."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from microt_deploy.boards import board_for_platform, known_boards, load_board
from microt_deploy.cli import main
from microt_deploy.errors import MicrotError, NoBoardError, RigError
from microt_deploy.rig import RigEntry, load_rig, save_rig, select

# As `twister --generate-hardware-map` writes it (keys sorted, ids quoted), edited by hand the way rigs
# are: fixtures, runner_params, scripts, a second platform name, and our own keys.
TWISTER_MAP = textwrap.dedent("""\
    - connected: true
      fixtures:
      - gpio_loopback
      - fixture_i2c_sensor
      id: 0669FF555052836687031752
      notes: bench 2, left
      platform: nucleo_l4r5zi/stm32l4r5xx
      product: STLINK-V3
      runner: openocd
      runner_params:
      - --cmd-pre-init
      - adapter speed 4000
      serial: /dev/ttyACM0
      flash_timeout: 120
      flash_before: false
      pre_script: /opt/rig/power_on.sh
      post_script: /opt/rig/power_off.sh
      post_flash_script: /opt/rig/settle.sh
      gates:
        accuracy: {min: 0.9}
      timeout_multiplier: 2.5
      custom_lab_field: {rack: 3}
    - connected: false
      id: '001050076605'
      platform: disco_l475_iot1
      product: STM32 STLink
      runner: stm32cubeprogrammer
      serial: /dev/ttyACM1
      baud: 115200
    - connected: true
      id: 58:CF:79:04:5A:10
      platform: esp32_devkitc/esp32/procpu
      product: CP2102N USB to UART Bridge Controller
      runner: esp32
      serial: /dev/ttyUSB0
      reset: esptool
      serial_pty: null
    - platform: qemu_mps2_an386
      timeout_multiplier: 4
""")


def write(tmp_path: Path, text: str, name: str = "rig.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_twister_map_loads_with_every_key(tmp_path: Path) -> None:
    entries = load_rig(write(tmp_path, TWISTER_MAP))
    assert [e.board for e in entries] == ["nucleo_l4r5zi", "disco_l475vg_iot01a", "esp32dev", "qemu_mps2_an386"]
    l4, disco, esp, qemu = entries
    assert l4.id == "0669FF555052836687031752" and l4.serial == "/dev/ttyACM0" and l4.connected
    assert l4.fixtures == ["gpio_loopback", "fixture_i2c_sensor"]
    assert l4.runner_params == ["--cmd-pre-init", "adapter speed 4000"]
    assert (l4.flash_timeout, l4.flash_before, l4.pre_script) == (120, False, "/opt/rig/power_on.sh")
    assert l4.post_flash_script == "/opt/rig/settle.sh" and l4.notes == "bench 2, left"
    assert l4.gates == {"accuracy": {"min": 0.9}} and l4.timeout_multiplier == 2.5
    assert l4.extra == {"custom_lab_field": {"rack": 3}}
    assert l4.reset == "probe"  # the stm32 default
    assert disco.id == "001050076605" and not disco.connected and disco.baud == 115200
    assert esp.reset == "esptool" and esp.runner == "esp32"
    # An emulated entry needs neither id nor serial, and is connected unless it says otherwise.
    assert qemu.id is None and qemu.serial is None and qemu.connected and qemu.reset == "none"
    assert qemu.timeout_multiplier == 4.0


def test_save_round_trips_unknown_keys_and_order(tmp_path: Path) -> None:
    src = write(tmp_path, TWISTER_MAP)
    entries = load_rig(src)
    out = tmp_path / "out.yaml"
    save_rig(out, entries)
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(TWISTER_MAP)
    for before, after in zip(yaml.safe_load(TWISTER_MAP), yaml.safe_load(out.read_text()), strict=True):
        assert list(before) == list(after)  # the file's key order
    assert "id: '001050076605'" in out.read_text()  # still quoted: an all-digit serial number stays text
    assert load_rig(out) == entries

    # A change keeps the rest of the entry as it was.
    entries[1].connected = True
    entries[0].extra["added_by_hand"] = "yes"
    save_rig(out, entries)
    again = yaml.safe_load(out.read_text())
    assert again[1]["connected"] is True and again[1]["runner"] == "stm32cubeprogrammer"
    assert again[0]["custom_lab_field"] == {"rack": 3} and again[0]["added_by_hand"] == "yes"


def test_new_entry_writes_only_what_it_sets(tmp_path: Path) -> None:
    out = tmp_path / "new.yaml"
    save_rig(out, [RigEntry(platform="host", board="host")])
    assert yaml.safe_load(out.read_text()) == [{"platform": "host"}]
    save_rig(out, [RigEntry(platform="nucleo_l4r5zi", board="nucleo_l4r5zi", id="ABC", connected=True,
                            reset="probe", serial="/dev/ttyACM0", gates={"latency_ms": {"max": 5}})])
    assert yaml.safe_load(out.read_text()) == [{"connected": True, "id": "ABC", "platform": "nucleo_l4r5zi",
                                                "serial": "/dev/ttyACM0", "gates": {"latency_ms": {"max": 5}}}]


@pytest.mark.parametrize("name, board", [
    ("nucleo_l4r5zi", "nucleo_l4r5zi"),
    ("nucleo_l4r5zi/stm32l4r5xx", "nucleo_l4r5zi"),
    ("disco_l475_iot1", "disco_l475vg_iot01a"),
    ("disco_l475vg_iot01a", "disco_l475vg_iot01a"),
    ("stm32f746g_disco", "disco_f746ng"),
    ("stm32f746g_disco/stm32f746xx", "disco_f746ng"),
    ("nucleo_h7a3zi_q", "nucleo_h7a3zi_q"),
    ("esp32_devkitc_wroom", "esp32dev"),
    ("esp32_devkitc_wroom/esp32/procpu", "esp32dev"),
    ("esp32_devkitc/esp32/procpu", "esp32dev"),
    ("esp32s3_devkitc/esp32s3/procpu", "esp32-s3-devkitc-1"),
    ("mps2_an386", "qemu_mps2_an386"),
    ("mps2/an386", "qemu_mps2_an386"),
    ("native_sim", "host"),
    ("native_sim/native/64", "host"),
    ("NUCLEO_L4R5ZI", "nucleo_l4r5zi"),
])
def test_platform_aliases_resolve(name: str, board: str) -> None:
    assert board_for_platform(name).id == board


def test_every_board_lists_its_zephyr_names_once() -> None:
    seen: dict[str, str] = {}
    for board_id in known_boards():
        names = load_board(board_id).extra.get("zephyr_platforms")
        assert names and all(isinstance(n, str) for n in names), board_id
        for name in names:
            assert name not in seen, f"{name} in {board_id} and {seen.get(name)}"
            seen[name] = board_id
            assert board_for_platform(name).id == board_id


def test_unknown_platform_lists_known_ids() -> None:
    with pytest.raises(MicrotError, match="unknown platform 'mps2/an385'.*nucleo_l4r5zi"):
        board_for_platform("mps2/an385")


def test_several_platform_names_of_one_board(tmp_path: Path) -> None:
    path = write(tmp_path, "- connected: true\n  id: X1\n"
                           "  platform: esp32_devkitc/esp32/procpu esp32_devkitc/esp32/appcpu\n"
                           "- platform: [mps2_an386, mps2/an386]\n")
    a, b = load_rig(path)
    assert a.board == "esp32dev" and a.platforms == ["esp32_devkitc/esp32/procpu", "esp32_devkitc/esp32/appcpu"]
    assert b.board == "qemu_mps2_an386"


def test_board_key_maps_a_platform_we_do_not_know(tmp_path: Path) -> None:
    entry, = load_rig(write(tmp_path, "- platform: my_custom_l4r5_carrier\n  board: nucleo_l4r5zi\n"))
    assert entry.board == "nucleo_l4r5zi" and entry.platform == "my_custom_l4r5_carrier"


def test_empty_file_has_no_entries(tmp_path: Path) -> None:
    assert load_rig(write(tmp_path, "")) == []


# --- malformed files: exit 4, one line naming the file, the entry, the field and the fix --------------


MALFORMED = [
    ("not_yaml", "- platform: [nucleo\n  id: x: y\n", "not valid YAML", "fix the YAML syntax"),
    ("not_list", "platform: nucleo_l4r5zi\n", "the file is a mapping, not a list", "one '- platform: NAME'"),
    ("entry_not_mapping", "- platform: host\n- just a string\n", "entry 2 is 'just a string', not a mapping",
     "write each entry"),
    ("missing_platform", "- id: ABC123\n  serial: /dev/ttyACM0\n", "entry 1 (id ABC123): platform is missing",
     "add 'platform: NAME'"),
    ("unknown_platform", "- id: ABC123\n  platform: frdm_k64f\n",
     "entry 1 (id ABC123): platform 'frdm_k64f' is not a board microt-deploy knows", "zephyr_platforms"),
    ("connected", "- id: ABC123\n  platform: nucleo_l4r5zi\n  connected: 'yes'\n",
     "entry 1 (id ABC123): connected is 'yes', not true/false", "write connected: true"),
    ("baud", "- platform: host\n- id: B2\n  platform: nucleo_l4r5zi\n  baud: fast\n",
     "entry 2 (id B2): baud is 'fast', not a positive whole number", "baud: 115200"),
    ("timeout_multiplier", "- id: C3\n  platform: nucleo_l4r5zi\n  timeout_multiplier: 0\n",
     "entry 1 (id C3): timeout_multiplier is 0, not a number above 0", "timeout_multiplier: 2.0"),
    ("timeout_multiplier_text", "- platform: mps2_an386\n  timeout_multiplier: slow\n",
     "entry 1 (platform mps2_an386): timeout_multiplier is 'slow'", "timeout_multiplier: 2.0"),
    ("reset", "- id: D4\n  platform: esp32_devkitc_wroom\n  reset: button\n",
     "entry 1 (id D4): reset is 'button', not one of probe, dtr-rts, esptool, none", "reset: dtr-rts"),
    ("gates", "- id: E5\n  platform: nucleo_l4r5zi\n  gates: [accuracy]\n",
     "entry 1 (id E5): gates is a list, not a mapping", "name: value"),
    ("two_boards", "- id: G7\n  platform: nucleo_l4r5zi native_sim\n",
     "entry 1 (id G7): platform 'nucleo_l4r5zi native_sim' names different boards (host, nucleo_l4r5zi)",
     "give each board its own entry"),
    ("id_list", "- id: [1, 2]\n  platform: nucleo_l4r5zi\n",
     "entry 1 (platform nucleo_l4r5zi): id is [1, 2], not a USB serial number", "write it as text in quotes"),
    ("duplicate_id", "- id: F6abc\n  platform: nucleo_l4r5zi\n- id: f6ABC\n  platform: stm32f746g_disco\n",
     "entry 2 (id f6ABC): id f6ABC is also entry 1's", "list each probe once"),
]


@pytest.mark.parametrize("name, text, problem, fix", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_rig_is_exit_4_with_one_line(tmp_path: Path, name: str, text: str, problem: str,
                                               fix: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RigError) as info:
        load_rig(path)
    assert info.value.exit_code == 4
    result = CliRunner().invoke(main, ["rig", str(path)])
    assert result.exit_code == 4, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith(f"error: {path}:") and problem in line and fix in line, line
    assert "Traceback" not in result.output


def test_installed_command_exits_4(tmp_path: Path) -> None:
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("microt-deploy")
    assert exe.is_file(), f"no {exe}: run `make setup` (it installs the package into the venv)"
    path = write(tmp_path, "- id: ABC123\n  platform: nucleo_l4r5zi\n  reset: button\n")
    proc = subprocess.run([str(exe), "rig", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "reset is 'button'" in proc.stderr


def test_missing_rig_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["rig", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output and "--generate" in result.output


def test_rig_command_prints_the_entries(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["rig", str(write(tmp_path, TWISTER_MAP))])
    assert result.exit_code == 0, result.output
    for text in ("0669FF555052836687031752", "nucleo_l4r5zi/stm32l4r5xx -> nucleo_l4r5zi", "/dev/ttyACM0",
                 "disco_l475_iot1 -> disco_l475vg_iot01a", "qemu_mps2_an386", "esptool", "accuracy"):
        assert text in result.output


def test_persistent_needs_generate(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["rig", str(write(tmp_path, TWISTER_MAP)), "--persistent"])
    assert result.exit_code == 2 and "--persistent only applies with --generate" in result.output


# --- select ------------------------------------------------------------------------------------------


def test_select_by_board_platform_and_serial_number(tmp_path: Path) -> None:
    entries = load_rig(write(tmp_path, TWISTER_MAP))
    assert [e.board for e in select(entries)] == ["nucleo_l4r5zi", "esp32dev", "qemu_mps2_an386"]
    assert [e.id for e in select(entries, boards=["nucleo_l4r5zi"])] == ["0669FF555052836687031752"]
    assert [e.board for e in select(entries, boards="esp32_devkitc/esp32/procpu")] == ["esp32dev"]
    assert [e.board for e in select(entries, boards=["esp32_devkitc_wroom"])] == ["esp32dev"]  # resolved
    assert [e.board for e in select(entries, boards=["MPS2_AN386"])] == ["qemu_mps2_an386"]
    assert [e.board for e in select(entries, serial_numbers=["0669ff555052836687031752"])] == ["nucleo_l4r5zi"]
    assert [e.board for e in select(entries, boards=["esp32dev", "nucleo_l4r5zi"],
                                    serial_numbers=["58:cf:79:04:5a:10"])] == ["esp32dev"]


def test_select_nothing_connected_is_no_board_error(tmp_path: Path) -> None:
    entries = load_rig(write(tmp_path, TWISTER_MAP))
    with pytest.raises(NoBoardError) as info:
        select(entries, boards=["disco_l475vg_iot01a"])  # in the rig, but connected: false
    err = info.value
    assert err.exit_code == 5 and "\n" not in str(err)
    assert "board disco_l475vg_iot01a" in str(err)
    assert "001050076605 (disco_l475vg_iot01a) not connected" in str(err)
    assert "0669FF555052836687031752 (nucleo_l4r5zi) connected" in str(err)
    with pytest.raises(NoBoardError, match="serial number 123456"):
        select(entries, serial_numbers="123456")
    with pytest.raises(NoBoardError, match=r"any board \(the rig has: no entries\)"):
        select([])
