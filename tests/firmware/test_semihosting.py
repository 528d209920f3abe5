"""The host-file transport on the emulated boards: the mps2-an386 reads samples by ARM semihosting and
gives the same predictions and counter values as the UART transport on the same image; the STM32
layer (a real board would fault on the semihosting BKPT without a debugger) answers UNSUPPORTED,
and eval then falls back to the UART."""

import struct

import numpy as np
import pytest

from microt_deploy.boards import load_board
from microt_deploy.evaluate import session
from microt_deploy.link.device import Device
from microt_deploy.link.protocol import Command, Status
from microt_deploy.targets import build, launch, render_firmware
from tests.firmware.toy_model import INPUT, write_toy_model


@pytest.fixture(scope="module")
def mps2_image(tmp_path_factory):
    root = tmp_path_factory.mktemp("mps2_semihosting")
    board = load_board("qemu_mps2_an386")
    render_firmware(write_toy_model(root / "compiled"), board, root / "fw",
                    {"max_tasks": 2, "max_classes": 8, "max_slots": 64})
    return build(board, root / "fw").image


def _samples(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-60, 60, (n, INPUT)).astype(np.int8)
    y = np.arange(n) % 3
    x[np.arange(n), y] = 120
    return x, y


def _run(image, kind, train, y_train, test, y_test):
    with launch(load_board("qemu_mps2_an386"), image, limit_s=120) as port:
        dev = Device(port, timeout=10.0, long_timeout=60.0, local=True)
        assert dev.hello().counter_unit == "instructions"
        with session.open_transport(dev, kind=kind) as transport:
            assert transport.kind == kind
            session.store_features(dev, train, 0, transport=transport)
            session.store_features(dev, train, len(train), transport=transport)
            tasks = [session.TaskSpec(k, f"t{k}", 3, y_train, y_train, y_test) for k in (0, 1)]
            trained = session.train_tasks(dev, tasks, len(train), epochs=5, lr=0.05, seed=1)
            evals = session.evaluate_tasks(dev, tasks, test, len(train), len(train), [0.3, 0.5, 0.7],
                                           transport=transport)
            report = transport.report()
        dev.exit(0)
    return trained, evals, report


def test_semihosting_gives_the_uart_answers_and_counts(mps2_image):
    train, y_train = _samples(12, 0)
    test, y_test = _samples(6, 1)
    tu, eu, ru = _run(mps2_image, "uart", train, y_train, test, y_test)
    ts, es, rs = _run(mps2_image, "semihosting", train, y_train, test, y_test)
    assert (ru["kind"], rs["kind"]) == ("uart", "semihosting")
    for a, b in zip(tu, ts, strict=True):
        assert a.result == b.result  # the training counter included
    for a, b in zip(eu, es, strict=True):
        np.testing.assert_array_equal(a.part_pred, b.part_pred)
        np.testing.assert_array_equal(a.full_pred, b.full_pred)
        np.testing.assert_array_equal(a.part_conf, b.part_conf)
        # Under -icount the counts are exact: the file reading is not inside any measured stage.
        np.testing.assert_array_equal(a.forced_counters, b.forced_counters)
        assert a.forced_counters.sum() > 0  # (the toy trunk is below one 40-instruction tick)
        assert a.thresholds == b.thresholds
        for r in a.thresholds:
            np.testing.assert_array_equal(a.staged_pred[r], b.staged_pred[r])
            np.testing.assert_array_equal(a.staged_exit[r], b.staged_exit[r])
            np.testing.assert_array_equal(a.staged_counters[r], b.staged_counters[r])


def test_semihosting_refusals_on_the_emulator(mps2_image, tmp_path):
    x, _ = _samples(2, 2)
    path = tmp_path / "s.bin"
    path.write_bytes(x.tobytes())
    with launch(load_board("qemu_mps2_an386"), mps2_image, limit_s=60) as port:
        dev = Device(port, timeout=10.0, local=True)
        dev.hello()
        req = lambda c, p: dev.request(c, p, expect=None)[0]  # noqa: E731
        assert req(Command.HOST_OPEN, str(tmp_path / "missing.bin").encode()) == Status.IO_ERROR
        assert req(Command.LOAD_SAMPLE, struct.pack("<I", 0)) == Status.NOT_READY
        assert dev.host_open(str(path)) == 2
        assert req(Command.LOAD_SAMPLE, struct.pack("<I", 2)) == Status.OUT_OF_RANGE
        dev.load_sample(1)
        from_file = dev.run_graphs(), dev.read_tensor("full")
        dev.load_input(x[1])
        assert (dev.run_graphs(), dev.read_tensor("full")) == from_file  # same tensors, same counts
        dev.exit(0)


def test_stm32_layer_answers_unsupported(tmp_path):
    """The STM32 layer under QEMU's b-l475e-iot01a: HOST_OPEN is UNSUPPORTED (no BKPT is executed),
    and the transport falls back to the UART."""
    from tests.firmware.test_stm32_layer import _hello_when_ready, _link, _Qemu, _qemu_machine_available, _render

    board = load_board("disco_l475vg_iot01a")
    compiled = write_toy_model(tmp_path / "compiled")
    src, sources = _render(board, tmp_path / "fw", compiled)
    result = _link(board, tmp_path / "fw", src, sources)
    assert result.returncode == 0, result.stderr
    assert _qemu_machine_available(), "this QEMU has no b-l475e-iot01a: run `make setup` (QEMU 10 from backports)"
    with _Qemu(tmp_path / "fw" / "firmware.elf") as qemu:
        device, _ = _hello_when_ready(qemu.port)
        device.local = True
        assert device.request(Command.HOST_OPEN, str(tmp_path / "x.bin").encode(), expect=None)[0] == Status.UNSUPPORTED
        assert device.request(Command.LOAD_SAMPLE, bytes(4), expect=None)[0] == Status.NOT_READY
        with session.open_transport(device) as transport:
            assert transport.kind == "uart"
