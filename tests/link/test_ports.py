"""Finding a board's serial port by USB VID:PID, and opening it with a one-line error when busy or missing."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys

import pytest
import serial
from serial.tools.list_ports_common import ListPortInfo

from microt_deploy.boards import known_boards, load_board
from microt_deploy.errors import DeviceError, MicrotError, NoBoardError
from microt_deploy.link import ports as ports_mod
from microt_deploy.link.ports import board_usb_ids, candidate_ports, find_port, open_serial

STLINK_V3 = (0x0483, 0x374E)
STLINK_V21 = (0x0483, 0x374B)
CP210X = (0x10C4, 0xEA60)


def usb_port(device: str, usb_id: tuple[int, int] | None, serial_number: str | None = None,
             product: str | None = None) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    if usb_id is not None:
        info.vid, info.pid = usb_id
        info.serial_number = serial_number
        info.product = product
        info.apply_usb_info()
    return info


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text
    return text


# --- board data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("board_id, own", [("nucleo_l4r5zi", STLINK_V3), ("nucleo_h7a3zi_q", STLINK_V3),
                                           ("disco_f746ng", STLINK_V21)])
def test_stm32_boards_list_every_stlink_with_their_own_first(board_id, own) -> None:
    ids, mine = board_usb_ids(load_board(board_id))
    assert mine == own and ids[0] == own
    assert {STLINK_V3, STLINK_V21, (0x0483, 0x374F), (0x0483, 0x3752), (0x0483, 0x3753),
            (0x0483, 0x3754)} <= set(ids)


def test_disco_l475_board_file_has_a_v21_probe() -> None:
    assert "disco_l475vg_iot01a" in known_boards()
    ids, mine = board_usb_ids("disco_l475vg_iot01a")
    assert mine == STLINK_V21 and STLINK_V3 in ids


def test_emulated_boards_have_no_port_to_find() -> None:
    for board_id in ("host", "qemu_mps2_an386"):
        with pytest.raises(MicrotError, match="no USB serial port to look for") as err:
            candidate_ports(board_id, [])
        one_line(err.value)


# --- selection -------------------------------------------------------------------------------------


def test_one_board_is_chosen_with_the_reason() -> None:
    ports = [usb_port("/dev/ttyS0", None), usb_port("/dev/ttyACM0", STLINK_V3, "0669FF555187", "STLINK-V3")]
    assert [p.device for p in candidate_ports("nucleo_l4r5zi", ports)] == ["/dev/ttyACM0"]
    device, why = find_port("nucleo_l4r5zi", ports)
    assert device == "/dev/ttyACM0"
    assert why == "chose /dev/ttyACM0: ST-LINK V3 (0483:374E, serial 0669FF555187)"


def test_no_board_is_a_one_line_no_board_error() -> None:
    ports = [usb_port("/dev/ttyS0", None), usb_port("/dev/ttyUSB0", CP210X, "0001")]
    with pytest.raises(NoBoardError) as err:
        find_port("nucleo_l4r5zi", ports)
    text = one_line(err.value)
    assert err.value.exit_code == 5
    assert "no serial port of nucleo_l4r5zi found" in text and "0483:374E ST-LINK V3" in text
    assert "/dev/ttyUSB0 (10C4:EA60)" in text and "/dev/ttyS0" not in text
    assert text.endswith("plug in the board or pass --port")
    with pytest.raises(NoBoardError, match="plug in the board or pass --port"):
        find_port("disco_f746ng", [])


def test_two_boards_are_an_error_listing_both() -> None:
    ports = [usb_port("/dev/ttyACM1", STLINK_V3, "BBBB"), usb_port("/dev/ttyACM0", STLINK_V3, "AAAA")]
    with pytest.raises(MicrotError) as err:
        find_port("nucleo_l4r5zi", ports)
    text = one_line(err.value)
    assert not isinstance(err.value, NoBoardError)
    assert "2 serial ports could be nucleo_l4r5zi" in text
    assert "/dev/ttyACM0 (ST-LINK V3, serial AAAA)" in text and "/dev/ttyACM1 (ST-LINK V3, serial BBBB)" in text
    assert text.index("ttyACM0") < text.index("ttyACM1")
    assert text.endswith("pass --port or --serial-number to choose one")


def test_serial_number_selects_among_several() -> None:
    ports = [usb_port("/dev/ttyACM0", STLINK_V3, "AAAA"), usb_port("/dev/ttyACM1", STLINK_V3, "0669ffbbbb")]
    device, why = find_port("nucleo_l4r5zi", ports, serial_number="0669FFBBBB")
    assert device == "/dev/ttyACM1" and why.endswith("by serial number") and "serial 0669ffbbbb" in why
    with pytest.raises(NoBoardError) as err:
        find_port("nucleo_l4r5zi", ports, serial_number="CCCC")
    text = one_line(err.value)
    assert "serial number CCCC" in text and "/dev/ttyACM0 (ST-LINK V3, serial AAAA)" in text


def test_non_st_ports_are_ignored() -> None:
    ports = [usb_port("/dev/ttyUSB0", CP210X, "0001", "CP2102"), usb_port("/dev/ttyACM3", (0x2341, 0x0043)),
             usb_port("/dev/ttyACM0", (0x0483, 0x3748), "V2"),  # ST-LINK V2: no virtual COM port
             usb_port("/dev/ttyACM5", STLINK_V21, "F7")]
    assert [p.device for p in candidate_ports("disco_f746ng", ports)] == ["/dev/ttyACM5"]
    assert find_port("disco_f746ng", ports)[0] == "/dev/ttyACM5"


def test_a_swapped_probe_is_accepted() -> None:
    ports = [usb_port("/dev/ttyACM0", STLINK_V21, "OLD")]
    assert find_port("nucleo_l4r5zi", ports) == ("/dev/ttyACM0",
                                                 "chose /dev/ttyACM0: ST-LINK V2-1 (0483:374B, serial OLD)")


def test_the_boards_own_probe_is_preferred() -> None:
    ports = [usb_port("/dev/ttyACM0", STLINK_V3, "NUCLEO"), usb_port("/dev/ttyACM1", STLINK_V21, "DISCO")]
    assert [p.device for p in candidate_ports("disco_f746ng", ports)] == ["/dev/ttyACM1", "/dev/ttyACM0"]
    device, why = find_port("disco_f746ng", ports)
    assert device == "/dev/ttyACM1" and "board's own probe" in why and "/dev/ttyACM0" in why
    assert find_port("nucleo_l4r5zi", ports)[0] == "/dev/ttyACM0"
    # Two of the board's own kind: no guessing.
    ports.append(usb_port("/dev/ttyACM2", STLINK_V21, "DISCO2"))
    with pytest.raises(MicrotError, match="3 serial ports could be disco_f746ng"):
        find_port("disco_f746ng", ports)


def test_esp32_boards_use_the_usb_uart_bridges() -> None:
    ports = [usb_port("/dev/ttyACM0", STLINK_V3, "ST"), usb_port("/dev/ttyUSB0", (0x1A86, 0x7523), None)]
    device, why = find_port("esp32dev", ports)
    assert device == "/dev/ttyUSB0" and why == "chose /dev/ttyUSB0: CH340 USB-UART (1A86:7523)"
    ports.append(usb_port("/dev/ttyACM1", (0x303A, 0x1001), "S3"))
    with pytest.raises(MicrotError, match="2 serial ports could be esp32-s3-devkitc-1"):
        find_port("esp32-s3-devkitc-1", ports)


def test_comports_is_the_default_source() -> None:
    # Whatever this machine has plugged in, the real listing goes through without error.
    found = candidate_ports("nucleo_l4r5zi")
    assert all((p.vid, p.pid) in board_usb_ids("nucleo_l4r5zi")[0] for p in found)


# --- opening ---------------------------------------------------------------------------------------


@pytest.fixture()
def pty_path():
    master, slave = pty.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def test_busy_port_is_a_one_line_error_until_the_other_program_closes_it(pty_path) -> None:
    master, path = pty_path
    other = serial.Serial(path, baudrate=115200, exclusive=True)  # e.g. a serial monitor
    try:
        with pytest.raises(DeviceError) as err:
            with open_serial(path):
                pass
        text = one_line(err.value)
        assert err.value.exit_code == 3
        assert text.startswith(f"port {path} is busy (")
        assert text.endswith("close the other program using it (e.g. `pio device monitor`)")
    finally:
        other.close()
    with open_serial(path) as port:
        assert port.is_open
        os.write(master, b"hello")
        assert port.read(5) == b"hello"
        # A second microt-deploy on the same port is refused too.
        with pytest.raises(DeviceError, match="is busy"):
            with open_serial(path):
                pass
    assert not port.is_open


def test_missing_port_is_a_one_line_error(tmp_path) -> None:
    path = str(tmp_path / "ttyACM9")
    with pytest.raises(DeviceError) as err:
        with open_serial(path):
            pass
    text = one_line(err.value)
    assert text == f"serial port {path} does not exist; plug in the board, or leave out --port to find it"


def test_uucp_lock_of_a_live_process_is_busy_and_a_stale_one_is_ignored(pty_path, tmp_path, monkeypatch) -> None:
    _, path = pty_path
    monkeypatch.setattr(ports_mod, "LOCK_DIRS", (tmp_path,))
    lock = tmp_path / f"LCK..{os.path.basename(path)}"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{holder.pid:10d}\n")
        with pytest.raises(DeviceError, match=f"port {path} is busy \\(locked by process {holder.pid}\\)"):
            with open_serial(path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with open_serial(path) as port:  # the lock's owner is gone
        assert port.is_open


def test_socket_url_opens_without_exclusive() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        with open_serial(url) as port:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"ok")
                assert port.read(2) == b"ok"
                assert not port.exclusive
    with pytest.raises(DeviceError) as err:  # nothing listens there any more
        with open_serial(url):
            pass
    assert one_line(err.value).endswith("check that the emulator is running and the URL is right")
