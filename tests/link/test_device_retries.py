"""The Device client's retry policy against a scripted stand-in device: damaged, missing, stale and
refused answers are retried with fresh sequence numbers, a device's verdict is not, and running out
of attempts is one DeviceError line naming the command, the attempts and what went wrong."""

import struct
import time

import pytest

from microt_deploy.errors import DeviceError
from microt_deploy.link import device as device_mod
from microt_deploy.link.device import RETRY_SAFE, Device
from microt_deploy.link.protocol import RESPONSE_BIT, Command, Decoder, Frame, Status, encode


@pytest.fixture(autouse=True)
def fast_resync(monkeypatch):
    monkeypatch.setattr(device_mod, "RESYNC_S", 0.05)


def answer(frame: Frame, status: int = Status.OK, body: bytes = b"", seq: int | None = None) -> bytes:
    return encode(frame.command | RESPONSE_BIT, frame.sequence if seq is None else seq, bytes([status]) + body)


def damaged(data: bytes, at: int = 9) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


class ScriptedPort:
    """Decodes each request and queues what ``respond(frame, n)`` returns (n: 1-based request count)."""

    def __init__(self, respond) -> None:
        self.respond = respond
        self.timeout = 0.005
        self.decoder = Decoder()
        self.requests: list[Frame] = []
        self.rx = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
        for frame in self.decoder.feed(data):
            self.requests.append(frame)
            self.rx += self.respond(frame, len(self.requests))
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.rx)

    def read(self, n: int = 1) -> bytes:
        if self.closed:
            import serial

            raise serial.SerialException("socket disconnected")
        if not self.rx:
            time.sleep(self.timeout)
            return b""
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def reset_input_buffer(self) -> None:
        self.rx.clear()


RATIO = struct.pack("<f", 0.25)


def test_every_command_has_a_reason_to_be_resent():
    assert set(RETRY_SAFE) == set(Command)


def test_damaged_answer_is_retried_with_a_new_sequence():
    port = ScriptedPort(lambda f, n: damaged(answer(f, body=RATIO)) if n == 1 else answer(f, body=RATIO))
    dev = Device(port, timeout=1.0)
    assert dev.set_ratio(0, 0.5, 0, 4) == 0.25
    assert [f.sequence for f in port.requests] == [1, 2]
    assert port.requests[0].payload == port.requests[1].payload
    assert (dev.stats["retries"], dev.stats["damaged"], dev.stats["retries_by_command"]) == (1, 1, {"SET_RATIO": 1})


def test_bad_crc_status_and_stale_answers():
    def respond(f: Frame, n: int) -> bytes:
        if n == 1:
            return answer(f, Status.BAD_CRC)
        # A late answer to the first attempt, with a different value, arrives first: skipped.
        return answer(f, body=struct.pack("<f", 9.0), seq=f.sequence - 1) + answer(f, body=RATIO)

    dev = Device(ScriptedPort(respond), timeout=1.0)
    assert dev.set_ratio(0, 0.5, 0, 4) == 0.25
    assert (dev.stats["bad_status"], dev.stats["stale"], dev.stats["retries"]) == (1, 1, 1)


def test_lost_answers_until_the_attempts_run_out_is_one_line():
    port = ScriptedPort(lambda f, n: b"")
    dev = Device(port, timeout=0.05, retries=2)
    with pytest.raises(DeviceError) as err:
        dev.hello()
    assert str(err.value) == ("after 3 attempts, device did not answer HELLO within 0.05 s; "
                              "check the port / that the firmware is flashed")
    assert len(port.requests) == 3 and dev.stats["exhausted"] == 1


def test_mixed_failures_are_named():
    def respond(f: Frame, n: int) -> bytes:
        return [answer(f, Status.BAD_CRC), damaged(answer(f, body=RATIO)), b"", answer(f, body=b"\x00")][n % 4]

    dev = Device(ScriptedPort(respond), timeout=0.05, long_timeout=0.05, retries=3)
    with pytest.raises(DeviceError) as err:
        dev.set_ratio(0, 0.5, 0, 4)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("SET_RATIO failed after 4 attempts (damaged answer, no answer within 0.05 s, "
                           "malformed answer (1 bytes), BAD_CRC from the device)")


def test_a_repeated_bad_length_is_the_devices_verdict():
    port = ScriptedPort(lambda f, n: answer(f, Status.BAD_LENGTH))
    dev = Device(port, timeout=1.0)
    assert dev.request(Command.HELLO, b"x", expect=None)[0] == Status.BAD_LENGTH
    assert len(port.requests) == 2
    with pytest.raises(DeviceError, match="device answered BAD_LENGTH to TRAIN; host and firmware disagree"):
        dev.train(0, 1, 0.1, 0, 2)
    # Once, then OK: a header the link damaged.
    port.respond = lambda f, n: answer(f, Status.BAD_LENGTH) if n == 5 else answer(f, body=RATIO)
    assert dev.set_ratio(0, 0.5, 0, 4) == 0.25


def test_device_verdicts_and_unknown_commands_are_not_resent():
    port = ScriptedPort(lambda f, n: answer(f, Status.NOT_READY))
    dev = Device(port, timeout=1.0)
    with pytest.raises(DeviceError, match="device answered NOT_READY to INFER"):
        dev.infer(0)
    port.respond = lambda f, n: b""
    with pytest.raises(DeviceError, match="did not answer command 0x55 within 0.05 s"):
        dev.request(0x55, timeout=0.05)
    assert len(port.requests) == 2 and dev.stats["retries"] == 0


def test_answer_behind_a_false_header_is_salvaged():
    false_start = b"\xa5\x5a\x01\x88\x07" + struct.pack("<H", 3000) + b"\x11" * 5
    port = ScriptedPort(lambda f, n: false_start + answer(f, body=RATIO))
    dev = Device(port, timeout=2.0)
    assert dev.set_ratio(0, 0.5, 0, 4) == 0.25
    assert (dev.stats["salvaged"], dev.stats["retries"]) == (1, 0)


def test_exit_whose_answer_is_lost_with_the_link():
    port = ScriptedPort(lambda f, n: b"")

    def close(f: Frame, n: int) -> bytes:
        port.closed = True
        return b""

    port.respond = close
    dev = Device(port, timeout=0.05)
    dev.exit(0)
    assert dev.stats["exit_unconfirmed"] == 1
    port.closed = True
    with pytest.raises(DeviceError, match="lost the connection to the device during HELLO"):
        dev.hello()
