"""Connecting to a real board (microt_deploy.link.connect) with the real pyserial over real ptys.

No USB-UART is plugged into this machine, so two things stand in for hardware: the modem-control
lines, which a pty does not have, are recorded by a pyserial Serial whose ``_update_dtr_state`` /
``_update_rts_state`` log the change instead of calling ioctl (the only way to see the sequence of
line states here); and USB listings are ListPortInfo objects that point at ptys. The firmware is
the host build of the real firmware, speaking the real protocol over a pty.
"""

from __future__ import annotations

import os
import pty
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import serial
from serial.tools.list_ports_common import ListPortInfo

from microt_deploy import children
from microt_deploy.boards import load_board
from microt_deploy.errors import DeviceError, MicrotError, NoBoardError
from microt_deploy.link import connect
from microt_deploy.link.connect import (
    RESET_HOLD_S,
    RESET_METHODS,
    USB_JTAG_HOLD_S,
    ReconnectingPort,
    open_board_port,
    refind_port,
    serial_number_of,
    wait_ready,
)
from microt_deploy.link.device import Device
from microt_deploy.link.ports import open_serial
from microt_deploy.link.protocol import Decoder
from microt_deploy.targets import build, render_firmware
from tests.firmware.toy_model import write_toy_model

STLINK_V3 = (0x0483, 0x374E)
CP210X = (0x10C4, 0xEA60)
ESP_USB_JTAG = (0x303A, 0x1001)
BOARD = "nucleo_l4r5zi"

# What an ESP32 prints at 115200 before the app runs (ROM, then the 2nd-stage bootloader), with a
# false frame start in it: the decoder must not lose the real answer to it.
ROM_LOG = (b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
           b"configsip: 0, SPIWP:0xee\r\nclk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00\r\n"
           b"mode:DIO, clock div:2\r\nload:0x3fff0030,len:7104\r\nentry 0x400805f0\r\n")
BOOTLOADER_LOG = (b"I (29) boot: ESP-IDF v5.1 2nd stage bootloader\r\nI (29) boot: compile time 12:00:00\r\n"
                  b"\xa5\x5a\x01\x81\x07\x30\x00garbage\xa5\xff\x00I (41) boot: Loaded app from partition\r\n")


def usb_port(device: str, usb_id: tuple[int, int], serial_number: str | None) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid = usb_id
    info.serial_number = serial_number
    info.apply_usb_info()
    return info


class Pty:
    """A pty pair. The test keeps the slave open throughout, so the pts number stays ours even
    after the master closes (another test's pty cannot take the name a stale listing still shows)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.path = os.ttyname(self.slave)

    def close_master(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def close(self) -> None:
        self.close_master()
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1


@pytest.fixture
def ptys() -> Iterator[list[Pty]]:
    made: list[Pty] = []
    yield made
    for p in made:
        p.close()


def new_pty(ptys: list[Pty]) -> Pty:
    p = Pty()
    ptys.append(p)
    return p


@pytest.fixture(scope="module")
def host_image(tmp_path_factory):
    """The real firmware, built for this machine around the toy model (as tests/firmware does)."""
    root = tmp_path_factory.mktemp("host_fw")
    board = load_board("host")
    compiled = write_toy_model(root / "compiled")
    render_firmware(compiled, board, root / "fw", {"max_tasks": 2, "max_classes": 8, "max_slots": 64})
    return build(board, root / "fw").image


class Firmwares:
    """Host-build firmware processes on pty masters; each owns its master from the start (the test's
    copy is closed), so ending the process makes the tty vanish for the pyserial side."""

    def __init__(self, image) -> None:
        self.image = image
        self.procs: list[subprocess.Popen] = []

    def start(self, p: Pty) -> subprocess.Popen:
        proc = children.popen([str(self.image)], stdin=p.master, stdout=p.master, stderr=subprocess.DEVNULL,
                              close_fds=True)
        p.close_master()
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            children.stop(proc, 0.2)


@pytest.fixture
def firmwares(host_image) -> Iterator[Firmwares]:
    fw = Firmwares(host_image)
    yield fw
    fw.stop_all()


# --- the reset lines ---------------------------------------------------------------------------------


class LineRecorder(serial.Serial):
    """pyserial's own Serial (it really opens the pty), except that a modem-control update records
    (time, line, level) instead of calling ioctl: a pty has no DTR/RTS, and no USB-UART is here."""

    def __init__(self, *args, **kwargs) -> None:
        self.events: list[tuple[float, str, bool]] = []
        super().__init__(*args, **kwargs)

    def _update_dtr_state(self) -> None:
        self.events.append((time.monotonic(), "dtr", bool(self._dtr_state)))

    def _update_rts_state(self) -> None:
        self.events.append((time.monotonic(), "rts", bool(self._rts_state)))


@pytest.fixture
def recorder(monkeypatch) -> list[LineRecorder]:
    """serial_for_url (what ports.open_serial calls) builds serial.Serial: make it a LineRecorder."""
    made: list[LineRecorder] = []

    class Recording(LineRecorder):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(serial, "Serial", Recording)
    return made


def line_states(events: list[tuple[float, str, bool]], start: tuple[bool, bool]) -> list[tuple[float, bool, bool]]:
    """The (time, DTR, RTS) the board sees after each update, from the lines' state before the open:
    (True, True) on Linux (the kernel asserts both as the tty opens), (False, False) on Windows."""
    dtr, rts = start
    out = [(0.0, dtr, rts)]
    for t, line, level in events:
        if line == "dtr":
            dtr = level
        else:
            rts = level
        out.append((t, dtr, rts))
    return out


def en_low(dtr: bool, rts: bool) -> bool:
    """The ESP32 auto-reset circuit holds EN low (the chip in reset) for RTS asserted, DTR not."""
    return rts and not dtr


@pytest.mark.parametrize("reset, no_reset", [(r, True) for r in RESET_METHODS]
                         + [("probe", False), ("esptool", False), ("none", False)])
def test_opening_never_pulls_en_low(ptys, recorder, reset, no_reset) -> None:
    p = new_pty(ptys)
    with open_board_port(p.path, reset=reset, no_reset=no_reset) as port:
        assert port is recorder[-1] and port.is_open and port.exclusive
        for start in ((True, True), (False, False)):
            states = line_states(port.events, start)
            assert not any(en_low(d, r) for _, d, r in states), (start, states)
            assert states[-1][1:] == (False, False)  # both released: the lines of a closed port
        assert (port.dtr, port.rts) == (False, False)
        os.write(p.master, b"ok")
        assert port.read(2) == b"ok"


def test_dtr_rts_false_before_open_would_pulse_en(ptys, recorder) -> None:
    # Why open_board_port opens with DTR still asserted: the obvious "both False before open" has
    # pyserial clear DTR first, and on Linux (both asserted at open) that is EN low for a moment.
    p = new_pty(ptys)
    with open_serial(p.path, dtr=False, rts=False) as port:
        states = line_states(port.events, (True, True))
        assert any(en_low(d, r) for _, d, r in states)


def en_low_spans(states: list[tuple[float, bool, bool]]) -> list[tuple[float, float, bool]]:
    """(start, end, DTR when EN rose) of each stretch with EN held low."""
    spans = []
    start = None
    for t, d, r in states:
        if en_low(d, r) and start is None:
            start = t
        elif not en_low(d, r) and start is not None:
            spans.append((start, t, d))
            start = None
    assert start is None, "EN left low"
    return spans


@pytest.mark.parametrize("usb_id, hold", [(CP210X, RESET_HOLD_S), (ESP_USB_JTAG, USB_JTAG_HOLD_S)])
def test_dtr_rts_is_one_hard_reset_into_the_app(ptys, recorder, usb_id, hold) -> None:
    p = new_pty(ptys)
    listing = [usb_port(p.path, usb_id, "ESP1")]
    for start in ((True, True), (False, False)):
        with open_board_port(p.path, reset="dtr-rts", ports_fn=lambda: listing) as port:
            states = line_states(port.events, start)
            spans = en_low_spans(states)
            assert len(spans) == 1
            begin, end, dtr_at_release = spans[0]
            assert end - begin >= hold * 0.95
            assert not dtr_at_release  # IO0 high as EN rises: the app boots, not the download mode
            # IO0 stays high from the reset on: DTR is never asserted again.
            after = [s for s in states if s[0] >= begin]
            assert not any(d for _, d, _ in after)
            assert states[-1][1:] == (False, False)


def test_a_usb_jtag_port_that_drops_with_the_reset_is_no_error(ptys, monkeypatch) -> None:
    # The ESP32-S3's own USB-Serial/JTAG goes down with the chip: releasing RTS then fails (EIO).
    class Dropping(LineRecorder):
        def _update_rts_state(self) -> None:
            super()._update_rts_state()
            if not self._rts_state and any(line == "rts" and level for _, line, level in self.events):
                raise OSError(5, "Input/output error")

    monkeypatch.setattr(serial, "Serial", Dropping)
    p = new_pty(ptys)
    with open_board_port(p.path, reset="dtr-rts", ports_fn=lambda: [usb_port(p.path, ESP_USB_JTAG, "S3")]) as port:
        assert [e[1:] for e in port.events][-3:] == [("rts", True), ("dtr", False), ("rts", False)]


def test_dtr_rts_on_a_port_without_modem_lines_is_a_one_line_error(ptys) -> None:
    p = new_pty(ptys)  # the real pyserial on a pty: setting DTR raises ENOTTY
    with pytest.raises(DeviceError) as err:
        with open_board_port(p.path, reset="dtr-rts", ports_fn=lambda: []):
            pass
    assert str(err.value) == (f"port {p.path} has no DTR/RTS lines, so reset dtr-rts cannot reset the board; "
                              "set the board's reset to none or probe, or pass --no-reset")
    with open_board_port(p.path, reset="dtr-rts", no_reset=True) as port:  # --no-reset opens it
        assert port.is_open and (port._dtr_state, port._rts_state) == (False, False)
    with pytest.raises(MicrotError, match="unknown reset method 'jtag'; use one of: probe, dtr-rts, esptool, none"):
        with open_board_port(p.path, reset="jtag"):
            pass


def test_open_board_port_keeps_the_exclusive_lock_and_errors(ptys, tmp_path) -> None:
    p = new_pty(ptys)
    with open_board_port(p.path, reset="none") as port:
        with pytest.raises(DeviceError, match=f"port {p.path} is busy"):
            with open_board_port(p.path, reset="none"):
                pass
    assert not port.is_open
    with pytest.raises(DeviceError, match="does not exist"):
        with open_board_port(str(tmp_path / "ttyUSB7"), reset="none", no_reset=True):
            pass


# --- waiting for the firmware ------------------------------------------------------------------------


def test_wait_ready_skips_the_boot_log_and_returns_hello(ptys, firmwares) -> None:
    p = new_pty(ptys)
    with open_board_port(p.path, reset="none") as port:
        device = Device(port, timeout=5.0, long_timeout=30.0)

        def boot() -> None:
            os.write(p.master, ROM_LOG)
            time.sleep(0.4)  # past the quiet period: wait_ready is sending HELLO into a booting board
            for i in range(0, len(BOOTLOADER_LOG), 16):
                os.write(p.master, BOOTLOADER_LOG[i : i + 16])
                time.sleep(0.02)
            time.sleep(0.3)
            firmwares.start(p)  # the app: answers the HELLOs queued so far (stale) and the current one

        booting = threading.Thread(target=boot)
        started = time.monotonic()
        booting.start()
        try:
            info = wait_ready(port, device.hello, 10.0)
        finally:
            booting.join()
        assert info.board and info.protocol_version == 1 and device.info is info
        assert time.monotonic() - started < 5.0
        assert (device.timeout, device.retries) == (5.0, 4)  # the short tries were undone
        assert device.stats["requests"] == 0  # HELLOs into a booting board are no link trouble
        assert device.hello() == info  # and the device goes on answering normally
        assert device.stats["requests"] == 1 and device.stats["exhausted"] == 0


def test_wait_ready_on_a_port_that_vanished_says_so(ptys) -> None:
    p = new_pty(ptys)
    with open_board_port(p.path, reset="none") as port:
        p.close_master()  # e.g. a USB-Serial/JTAG re-enumerating with the reset, on a plain port
        with pytest.raises(DeviceError) as err:
            wait_ready(port, Device(port).hello, 5.0)
        text = str(err.value)
        assert text.startswith(f"lost {p.path} while waiting for the firmware (")
        assert text.endswith("wait on a ReconnectingPort, or pass --no-reset")


@pytest.mark.parametrize("chatty", [False, True])
def test_wait_ready_on_a_silent_or_chatty_port_raises_within_the_timeout(ptys, chatty) -> None:
    p = new_pty(ptys)  # nothing answers; requests pile up in the master unread
    stop = threading.Event()

    def chatter() -> None:  # an app that logs without end and never speaks the protocol
        while not stop.is_set():
            os.write(p.master, b"I (1234) app: still booting\r\n")
            time.sleep(0.05)

    with open_board_port(p.path, reset="none") as port:
        device = Device(port, timeout=5.0)
        talker = threading.Thread(target=chatter)
        if chatty:
            talker.start()
        started = time.monotonic()
        try:
            with pytest.raises(DeviceError) as err:
                wait_ready(port, device.hello, 1.5)
        finally:
            stop.set()
            if chatty:
                talker.join()
        waited = time.monotonic() - started
        assert 1.5 <= waited < 1.5 + connect.HELLO_ATTEMPT_S + 0.5
        text = str(err.value)
        assert "\n" not in text and err.value.exit_code == 3
        assert text.startswith(f"the firmware on {p.path} did not answer HELLO within ")
        assert ("bytes of other output discarded" in text) == chatty
        assert text.endswith("check the baud rate, the reset wiring (DTR/RTS; the board's reset method), "
                             "or pass --no-reset")
        assert (device.timeout, device.retries) == (5.0, 4)


# --- finding the board again -------------------------------------------------------------------------


def test_serial_number_of_follows_by_id_links(ptys, tmp_path) -> None:
    p = new_pty(ptys)
    by_id = tmp_path / "usb-STMicroelectronics_STLINK-V3_0669FF555187-if02"
    by_id.symlink_to(p.path)
    listing = [usb_port("/dev/ttyACM9", CP210X, "OTHER"), usb_port(p.path, STLINK_V3, "0669FF555187")]
    assert serial_number_of(str(by_id), lambda: listing) == "0669FF555187"
    assert serial_number_of(p.path, lambda: listing) == "0669FF555187"
    assert serial_number_of(str(tmp_path / "nothing"), lambda: listing) is None
    assert serial_number_of(p.path, lambda: [usb_port(p.path, STLINK_V3, None)]) is None
    assert serial_number_of(p.path) is None  # the real listing: a pty is no USB port


def test_refind_port_waits_for_the_board_to_come_back_under_a_new_name() -> None:
    calls = 0

    def listing() -> list[ListPortInfo]:
        nonlocal calls
        calls += 1
        other = usb_port("/dev/ttyACM0", STLINK_V3, "SOMEONE-ELSE")
        if calls < 4:  # re-enumerating: only another board is listed
            return [other]
        return [other, usb_port("/dev/ttyACM1", STLINK_V3, "0669ff555187")]

    assert refind_port(BOARD, "0669FF555187", 5.0, listing) == "/dev/ttyACM1"
    assert calls == 4


def test_refind_port_gives_up_naming_the_serial_number() -> None:
    started = time.monotonic()
    with pytest.raises(NoBoardError) as err:
        refind_port(BOARD, "0669FF555187", 0.5, lambda: [usb_port("/dev/ttyACM0", STLINK_V3, "OTHER")])
    assert 0.5 <= time.monotonic() - started < 1.0
    text = str(err.value)
    assert err.value.exit_code == 5 and "\n" not in text
    assert text.startswith(f"the serial port of {BOARD} with USB serial number 0669FF555187 did not come back "
                           "within 0.")
    assert text.endswith("check the USB cable and hub, plug the board in again, or pass --port")


class Listing:
    """What comports() would show: the board's probe, at whichever pty it is now."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> list[ListPortInfo]:
        return [usb_port(self.path, STLINK_V3, "0669FF555187")]


def test_a_device_survives_its_tty_vanishing_between_requests(ptys, firmwares) -> None:
    a, b = new_pty(ptys), new_pty(ptys)
    listing = Listing(a.path)
    proc_a = firmwares.start(a)
    with open_board_port(a.path, reset="probe") as raw, \
            ReconnectingPort(raw, BOARD, "0669FF555187", timeout_s=5.0, ports_fn=listing) as port:
        device = Device(port, timeout=20.0, long_timeout=30.0)
        first = device.hello()
        assert port.reconnects == 0

        children.stop(proc_a, 0.2)  # the tty vanishes; the listing still shows it for a while (udev)

        def come_back() -> None:
            time.sleep(0.5)
            firmwares.start(b)
            listing.path = b.path  # re-enumerated under another name

        returning = threading.Thread(target=come_back)
        returning.start()
        started = time.monotonic()
        try:
            again = device.hello()
        finally:
            returning.join()
        assert again == first
        assert port.reconnects == 1 and port.path == b.path and port.name == b.path
        # The lost request was re-sent by the Device at once, not after its 20 s answer timeout.
        assert time.monotonic() - started < 5.0
        assert device.stats["retries"] >= 1 and device.stats["timeouts"] == 0
        assert not raw.is_open and port.current is not raw and port.is_open
    assert not port.current.is_open


def test_a_request_whose_answer_is_lost_with_the_tty_is_resent(ptys, firmwares) -> None:
    a, b = new_pty(ptys), new_pty(ptys)
    listing = Listing(a.path)
    firmwares.start(b)  # the board as it comes back

    def vanish_mid_request() -> None:
        # A board that takes the request and re-enumerates before it answers.
        decoder = Decoder()
        while not decoder.feed(os.read(a.master, 64)):
            pass
        listing.path = b.path
        a.close_master()

    taker = threading.Thread(target=vanish_mid_request)
    taker.start()
    with open_board_port(a.path, reset="none") as raw, \
            ReconnectingPort(raw, BOARD, "0669FF555187", timeout_s=5.0, ports_fn=listing) as port:
        device = Device(port, timeout=20.0)
        started = time.monotonic()
        info = device.hello()
        taker.join()
        assert info.board and port.reconnects == 1
        assert device.stats["retries"] == 1 and device.stats["retries_by_command"] == {"HELLO": 1}
        assert time.monotonic() - started < 5.0


def test_a_port_that_does_not_come_back_is_a_device_error_after_the_timeout(ptys) -> None:
    a = new_pty(ptys)
    listing = Listing(a.path)  # stale: the dead tty stays listed, and opening it fails
    with open_board_port(a.path, reset="none") as raw, \
            ReconnectingPort(raw, BOARD, "0669FF555187", timeout_s=1.0, ports_fn=listing) as port:
        device = Device(port, timeout=20.0)
        a.close_master()
        started = time.monotonic()
        with pytest.raises(DeviceError) as err:
            device.hello()
        assert 1.0 <= time.monotonic() - started < 2.0
        text = str(err.value)
        assert "\n" not in text and port.reconnects == 0
        assert text.startswith(f"lost {a.path} (")
        assert f"the port of {BOARD} with USB serial number 0669FF555187 did not come back within 1." in text
        assert text.endswith("check the USB cable and hub; the board may have lost power")
        listing.path = "/dev/ttyACM9"  # now not listed at all
        with pytest.raises(DeviceError, match="did not come back"):
            device.hello()
    with pytest.raises(DeviceError, match="was closed"):
        port.read(1)
