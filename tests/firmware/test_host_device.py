"""The host build of the firmware against the real client over a real pty: every command, the
error statuses, malformed input, the trainer, the SET_RATIO quantile rule and staged inference.

Every test runs twice: against the plain build and against an ASan + UBSan build (the `sanitize`
option; -fno-sanitize-recover: any memory error or UB ends the firmware with a non-zero status,
which the device fixture checks after each test). The tensor test is the bit-exactness check."""

import dataclasses
import json
import os
import struct
import time

import numpy as np
import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import DeviceError
from microt_deploy.link.device import Device
from microt_deploy.link.protocol import Command, Decoder, Status, encode
from microt_deploy.targets import build, launch, render_firmware
from tests.firmware.toy_model import FULL, INPUT, PART, SCALES, toy_outputs, write_toy_model


@pytest.fixture(scope="module", params=["plain", "sanitized"])
def host_image(request, tmp_path_factory):
    """The host firmware of conftest.py, plain and under ASan + UBSan."""
    root = tmp_path_factory.mktemp(f"host_fw_{request.param}")
    board = load_board("host")
    options = {"max_tasks": 2, "max_classes": 8, "max_slots": 64}
    if request.param == "sanitized":
        options["sanitize"] = True
    render_firmware(write_toy_model(root / "compiled"), board, root / "fw", options)
    image = build(board, root / "fw").image
    if request.param == "sanitized":
        data = image.read_bytes()
        assert b"__asan_report" in data and b"__ubsan_handle" in data
    return image


@pytest.fixture
def device(host_image):
    """A live device; afterwards it must still answer and end cleanly (a sanitizer report would
    have ended it with a non-zero status)."""
    with launch(load_board("host"), host_image, limit_s=120) as port:
        dev = Device(port, timeout=5.0, long_timeout=30.0)
        yield dev
        if port.process.poll() is None:
            dev.exit(0)
        assert port.process.wait(timeout=10) == 0


def test_hello_reports_model_and_limits(device):
    info = device.hello()
    assert (info.protocol_version, info.board, info.counter_unit) == (1, "host", "ns")
    assert (info.input.size, info.split.size, info.part_dim, info.full_dim) == (INPUT, INPUT, PART, FULL)
    assert info.input.scale == pytest.approx(SCALES["input"][0]) and info.input.zero_point == SCALES["input"][1]
    assert info.part_features.zero_point == SCALES["part"][1]
    assert info.full_features.scale == pytest.approx(SCALES["full"][0])
    assert json.loads(json.dumps(dataclasses.asdict(info)))["part_dim"] == PART  # reports store it as JSON
    limits = (info.max_tasks, info.max_classes, info.max_slots, info.arena_bytes, info.max_payload)
    assert limits == (2, 8, 64, 48, 4096)


def test_run_graphs_and_read_tensors_match_the_model(device):
    x = np.arange(-8, 8, dtype=np.int8) * 9
    device.load_input(x)
    counts = device.run_graphs()
    assert set(counts) == {"trunk", "part_head", "rest"} and all(v >= 0 for v in counts.values())
    got = [np.frombuffer(device.read_tensor(i), np.int8) for i in range(3)]
    for have, want in zip(got, toy_outputs(x), strict=True):
        np.testing.assert_array_equal(have, want)


def _status(dev: Device, command: Command, payload: bytes = b"") -> Status:
    return dev.request(command, payload, expect=None)[0]


def test_error_statuses(device):
    assert _status(device, Command.RUN_GRAPHS) == Status.NOT_READY
    assert _status(device, Command.READ_TENSOR, struct.pack("<BIH", 0, 0, 4)) == Status.NOT_READY
    assert _status(device, Command.LOAD_INPUT, struct.pack("<I", 10) + bytes(7)) == Status.OUT_OF_RANGE
    assert _status(device, Command.HELLO, b"x") == Status.BAD_LENGTH
    assert _status(device, 0x55) == Status.UNKNOWN_COMMAND
    assert _status(device, Command.STORE_FEATURES, struct.pack("<I", 64)) == Status.OUT_OF_RANGE
    assert _status(device, Command.SET_LABELS, struct.pack("<BBI", 2, 3, 0) + b"\x00") == Status.BAD_ARGUMENT
    assert _status(device, Command.SET_LABELS, struct.pack("<BBI", 0, 3, 0) + b"\x03") == Status.BAD_ARGUMENT
    assert _status(device, Command.SET_LABELS, struct.pack("<BBI", 0, 9, 0) + b"\x00") == Status.BAD_ARGUMENT
    assert _status(device, Command.INFER, b"\x00\x00") == Status.NOT_READY
    assert _status(device, Command.READ_HEAD, struct.pack("<BBIH", 0, 0, 0, 1)) == Status.NOT_READY
    device.set_labels(0, 3, 0, [0, 1])
    assert _status(device, Command.TRAIN, struct.pack("<BHfIII", 0, 1, 0.1, 0, 2, 0)) == Status.NOT_READY
    with pytest.raises(DeviceError, match="NOT_READY to TRAIN"):
        device.train(0, 1, 0.1, 0, 2)


def test_malformed_input_never_loses_sync(device):
    port = device.port
    rng = np.random.default_rng(1)
    decoder = Decoder()

    def answers(wait: float = 0.3) -> list:
        time.sleep(wait)
        return decoder.feed(port.read(port.in_waiting or 1) if port.in_waiting else b"")

    # Random garbage (sync bytes scrubbed so nothing parses as a header): silently discarded.
    garbage = bytes(b for b in rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() if b != 0xA5)
    port.write(garbage)
    assert answers() == []
    assert device.hello().board == "host"
    # A bad CRC is answered with BAD_CRC, header's command and sequence.
    bad = bytearray(encode(Command.HELLO, 200))
    bad[-2] ^= 1
    port.write(bytes(bad))
    frames = answers()
    assert [(f.command, f.sequence, f.payload) for f in frames] == [(0x81, 200, bytes([Status.BAD_CRC]))]
    # An oversize length is answered at once with BAD_LENGTH, a bad version with BAD_VERSION.
    port.write(b"\xa5\x5a\x01\x02\x09" + struct.pack("<H", 5000))
    port.write(b"\xa5\x5a\x07\x01\x0a\x00\x00")
    frames = answers()
    assert [(f.command, f.sequence, f.payload[0]) for f in frames] == [
        (0x82, 9, Status.BAD_LENGTH), (0x81, 10, Status.BAD_VERSION)]
    # A truncated frame is dropped after the byte timeout; the next good frame is answered.
    port.write(encode(Command.LOAD_INPUT, 11, struct.pack("<I", 0) + bytes(16))[:-5])
    assert answers(0.4) == []
    assert device.hello().max_slots == 64
    # A truncated frame followed at once by a good one: the good one is still answered. Its claimed
    # payload runs out inside the good frame: the truncated one is answered BAD_CRC, then HELLO.
    port.write(encode(Command.LOAD_INPUT, 12, struct.pack("<I", 0) + bytes(8))[:-6] + encode(Command.HELLO, 13))
    frames = answers()
    assert [(f.command, f.sequence, f.payload[0]) for f in frames] == [
        (0x82, 12, Status.BAD_CRC), (0x81, 13, Status.OK)]
    # It claims more than follows: the good frame is answered after the byte timeout gives it up.
    port.write(encode(Command.LOAD_INPUT, 14, struct.pack("<I", 0) + bytes(16))[:-12] + encode(Command.HELLO, 15))
    frames = answers(0.5)
    assert [(f.command, f.sequence, f.payload[0]) for f in frames] == [(0x81, 15, Status.OK)]
    # Two false starts (a bad version, an oversize length) right before a good frame, in one write.
    port.write(b"\xa5\x5a\x07\x01\x10" + b"\xa5\x5a\x01\x02\x11\xff\xff" + encode(Command.HELLO, 18))
    frames = answers()
    assert [(f.command, f.sequence, f.payload[0]) for f in frames] == [
        (0x81, 16, Status.BAD_VERSION), (0x82, 17, Status.BAD_LENGTH), (0x81, 18, Status.OK)]
    # A random random-bytes storm including sync bytes: the device keeps answering afterwards.
    for _ in range(5):
        port.write(rng.integers(0, 256, 500, dtype=np.uint8).tobytes() + b"\xa5\x5a")
    time.sleep(0.5)
    port.reset_input_buffer()
    assert device.hello().board == "host"


def _toy_samples(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Class c lights up input byte c, which the part features (bytes 0..3) and full features see.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.integers(-30, 30, (n, INPUT)).astype(np.int8)
    x[np.arange(n), labels] = 120
    return x, labels


def _store(device: Device, x: np.ndarray, first: int) -> None:
    for i, sample in enumerate(x):
        device.load_input(sample)
        counts = device.store_features(first + i)
        assert counts["trunk"] > 0


def test_trainer_learns_deterministically_and_heads_read_back(device):
    x, y = _toy_samples(48, 3, 0)
    _store(device, x, 0)
    device.set_labels(1, 3, 0, y)
    first = device.train(1, epochs=8, lr=0.05, first_slot=0, n_slots=48, seed=7)
    assert first.part_accuracy == 1.0 and first.full_accuracy == 1.0
    assert first.part_loss < 0.2 and first.counter > 0
    w, b = device.read_head(1, 0)
    assert w.shape == (3, PART) and b.shape == (3,) and w.dtype == np.float32
    # The host recomputes the device's accuracy from the heads it read back.
    pq = np.stack([toy_outputs(s)[1] for s in x]).astype(np.float32)
    feats = np.float32(SCALES["part"][0]) * (pq - np.float32(SCALES["part"][1]))
    assert np.mean(np.argmax(feats @ w.T + b, 1) == y) == 1.0
    wf, bf = device.read_head(1, 1)
    assert wf.shape == (3, FULL)
    again = device.train(1, epochs=8, lr=0.05, first_slot=0, n_slots=48, seed=7)
    assert (again.part_loss, again.full_loss) == (first.part_loss, first.full_loss)
    np.testing.assert_array_equal(device.read_head(1, 0)[0], w)
    other = device.train(1, epochs=8, lr=0.05, first_slot=0, n_slots=48, seed=8)
    assert other.part_loss != first.part_loss


def _confidences(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    pq = np.stack([toy_outputs(s)[1] for s in x]).astype(np.float32)
    logits = (np.float32(SCALES["part"][0]) * (pq - np.float32(SCALES["part"][1]))) @ w.T + b
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (1.0 / e.sum(1)).astype(np.float64)


def test_set_ratio_quantile_rule_and_staged_inference(device):
    x, y = _toy_samples(40, 4, 3)
    x[:, :4] = np.random.default_rng(5).integers(-60, 60, (40, 4))  # blur the classes: spread confidence
    _store(device, x, 0)
    device.set_labels(0, 4, 0, y)
    device.train(0, epochs=3, lr=0.01, first_slot=0, n_slots=30, seed=1)
    w, b = device.read_head(0, 0)
    conf = np.sort(_confidences(w, b, x[30:]))
    for ratio in (0.25, 0.5, 0.9, 1.0):
        k = int(np.float32(np.float32(1.0) - np.float32(ratio)) * np.float32(9))
        assert device.set_ratio(0, ratio, 30, 10) == pytest.approx(conf[k], rel=1e-5)
    assert device.set_ratio(0, 0.0, 30, 10) == 2.0
    assert _status(device, Command.SET_RATIO, struct.pack("<BfII", 0, 1.5, 30, 10)) == Status.BAD_ARGUMENT
    threshold = device.set_ratio(0, 0.5, 30, 10)
    exits = []
    for sample in x[30:]:
        device.load_input(sample)
        staged = device.infer(0)
        forced = device.infer(0, force_full=True)
        assert staged.confidence == forced.confidence
        assert staged.exit_stage == (0 if staged.confidence >= threshold else 1)
        assert forced.exit_stage == staged.exit_stage and forced.prediction == staged.prediction
        assert forced.full_prediction is not None and forced.counters["rest"] > 0
        if staged.exit_stage == 0:
            assert staged.full_prediction is None and staged.counters["rest"] == 0
            assert staged.prediction == staged.part_prediction
        else:
            assert staged.prediction == staged.full_prediction == forced.full_prediction
        exits.append(staged.exit_stage)
        # INFER refreshes the part and full features for READ_TENSOR.
        np.testing.assert_array_equal(np.frombuffer(device.read_tensor(1), np.int8), toy_outputs(sample)[1])
    assert 0 < sum(exits) < 10  # the median threshold sends some samples on and lets some exit
    device.set_ratio(0, 1.0, 30, 10)
    device.load_input(x[30 + int(np.argmin(_confidences(w, b, x[30:])))])
    assert device.infer(0).exit_stage == 0
    # Retraining drops the threshold of the old heads: nothing exits early until SET_RATIO.
    device.train(0, epochs=3, lr=0.01, first_slot=0, n_slots=30, seed=1)
    assert device.infer(0).exit_stage == 1


def test_exit_ends_the_program_with_its_code(host_image):
    with launch(load_board("host"), host_image) as port:
        Device(port).exit(5)
        assert port.process.wait(timeout=5) == 5
        with pytest.raises(DeviceError):
            Device(port, timeout=0.5).hello()


def test_timeout_is_a_one_line_device_error():
    master, slave = os.openpty()
    try:
        import serial

        port = serial.Serial(os.ttyname(slave), timeout=0.05)
        with pytest.raises(DeviceError, match=r"did not answer HELLO within 0.2 s; check the port"):
            Device(port, timeout=0.2).hello()
        port.close()
    finally:
        os.close(master)
        os.close(slave)
