"""`microt-deploy rig FILE --generate`: the probes plugged in, merged into the rig file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from serial.tools.list_ports_common import ListPortInfo

from microt_deploy.cli import main
from microt_deploy.rig import generate, load_rig

STLINK_V3 = (0x0483, 0x374E)
STLINK_V21 = (0x0483, 0x374B)
STLINK_V3_DUAL = (0x0483, 0x3753)
CP210X = (0x10C4, 0xEA60)
CH340 = (0x1A86, 0x7523)
FTDI = (0x0403, 0x6001)  # a USB-UART of no board family of ours

EXISTING = textwrap.dedent("""\
    - connected: false
      id: 0669FF555052836687031752
      platform: nucleo_l4r5zi
      product: old product string
      runner: openocd
      serial: /dev/ttyACM5
      fixtures:
      - gpio_loopback
      gates:
        accuracy: {min: 0.9}
      lab_slot: 7
    - connected: true
      id: 066DFF485457725187092621
      platform: stm32f746g_disco
      runner: openocd
      serial: /dev/ttyACM2
    - platform: qemu_mps2_an386
      notes: emulated, always there
""")


def usb_port(device: str, usb_id: tuple[int, int] | None, serial_number: str | None = None,
             product: str | None = None) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    if usb_id is not None:
        info.vid, info.pid = usb_id
        info.serial_number = serial_number
        info.product = product
        info.apply_usb_info()
    return info


def plugged(dev: str = "/dev") -> list[ListPortInfo]:
    return [
        usb_port(f"{dev}/ttyS0", None),
        usb_port(f"{dev}/ttyACM0", STLINK_V3, "0669FF555052836687031752", "STLINK-V3"),
        usb_port(f"{dev}/ttyACM1", STLINK_V21, "0671FF3833554B3043164817", "STM32 STLink"),
        usb_port(f"{dev}/ttyACM4", STLINK_V3_DUAL, "002F00263137510239383538", "STLINK-V3"),
        usb_port(f"{dev}/ttyACM3", STLINK_V3_DUAL, "002F00263137510239383538", "STLINK-V3"),
        usb_port(f"{dev}/ttyUSB0", CP210X, "0001", "CP2102 USB to UART Bridge Controller"),
        usb_port(f"{dev}/ttyUSB1", FTDI, "A50285BI", "FT232R USB UART"),
    ]


def by_id(entries, serial_number):
    return next(e for e in entries if e.id == serial_number)


def test_generate_merges_into_an_existing_rig(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text(EXISTING)
    summary = generate(path, ports=plugged())
    assert not summary.created
    entries = load_rig(path)
    assert entries == summary.entries

    # The known probe: new port, product and connected; the rest of the entry as it was.
    l4 = by_id(entries, "0669FF555052836687031752")
    assert (l4.serial, l4.product, l4.connected) == ("/dev/ttyACM0", "STLINK-V3", True)
    assert l4.platform == "nucleo_l4r5zi" and l4.fixtures == ["gpio_loopback"]
    assert l4.gates == {"accuracy": {"min": 0.9}} and l4.extra == {"lab_slot": 7}
    assert [e.id for e in summary.updated] == ["0669FF555052836687031752"]
    raw = yaml.safe_load(path.read_text())
    assert list(raw[0]) == ["connected", "id", "platform", "product", "runner", "serial", "fixtures", "gates",
                            "lab_slot"]

    # Not plugged in: marked disconnected, otherwise kept. The emulated entry is left alone.
    f7 = by_id(entries, "066DFF485457725187092621")
    assert not f7.connected and f7.serial == "/dev/ttyACM2"
    assert [e.id for e in summary.disconnected] == ["066DFF485457725187092621"]
    qemu = entries[2]
    assert qemu.board == "qemu_mps2_an386" and qemu.connected and raw[2] == yaml.safe_load(EXISTING)[2]

    # New probes: a platform guessed from the boards whose own probe it is, with a note when several are.
    added = {e.id: e for e in summary.added}
    assert set(added) == {"0671FF3833554B3043164817", "002F00263137510239383538", "0001"}
    v21 = added["0671FF3833554B3043164817"]
    assert v21.board in ("disco_f746ng", "disco_l475vg_iot01a") and v21.connected and v21.serial == "/dev/ttyACM1"
    assert "0483:374B" in v21.notes and "could also be" in v21.notes and v21.reset == "probe"
    assert "nucleo" not in v21.notes  # only the boards whose own probe is a V2-1
    assert v21.runner == "openocd" and v21.product == "STM32 STLink"
    dual = added["002F00263137510239383538"]
    assert dual.serial == "/dev/ttyACM3"  # one entry per probe, its first port
    assert dual.board in ("nucleo_l4r5zi", "nucleo_h7a3zi_q", "disco_f746ng", "disco_l475vg_iot01a")
    esp = added["0001"]
    assert esp.board in ("esp32dev", "esp32-s3-devkitc-1") and esp.runner == "esp32" and esp.reset == "dtr-rts"
    assert summary.ignored == ["/dev/ttyUSB1 (0403:6001)"]
    assert len(entries) == 6


def test_generate_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text(EXISTING)
    generate(path, ports=plugged())
    text = path.read_text()
    summary = generate(path, ports=plugged())
    assert summary.added == summary.updated == summary.disconnected == []
    assert len(summary.unchanged) == 4 and path.read_text() == text


def test_generate_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rigs" / "new.yaml"
    summary = generate(path, ports=plugged()[:2])
    assert summary.created and [e.id for e in summary.added] == ["0669FF555052836687031752"]
    raw = yaml.safe_load(path.read_text())
    assert raw[0]["connected"] is True and raw[0]["id"] == "0669FF555052836687031752"
    assert raw[0]["serial"] == "/dev/ttyACM0" and raw[0]["runner"] == "openocd"
    assert raw[0]["platform"] in ("nucleo_l4r5zi", "nucleo_h7a3zi_q")
    assert generate(tmp_path / "empty.yaml", ports=[]).entries == []
    assert (tmp_path / "empty.yaml").read_text() == "[]\n"


def test_unplugged_probe_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text(EXISTING)
    generate(path, ports=[])
    assert [e.connected for e in load_rig(path)] == [False, False, True]
    generate(path, ports=plugged()[:2])
    assert [e.connected for e in load_rig(path)] == [True, False, True]


def test_persistent_writes_by_id_links(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    links = tmp_path / "serial" / "by-id"
    links.mkdir(parents=True)
    for name in ("ttyACM0", "ttyACM1", "ttyACM3", "ttyACM4", "ttyUSB0", "ttyUSB1"):
        (dev / name).write_text("")
    link_names = {
        "ttyACM0": "usb-STMicroelectronics_STLINK-V3_0669FF555052836687031752-if02",
        "ttyACM1": "usb-STMicroelectronics_STM32_STLink_0671FF3833554B3043164817-if02",
        "ttyUSB0": "usb-Silicon_Labs_CP2102_USB_to_UART_Bridge_Controller_0001-if00-port0",
    }
    for target, name in link_names.items():
        (links / name).symlink_to(f"../../dev/{target}")
    path = tmp_path / "rig.yaml"
    path.write_text(EXISTING)
    generate(path, persistent=True, ports=plugged(str(dev)), by_id_dir=links)
    entries = load_rig(path)
    assert by_id(entries, "0669FF555052836687031752").serial == str(links / link_names["ttyACM0"])
    assert by_id(entries, "0671FF3833554B3043164817").serial == str(links / link_names["ttyACM1"])
    assert by_id(entries, "0001").serial == str(links / link_names["ttyUSB0"])
    assert by_id(entries, "002F00263137510239383538").serial == str(dev / "ttyACM3")  # no link: the device

    # Without --persistent, a by-id path that still leads to the probe's port is kept.
    summary = generate(path, ports=plugged(str(dev)), by_id_dir=links)
    assert summary.updated == [] and summary.added == []
    assert by_id(load_rig(path), "0669FF555052836687031752").serial == str(links / link_names["ttyACM0"])


def test_probe_without_serial_number_is_matched_by_port(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    ch340 = [usb_port("/dev/ttyUSB0", CH340, None, "USB2.0-Serial")]
    first = generate(path, ports=ch340)
    assert len(first.added) == 1 and first.added[0].id is None and first.added[0].board in ("esp32dev",
                                                                                           "esp32-s3-devkitc-1")
    second = generate(path, ports=ch340)
    assert second.added == [] and len(second.unchanged) == 1
    third = generate(path, ports=[])
    assert len(third.disconnected) == 1 and load_rig(path)[0].connected is False


def test_cli_generate_prints_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serial.tools import list_ports

    monkeypatch.setattr(list_ports, "comports", lambda *a, **k: plugged())
    path = tmp_path / "rig.yaml"
    path.write_text(EXISTING)
    result = CliRunner().invoke(main, ["rig", str(path), "--generate"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "updated: 0669FF555052836687031752 (nucleo_l4r5zi) at /dev/ttyACM0" in out
    assert "added: 0671FF3833554B3043164817" in out and "could also be" in out
    assert "marked disconnected: 066DFF485457725187092621 (disco_f746ng)" in out
    assert "3 added, 1 updated, 0 unchanged, 1 marked disconnected" in out
    assert "ignored (no board family of ours): /dev/ttyUSB1 (0403:6001)" in out
    assert len(load_rig(path)) == 6


def test_cli_generate_on_a_malformed_rig_is_exit_4(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text("- id: X\n  platform: nucleo_l4r5zi\n  connected: maybe\n")
    result = CliRunner().invoke(main, ["rig", str(path), "--generate"])
    assert result.exit_code == 4 and "connected is 'maybe'" in result.output
    assert path.read_text() == "- id: X\n  platform: nucleo_l4r5zi\n  connected: maybe\n"
