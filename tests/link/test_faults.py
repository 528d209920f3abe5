"""The fault proxy, then real evaluations through it against the emulated board: with drops, flips,
duplicates and delays every answer is identical to a clean run's; a link too hostile for the
retries and a cut link end in one DeviceError line, never in a wrong number."""

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from microt_deploy.boards import load_board
from microt_deploy.errors import DeviceError
from microt_deploy.evaluate import session
from microt_deploy.link.device import Device
from microt_deploy.link.faults import FaultProxy, Faults
from microt_deploy.targets import build, launch, render_firmware
from tests.firmware.toy_model import INPUT, write_toy_model

# ---------------------------------------------------------------- the proxy itself


def _drain(sock: socket.socket, quiet_s: float = 0.5) -> bytes:
    sock.settimeout(quiet_s)
    got = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        pass
    return bytes(got)


def _through(faults: Faults, data: bytes, seed: int, chunk: int = 1000) -> tuple[bytes, dict]:
    """Send ``data`` client -> device through a proxy; what the device side received, the counts."""
    device_side, upstream = socket.socketpair()
    with FaultProxy(upstream, to_device=faults, seed=seed, limit_s=30) as proxy:
        client = socket.create_connection(proxy.address)
        reader = threading.Thread(target=lambda: out.append(_drain(device_side)))
        out: list[bytes] = []
        reader.start()
        for i in range(0, len(data), chunk):
            client.sendall(data[i : i + chunk])
        reader.join(10)
        client.close()
    device_side.close()
    upstream.close()
    return out[0], proxy.stats()


DATA = np.random.default_rng(0).integers(0, 256, 60_000, dtype=np.uint8).tobytes()


def test_rates_give_the_expected_counts_and_a_seed_gives_the_same_run():
    faults = Faults(drop=0.01, flip=0.01, duplicate=0.01)
    got, stats = _through(faults, DATA, seed=5)
    c = stats["to_device"]
    n = len(DATA)
    for key in ("dropped", "flipped", "duplicated"):
        assert abs(c[key] - 0.01 * n) < 5 * np.sqrt(0.01 * n), (key, c[key])  # 5 sigma
    assert c["bytes_in"] == n and c["bytes_out"] == n - c["dropped"] + c["duplicated"] == len(got)
    assert stats["to_host"]["bytes_in"] == 0 and not stats["cut"]
    # The n-th byte's fate is the seed's, not the chunking's.
    again, stats2 = _through(faults, DATA, seed=5, chunk=777)
    assert again == got and stats2 == stats
    other, _ = _through(faults, DATA, seed=6)
    assert other != got


def test_a_flip_is_one_bit_of_one_byte():
    got, stats = _through(Faults(flip=0.02), DATA, seed=1)
    diff = np.frombuffer(got, np.uint8) ^ np.frombuffer(DATA, np.uint8)
    assert np.count_nonzero(diff) == stats["to_device"]["flipped"] > 0
    assert set(np.unique(diff[diff != 0]).tolist()) <= {1, 2, 4, 8, 16, 32, 64, 128}


def test_faults_can_start_mid_stream():
    got, stats = _through(Faults(drop=0.5, start_after=30_000), DATA, seed=0)
    assert got[:30_000] == DATA[:30_000] and 13_000 < stats["to_device"]["dropped"] < 17_000


def test_delays_hold_the_stream_back_in_order():
    start = time.monotonic()
    got, stats = _through(Faults(delay=1.0, delay_ms=5), DATA[:40], seed=0, chunk=8)
    assert got == DATA[:40] and stats["to_device"]["delayed"] == 40
    assert time.monotonic() - start >= 0.2


def test_both_directions_and_a_pyserial_device_side():
    # loop:// echoes: the client's bytes come back through both pumps.
    echo = serial.serial_for_url("loop://", timeout=0.05)
    with FaultProxy(echo, to_device=Faults(duplicate=1.0), to_host=Faults(drop=0.5), seed=3) as proxy:
        client = proxy.open(timeout=0.3)
        client.write(b"abcdefgh" * 50)
        got = client.read(2000)
        client.close()
    s = proxy.stats()
    assert s["to_device"]["duplicated"] == 400 and s["to_host"]["bytes_in"] == 800
    assert len(got) == 800 - s["to_host"]["dropped"] and 300 < s["to_host"]["dropped"] < 500
    echo.close()


def test_an_address_as_the_device_side():
    server = socket.create_server(("127.0.0.1", 0))
    with FaultProxy(server.getsockname()[:2], to_host=Faults(flip=1.0), seed=0) as proxy:
        device_side, _ = server.accept()
        client = proxy.open(timeout=0.3)
        client.write(b"ping")
        assert _drain(device_side, 0.3) == b"ping"
        device_side.sendall(bytes(8))
        assert sum(bin(b).count("1") for b in client.read(8)) == 8  # one bit per byte
        client.close()
        device_side.close()
    server.close()


def test_a_cut_closes_the_connection():
    device_side, upstream = socket.socketpair()
    with FaultProxy(upstream, to_device=Faults(cut_after=100), seed=0) as proxy:
        port = proxy.open(timeout=0.2)
        port.write(bytes(300))
        assert len(_drain(device_side, 0.3)) == 100
        with pytest.raises(serial.SerialException):
            for _ in range(20):
                port.read(10)
        assert proxy.cut and proxy.stats()["to_device"]["cut"] and "cut to_device after 100 bytes" in proxy.error
        port.close()
    assert not proxy.running
    device_side.close()
    upstream.close()


def test_the_proxy_stops_by_itself():
    _, upstream = socket.socketpair()
    start = time.monotonic()
    lonely = FaultProxy(upstream, accept_timeout_s=0.2).start()  # nobody connects
    time.sleep(0.4)
    assert not lonely.running and lonely.error == "no client connected"
    lonely.close()
    with FaultProxy(upstream, limit_s=0.3) as proxy:  # a client that never hangs up
        port = proxy.open(timeout=0.1)
        time.sleep(0.6)
        assert not proxy.running and "life limit" in proxy.error
        port.close()
    with FaultProxy(upstream) as proxy:  # a client that hangs up
        proxy.open().close()
        time.sleep(0.3)
        assert not proxy.running and proxy.error is None
    assert time.monotonic() - start < 5
    upstream.close()
    with pytest.raises(ConnectionError, match="cannot connect"):
        FaultProxy(("127.0.0.1", _closed_port()), connect_timeout_s=0.2).start()
    with pytest.raises(ValueError):
        Faults(drop=1.5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- evaluations on the emulated board

BOARD = "qemu_mps2_an386"
N_TRAIN, N_CALIB, N_TEST = 16, 6, 4
RATIOS = (0.5, 1.0)


def _image(root: Path, board_id: str) -> Path:
    board = load_board(board_id)
    compiled = write_toy_model(root / "compiled")
    render_firmware(compiled, board, root / "fw", {"max_tasks": 2, "max_classes": 8, "max_slots": 64})
    return build(board, root / "fw").image


@pytest.fixture(scope="module")
def qemu_image(tmp_path_factory) -> Path:
    return _image(tmp_path_factory.mktemp("faults_fw"), BOARD)


class Recorder:
    """Wraps a Device: every answer the evaluation got, in order, as plain values, the counter
    values apart (``counters``), so that they can be compared on their own."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.log: list = []
        self.counters: list = []

    def __getattr__(self, name: str):
        method = getattr(self.device, name)

        def call(*args, **kwargs):
            result = method(*args, **kwargs)
            value, counters = _split(result)
            self.log.append((name, _plain(args), _plain(kwargs), value))
            self.counters.append(counters)
            return result

        return call


def _split(result) -> tuple:
    """(the answer without counter values, the counter values)."""
    if isinstance(result, dict) and set(result) == {"trunk", "part_head", "rest"}:
        return None, _plain(result)
    if hasattr(result, "__dataclass_fields__"):
        fields = {k: getattr(result, k) for k in result.__dataclass_fields__}
        counters = {k: fields.pop(k) for k in ("counter", "counters") if k in fields}
        return (type(result).__name__, _plain(fields)), _plain(counters)
    return _plain(result), ()


def _plain(value):
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return (type(value).__name__, _plain({k: getattr(value, k) for k in value.__dataclass_fields__}))
    return value


def _ints(counters) -> list[int]:
    out: list[int] = []
    for item in counters if isinstance(counters, tuple) else (counters,):
        if isinstance(item, tuple):
            out += _ints(item)
        elif isinstance(item, int):
            out.append(item)
    return out


def _counter_differences(run: dict, clean: dict) -> list[int]:
    """Per answer with counters that differ from the clean run: the largest difference."""
    diffs = []
    for mine, theirs in zip(run["counters"], clean["counters"], strict=False):
        a, b = _ints(mine), _ints(theirs)
        assert len(a) == len(b)
        if a != b:
            diffs.append(max(abs(x - y) for x, y in zip(a, b, strict=True)))
    return diffs


def _evaluation(device: Recorder) -> None:
    """What pipeline.evaluate asks of a device (session.py), plus tensors read back."""
    rng = np.random.default_rng(7)
    x = rng.integers(-60, 60, (N_TRAIN + N_CALIB + N_TEST, INPUT)).astype(np.int8)
    y = rng.integers(0, 3, len(x))
    x[np.arange(len(x)), y] = 110
    device.hello()
    for sample in x[:2]:
        device.load_input(sample)
        device.run_graphs()
        for tid in range(3):
            device.read_tensor(tid)
    tasks = [session.TaskSpec(0, "three", 3, y[:N_TRAIN], y[N_TRAIN:-N_TEST], y[-N_TEST:]),
             session.TaskSpec(1, "odd", 2, y[:N_TRAIN] % 2, y[N_TRAIN:-N_TEST] % 2, y[-N_TEST:] % 2)]
    session.store_features(device, x[:N_TRAIN], 0)
    session.store_features(device, x[N_TRAIN:-N_TEST], N_TRAIN)
    session.train_tasks(device, tasks, N_TRAIN, epochs=4, lr=0.05, seed=11)
    session.evaluate_tasks(device, tasks, x[-N_TEST:], N_TRAIN, N_CALIB, RATIOS)
    device.exit(0)


def _run(image: Path, to_device: Faults | None = None, to_host: Faults | None = None, seed: int = 0,
         retries: int = 4, board_id: str = BOARD) -> dict:
    board = load_board(board_id)
    out: dict = {"error": None}
    with launch(board, image, limit_s=120) as port:
        if to_device is None and to_host is None:
            recorder = Recorder(Device(port, timeout=5.0, long_timeout=5.0))
            _evaluation(recorder)
            out["exit"] = port.process.wait(timeout=10)
        else:
            with FaultProxy(port, to_device, to_host, seed=seed, limit_s=100) as proxy:
                recorder = Recorder(Device(proxy.open(), timeout=0.5, long_timeout=1.0, retries=retries))
                try:
                    _evaluation(recorder)
                except DeviceError as err:
                    out["error"] = str(err)
                recorder.device.port.close()
            out["proxy"] = proxy.stats()
    out["log"] = recorder.log
    out["counters"] = recorder.counters
    out["stats"] = recorder.device.stats
    return out


@pytest.fixture(scope="module")
def clean(qemu_image) -> dict:
    run = _run(qemu_image)
    assert run["exit"] == 0 and len(run["log"]) > 100
    return run


ALL = dict(drop=1e-3, flip=1e-3, duplicate=1e-3, delay=1e-3, delay_ms=20)
MIXES = {
    "drops": (Faults(drop=3e-3), Faults(drop=3e-3)),
    "flips": (Faults(flip=3e-3), Faults(flip=3e-3)),
    "duplicates+delays": (Faults(duplicate=3e-3, delay=1e-2, delay_ms=20),
                          Faults(duplicate=3e-3, delay=1e-2, delay_ms=20)),
    "all at 1e-3": (Faults(**ALL), Faults(**ALL)),
}


def _faults_seen(run: dict) -> dict:
    keys = ("dropped", "flipped", "duplicated", "delayed")
    return {k: run["proxy"]["to_device"][k] + run["proxy"]["to_host"][k] for k in keys}


@pytest.mark.parametrize("mix", [pytest.param(m, marks=[] if m == "all at 1e-3" else [pytest.mark.slow])
                                 for m in MIXES])
def test_evaluation_through_faults_matches_the_clean_run(qemu_image, clean, mix):
    run = _run(qemu_image, *MIXES[mix], seed=2)
    seen = _faults_seen(run)
    diffs = _counter_differences(run, clean)
    print(f"\n{mix}: faults {seen}, device stats { {k: v for k, v in run['stats'].items() if v} }, "
          f"counter values off by a tick: {len(diffs)}")
    assert run["error"] is None, run["error"]
    # Tensors, heads, losses, accuracies, thresholds, predictions, confidences: bit for bit.
    assert run["log"] == clean["log"]
    # The emulator's counters too, as long as no stray byte reaches the board while it computes: its
    # UART RX interrupt then runs inside the measured span and may move a value by one 40-instruction
    # SysTick tick. A duplicated last byte of a request does that, and so would a retry sent after a
    # timeout while the board was still computing (a stalled emulator on a loaded machine).
    strays = seen["duplicated"] + run["stats"]["timeouts"]
    assert all(d == 40 for d in diffs) and len(diffs) <= strays
    if strays == 0:
        assert diffs == []
    assert sum(seen.values()) > 0
    if seen["dropped"] or seen["flipped"] or seen["duplicated"]:
        assert run["stats"]["retries"] > 0


def test_a_hopeless_link_is_one_error_line_and_no_wrong_number(qemu_image, clean):
    hostile = Faults(drop=0.02, flip=0.02, duplicate=0.02, start_after=1000)  # turns bad mid-session
    run = _run(qemu_image, hostile, hostile, seed=4, retries=2)
    print(f"\nhostile: faults {_faults_seen(run)}, {len(run['log'])} answers, device stats "
          f"{ {k: v for k, v in run['stats'].items() if v} }, error {run['error']!r}")
    assert run["error"] is not None and "\n" not in run["error"]
    assert "failed after 3 attempts" in run["error"] or "after 3 attempts, device did not answer" in run["error"]
    assert 0 < len(run["log"]) < len(clean["log"])
    assert run["log"] == clean["log"][: len(run["log"])]  # every answer given before it was right
    assert all(d == 40 for d in _counter_differences(run, clean))


def test_a_cut_link_is_a_device_error(qemu_image, clean):
    run = _run(qemu_image, Faults(cut_after=1500), Faults(), seed=0)
    assert run["proxy"]["cut"] and run["proxy"]["to_device"]["bytes_out"] == 1500
    assert run["error"].startswith("lost the connection to the device during ")
    assert 10 < len(run["log"]) < len(clean["log"]) and run["log"] == clean["log"][: len(run["log"])]
    assert _counter_differences(run, clean) == []


@pytest.mark.slow
def test_the_host_build_on_a_pty_through_faults(tmp_path):
    """The proxy's device side as a pty (pyserial Serial), the firmware built for this machine. Its
    counter is nanoseconds, so only the answers, not the counter values, repeat."""
    image = _image(tmp_path, "host")
    clean_run = _run(image, board_id="host")
    run = _run(image, Faults(**ALL), Faults(**ALL), seed=3, board_id="host")
    print(f"\nhost pty: faults {_faults_seen(run)}, device stats { {k: v for k, v in run['stats'].items() if v} }")
    assert run["error"] is None and run["log"] == clean_run["log"]
