"""The host-file transport (HOST_OPEN, LOAD_SAMPLE, STORE_SAMPLES, SET_THRESHOLD) on the host build
over a pty, plain and under ASan + UBSan: the same answers as the UART path, and a status for each
refusal. (The emulated board's semihosting: tests/firmware/test_semihosting.py.)"""

import struct
import subprocess

import numpy as np
import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import DeviceError
from microt_deploy.evaluate import session
from microt_deploy.link.device import Device
from microt_deploy.link.protocol import HOST_PATH_MAX, Command, Status
from microt_deploy.targets import build, launch, render_firmware
from tests.firmware.toy_model import INPUT, write_toy_model


@pytest.fixture(scope="module", params=["plain", "sanitized"])
def host_image(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"host_files_{request.param}")
    options = {"max_tasks": 2, "max_classes": 8, "max_slots": 64}
    if request.param == "sanitized":
        options["sanitize"] = True
    render_firmware(write_toy_model(root / "compiled"), load_board("host"), root / "fw", options)
    return build(load_board("host"), root / "fw").image


@pytest.fixture
def device(host_image):
    with launch(load_board("host"), host_image, limit_s=120) as port:
        dev = Device(port, timeout=5.0, long_timeout=30.0, local=True)
        yield dev
        if port.process.poll() is None:
            dev.exit(0)
        assert port.process.wait(timeout=10) == 0  # a sanitizer report ends it non-zero


def _samples(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-60, 60, (n, INPUT)).astype(np.int8)
    y = np.arange(n) % 3
    x[np.arange(n), y] = 120  # learnable: the label's input byte is large
    return x, y


def _file(tmp_path, x, name="s.bin"):
    path = tmp_path / name
    path.write_bytes(np.ascontiguousarray(x, dtype=np.int8).tobytes())
    return path


def _session(device, transport, train, test, y_train, y_test, ratios=(0.3, 0.5, 0.7)):
    """store (train then calib = the train samples again), train 2 tasks, evaluate."""
    n = len(train)
    session.store_features(device, train, 0, transport=transport)
    session.store_features(device, train, n, transport=transport)
    tasks = [session.TaskSpec(k, f"t{k}", 3, y_train, y_train, y_test) for k in (0, 1)]
    trained = session.train_tasks(device, tasks, n, epochs=5, lr=0.05, seed=1)
    evals = session.evaluate_tasks(device, tasks, test, n, n, list(ratios), transport=transport)
    return trained, evals


def test_host_file_session_answers_as_the_uart_session(host_image, tmp_path):
    train, y_train = _samples(12, 0)
    test, y_test = _samples(7, 1)
    results = {}
    for kind in ("uart", "semihosting"):
        with launch(load_board("host"), host_image, limit_s=120) as port:
            dev = Device(port, timeout=5.0, long_timeout=30.0, local=True)
            with session.open_transport(dev, kind=kind) as transport:
                assert transport.kind == kind
                folder = getattr(transport, "folder", None)
                results[kind] = _session(dev, transport, train, test, y_train, y_test)
                report = transport.report()
            if folder is not None:
                assert not folder.exists()  # the temporary samples are removed
            dev.exit(0)
            assert port.process.wait(timeout=10) == 0
        results[kind + "_report"] = report
    (tu, eu), (ts, es) = results["uart"], results["semihosting"]
    for a, b in zip(tu, ts, strict=True):
        np.testing.assert_array_equal(a.part_head[0], b.part_head[0])
        np.testing.assert_array_equal(a.full_head[0], b.full_head[0])
    for a, b in zip(eu, es, strict=True):
        np.testing.assert_array_equal(a.part_pred, b.part_pred)
        np.testing.assert_array_equal(a.part_conf, b.part_conf)
        np.testing.assert_array_equal(a.full_pred, b.full_pred)
        assert a.thresholds == b.thresholds
        for r in a.thresholds:
            np.testing.assert_array_equal(a.staged_pred[r], b.staged_pred[r])
            np.testing.assert_array_equal(a.staged_exit[r], b.staged_exit[r])
            # the same stages ran (ns counts differ, but zero / non-zero per stage does not)
            np.testing.assert_array_equal(a.staged_counters[r] > 0, b.staged_counters[r] > 0)
    uart, semi = results["uart_report"], results["semihosting_report"]
    assert uart["kind"] == "uart" and semi["kind"] == "semihosting"
    assert 0 < semi["bytes_sent"] < uart["bytes_sent"]  # no sample bytes over the link


def test_host_file_refusals(device, tmp_path):
    x, _ = _samples(3)
    path = _file(tmp_path, x)

    def status(command, payload):
        return device.request(command, payload, expect=None)[0]

    # Nothing open yet.
    assert status(Command.LOAD_SAMPLE, struct.pack("<I", 0)) == Status.NOT_READY
    assert status(Command.STORE_SAMPLES, struct.pack("<IIH", 0, 0, 1)) == Status.NOT_READY
    # Paths: missing file, a folder, empty, too long, a NUL inside; a file that is not whole samples.
    assert status(Command.HOST_OPEN, str(tmp_path / "missing.bin").encode()) == Status.IO_ERROR
    assert status(Command.HOST_OPEN, str(tmp_path).encode()) == Status.IO_ERROR
    assert status(Command.HOST_OPEN, b"") == Status.BAD_ARGUMENT
    assert status(Command.HOST_OPEN, b"/" * (HOST_PATH_MAX + 1)) == Status.BAD_ARGUMENT
    assert status(Command.HOST_OPEN, str(path).encode() + b"\0x") == Status.BAD_ARGUMENT
    odd = tmp_path / "odd.bin"
    odd.write_bytes(bytes(INPUT + 1))
    assert status(Command.HOST_OPEN, str(odd).encode()) == Status.BAD_ARGUMENT
    (tmp_path / "empty.bin").write_bytes(b"")
    assert status(Command.HOST_OPEN, str(tmp_path / "empty.bin").encode()) == Status.BAD_ARGUMENT
    with pytest.raises(DeviceError, match="1..255"):
        device.host_open("/" * (HOST_PATH_MAX + 1))
    with pytest.raises(DeviceError, match="IO_ERROR"):
        device.host_open(str(tmp_path / "missing.bin"))
    # A good file: 3 samples.
    assert device.host_open(str(path)) == 3
    body = device.request(Command.HOST_OPEN, str(path).encode())[1]
    assert struct.unpack("<II", body) == (3 * INPUT, 3)
    assert status(Command.LOAD_SAMPLE, struct.pack("<I", 3)) == Status.OUT_OF_RANGE
    assert status(Command.LOAD_SAMPLE, struct.pack("<I", 0xFFFFFFFF)) == Status.OUT_OF_RANGE
    assert status(Command.LOAD_SAMPLE, b"\0\0\0") == Status.BAD_LENGTH
    for first, slot, count in ((0, 0, 4), (3, 0, 1), (2, 0, 0xFFFF), (0xFFFFFFFF, 0, 2), (0, 64, 1), (0, 62, 3),
                               (0, 0xFFFFFFFF, 2)):
        expected = Status.OUT_OF_RANGE
        assert status(Command.STORE_SAMPLES, struct.pack("<IIH", first, slot, count)) == expected, (first, slot)
    assert status(Command.STORE_SAMPLES, struct.pack("<IIH", 0, 0, 0)) == Status.BAD_ARGUMENT
    assert status(Command.STORE_SAMPLES, bytes(9)) == Status.BAD_LENGTH
    # A refused STORE_SAMPLES stored nothing: slot 0 is still empty.
    assert status(Command.TRAIN, struct.pack("<BHfIII", 0, 1, 0.1, 0, 1, 0)) in (Status.NOT_READY,)
    # The file gone after opening: the read fails with IO_ERROR (the open file stays readable on
    # POSIX, so shrink it instead).
    path.write_bytes(b"")
    assert status(Command.LOAD_SAMPLE, struct.pack("<I", 1)) == Status.IO_ERROR
    # A failed HOST_OPEN forgets the file opened before.
    path.write_bytes(x.tobytes())
    assert device.host_open(str(path)) == 3
    assert status(Command.HOST_OPEN, str(tmp_path / "missing.bin").encode()) == Status.IO_ERROR
    assert status(Command.LOAD_SAMPLE, struct.pack("<I", 0)) == Status.NOT_READY


def test_load_sample_is_the_same_input_as_load_input(device, tmp_path):
    x, _ = _samples(4, 3)
    device.host_open(str(_file(tmp_path, x)))
    for i in (2, 0, 3):
        device.load_sample(i)
        device.run_graphs()
        from_file = [device.read_tensor(t) for t in ("split", "part", "full")]
        device.load_input(x[i])
        device.run_graphs()
        assert from_file == [device.read_tensor(t) for t in ("split", "part", "full")]
    # LOAD_SAMPLE makes the old tensors unreadable until the graphs run again.
    device.load_sample(1)
    assert device.request(Command.READ_TENSOR, struct.pack("<BIH", 1, 0, 1), expect=None)[0] == Status.NOT_READY


def test_set_threshold_refusals_and_effect(device, tmp_path):
    x, y = _samples(9, 4)
    device.host_open(str(_file(tmp_path, x)))
    assert device.store_samples(0, 0, 9)["trunk"] >= 0
    st = device.request(Command.SET_THRESHOLD, struct.pack("<Bf", 0, 0.5), expect=None)[0]
    assert st == Status.NOT_READY  # untrained
    device.set_labels(0, 3, 0, y)
    device.train(0, 5, 0.05, 0, 9, 1)
    for bad in (float("nan"), -0.1, 2.5, float("inf")):
        assert device.request(Command.SET_THRESHOLD, struct.pack("<Bf", 0, bad), expect=None)[0] == Status.BAD_ARGUMENT
    assert device.request(Command.SET_THRESHOLD, struct.pack("<Bf", 2, 0.5), expect=None)[0] == Status.BAD_ARGUMENT
    assert device.request(Command.SET_THRESHOLD, bytes(4), expect=None)[0] == Status.BAD_LENGTH
    # The threshold SET_RATIO computes, set directly, decides the same.
    th = device.set_ratio(0, 0.5, 0, 9)
    device.load_sample(4)
    want = device.infer(0)
    device.set_threshold(0, 2.0)
    assert device.infer(0).exit_stage == 1  # 2.0 never exits early
    device.set_threshold(0, th)
    got = device.infer(0)
    assert (got.prediction, got.exit_stage, got.confidence) == (want.prediction, want.exit_stage, want.confidence)
    device.set_threshold(0, 0.0)
    assert device.infer(0).exit_stage == 0


def test_transport_falls_back_to_the_uart_for_a_remote_device(device):
    device.local = False
    with session.open_transport(device, baud=921600) as transport:
        assert transport.report() == {"kind": "uart", "baud": 921600, "bytes_sent": 0, "seconds": 0.0}


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "sanitized"])
def test_a_sample_larger_than_a_payload_streams_whole_and_a_failed_read_loads_nothing(tmp_path, sanitize):
    """LOAD_SAMPLE streams the file into the input a payload at a time (no copy of the input beside the
    model's): with 256-byte payloads a 1,040-byte sample arrives in 5 pieces, and the graphs' outputs
    are the toy's on the whole sample (the trunk sums every input byte: a piece at the wrong offset, or
    missing, changes them). Oracle: wide_toy_outputs in numpy. A read that fails leaves no input."""
    from tests.firmware.toy_model import wide_toy_outputs, write_wide_toy_model

    width = 1040
    options = {"max_tasks": 1, "max_classes": 4, "max_slots": 8, "max_payload": 256, "sanitize": sanitize}
    render_firmware(write_wide_toy_model(tmp_path / "compiled", width), load_board("host"), tmp_path / "fw",
                    options)
    image = build(load_board("host"), tmp_path / "fw").image
    x = np.random.default_rng(5).integers(-128, 128, (3, width)).astype(np.int8)
    path = _file(tmp_path, x)
    with launch(load_board("host"), image, limit_s=120) as port:
        dev = Device(port, timeout=5.0, long_timeout=30.0, local=True)
        assert dev.host_open(str(path)) == 3
        for i in (2, 0, 1):
            dev.load_sample(i)
            dev.run_graphs()
            got = [dev.read_tensor(t) for t in ("split", "part", "full")]
            want = wide_toy_outputs(x[i])
            for g, w in zip(got, want, strict=True):
                assert np.array_equal(np.frombuffer(bytes(g), np.int8), w), i
        path.write_bytes(x[:1].tobytes())  # shrunk under the open file: sample 2's read fails
        assert dev.request(Command.LOAD_SAMPLE, struct.pack("<I", 2), expect=None)[0] == Status.IO_ERROR
        assert dev.request(Command.RUN_GRAPHS, b"", expect=None)[0] == Status.NOT_READY
        dev.exit(0)
    assert port.process.wait(timeout=10) == 0  # a sanitizer report ends it non-zero


def test_the_input_lives_in_the_arena_and_the_trunk_runs_once_per_input(tmp_path):
    """No input-sized buffer beside the arena (the image's symbol table is the oracle: nothing of the
    input's 1,040 bytes but the arena holding it); every run on a loaded input after the first resumes
    from the split (the trunk's count is the first run's, to the nanosecond, and the answers are the
    toy's); after a run, a new input must start at offset 0."""
    from tests.firmware.toy_model import wide_toy_outputs, write_wide_toy_model

    width = 1040
    render_firmware(write_wide_toy_model(tmp_path / "compiled", width), load_board("host"), tmp_path / "fw",
                    {"max_tasks": 1, "max_classes": 4, "max_slots": 8, "max_payload": 256})
    image = build(load_board("host"), tmp_path / "fw").image
    symbols = subprocess.run(["nm", "-S", "--size-sort", str(image)], capture_output=True, text=True,
                             check=True).stdout.split()
    sizes = {int(symbols[i + 1], 16): symbols[i + 3] for i in range(0, len(symbols) - 3, 4)
             if symbols[i + 2] in "bBdD"}
    assert width not in sizes and sizes.get(48 + width) == "arena", sizes
    x = np.random.default_rng(6).integers(-128, 128, (2, width)).astype(np.int8)
    with launch(load_board("host"), image, limit_s=120) as port:
        dev = Device(port, timeout=5.0, long_timeout=30.0, local=True)
        for sample in x:
            dev.load_input(sample)
            first = dev.run_graphs()
            again = dev.run_graphs()
            assert first["trunk"] > 0 and again["trunk"] == first["trunk"]
            for tensor, want in zip(("split", "part", "full"), wide_toy_outputs(sample), strict=True):
                assert np.array_equal(np.frombuffer(bytes(dev.read_tensor(tensor)), np.int8), want)
            chunk = struct.pack("<I", 256) + bytes(16)
            assert dev.request(Command.LOAD_INPUT, chunk, expect=None)[0] == Status.NOT_READY
        dev.exit(0)
