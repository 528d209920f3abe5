"""The built firmware running a real compiled model: on the host over a pty and in QEMU over a
socket. Device tensors are byte-for-byte TFLite's reference kernels; staged inference and the
emulator's instruction counts are plausible and deterministic."""

import numpy as np
import pytest

from microt_deploy.boards import load_board
from microt_deploy.link.device import Device
from microt_deploy.targets import launch
from tests.targets.split_model import reference_chain


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (n, 8 * 8 * 3), dtype=np.int8)


def _session(device: Device, paths: dict) -> dict:
    """Bit-exact tensors, then store/label/train/ratio and a few staged inferences."""
    info = device.hello()
    x = _inputs(24, 1)
    for sample in x[:3]:
        device.load_input(sample)
        device.run_graphs()
        for tid, want in enumerate(reference_chain(paths, sample)):
            np.testing.assert_array_equal(np.frombuffer(device.read_tensor(tid), np.int8), want)
    store = []
    for i, sample in enumerate(x):
        device.load_input(sample)
        store.append(device.store_features(i))
    labels = (np.arange(24) % 3).astype(np.uint8)
    device.set_labels(0, 3, 0, labels)
    train = device.train(0, epochs=5, lr=0.05, first_slot=0, n_slots=16, seed=3)
    threshold = device.set_ratio(0, 0.5, 16, 8)
    infers = []
    for sample in x[16:20]:
        device.load_input(sample)
        infers.append(device.infer(0))
        infers.append(device.infer(0, force_full=True))
    device.exit(0)
    return {"info": info, "store": store, "train": train, "threshold": threshold, "infers": infers}


def test_host_device_is_bit_exact_and_stages(built, split_model):
    _, result = built("host")
    with launch(load_board("host"), result.image, limit_s=120) as port:
        out = _session(Device(port), split_model["paths"])
    assert out["info"].part_dim == 6 and out["info"].full_dim == 10 and out["info"].split.size == 128
    assert np.isfinite(out["train"].part_loss) and 0 <= out["threshold"] <= 1
    for r in out["infers"]:
        assert r.exit_stage == (0 if r.confidence >= out["threshold"] else 1)


@pytest.fixture(scope="module")
def qemu_runs(built, split_model):
    _, result = built("qemu_mps2_an386")
    runs = []
    for _ in range(2):
        with launch(load_board("qemu_mps2_an386"), result.image, limit_s=120) as port:
            runs.append(_session(Device(port, timeout=10), split_model["paths"]))
            assert port.process.wait(timeout=10) == 0
    return runs


def test_qemu_boots_answers_and_is_bit_exact(qemu_runs):
    info = qemu_runs[0]["info"]
    assert (info.board, info.counter_unit, info.clock_hz) == ("qemu_mps2_an386", "instructions", 120_000_000)
    assert info.max_slots == 1536 and info.arena_bytes >= 128


def test_qemu_counters_plausible_and_deterministic(qemu_runs, split_model):
    first, second = qemu_runs
    macs = {g["prefix"]: g["macs"] for g in split_model["plan"]["graphs"]}
    for r in first["infers"]:
        counts = r.counters
        assert all(v % 40 == 0 for v in counts.values())  # one 25 MHz SysTick tick = 40 instructions
        assert counts["trunk"] > macs["trunk"] and counts["part_head"] > 0 and counts["part_classifier"] > 0
        if r.exit_stage == 1 or r.full_prediction is not None:
            assert counts["rest"] > macs["rest"] and counts["full_classifier"] > 0
        # An int8 MAC costs a handful of instructions with these reference-style kernels.
        assert counts["trunk"] < 100 * macs["trunk"]
    assert [r.counters for r in first["infers"]] == [r.counters for r in second["infers"]]
    assert first["store"] == second["store"]
    assert first["train"] == second["train"]
    assert first["threshold"] == second["threshold"]


def test_qemu_recovers_from_truncated_frames_and_garbage(built):
    import struct
    import time

    from microt_deploy.link.protocol import Command, Decoder, Status, encode

    _, result = built("qemu_mps2_an386")
    with launch(load_board("qemu_mps2_an386"), result.image, limit_s=60) as port:
        device = Device(port, timeout=10)
        assert device.hello().board == "qemu_mps2_an386"
        # A frame cut short: the byte timeout (virtual time advances while the guest idles in WFI)
        # drops it, and the next frame is answered normally.
        port.write(encode(Command.LOAD_INPUT, 77, struct.pack("<I", 0) + bytes(100))[:-30])
        time.sleep(0.6)
        assert port.in_waiting == 0
        assert device.hello().max_slots == 1536
        bad = bytearray(encode(Command.HELLO, 78))
        bad[-1] ^= 0x40
        port.write(np.random.default_rng(0).integers(0, 0xA5, 2000, dtype=np.uint8).tobytes() + bytes(bad))
        deadline, frames, decoder = time.monotonic() + 5, [], Decoder()
        while not frames and time.monotonic() < deadline:
            frames = decoder.feed(port.read(64))
        assert [(f.sequence, f.payload) for f in frames] == [(78, bytes([Status.BAD_CRC]))]
        assert device.hello().board == "qemu_mps2_an386"
        device.exit(3)
        assert port.process.wait(timeout=10) == 3
