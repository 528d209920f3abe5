"""Structured fuzzing of the firmware's command handlers on an ASan + UBSan host build: random
commands with random payloads (valid CRC), each answered exactly once, no memory error, no UB."""

import struct

import numpy as np
import pytest

from microt_deploy.boards import load_board
from microt_deploy.link.device import Device
from microt_deploy.link.protocol import Command, Status
from microt_deploy.targets import build, launch, render_firmware
from tests.firmware.toy_model import write_toy_model


@pytest.fixture(scope="module")
def sanitized_image(tmp_path_factory):
    root = tmp_path_factory.mktemp("asan_fw")
    board = load_board("host")
    render_firmware(write_toy_model(root / "compiled"), board, root / "fw",
                    {"max_tasks": 2, "max_classes": 4, "max_slots": 16, "max_payload": 256, "sanitize": True})
    return build(board, root / "fw").image


def _random_payload(rng: np.random.Generator, command: int) -> bytes:
    payload = bytearray(rng.integers(0, 256, int(rng.integers(0, 24)), dtype=np.uint8).tobytes())
    if command == Command.TRAIN and len(payload) >= 3:
        payload[1:3] = struct.pack("<H", int(rng.integers(0, 4)))  # bounded epochs keep the run short
    if rng.random() < 0.5:  # small numbers reach past the argument checks more often
        payload = bytearray(b % 20 if i != 0 else b % 3 for i, b in enumerate(payload))
    return bytes(payload)


def test_random_commands_are_each_answered_without_memory_errors(sanitized_image):
    assert b"__asan_report" in sanitized_image.read_bytes() and b"__ubsan_handle" in sanitized_image.read_bytes()
    rng = np.random.default_rng(2024)
    statuses = set()
    with launch(load_board("host"), sanitized_image, limit_s=300) as port:
        device = Device(port, timeout=10)
        assert device.hello().max_payload == 256
        for slot in range(6):  # some stored, labelled slots so deeper paths are reachable
            device.load_input(rng.integers(-128, 128, 16, dtype=np.int8))
            device.store_features(slot)
        device.set_labels(0, 3, 0, [0, 1, 2, 0, 1, 2])
        commands = [c for c in Command if c != Command.EXIT] + [0, 0x3F, 0x7F, 0xFF]
        for _ in range(600):
            command = int(rng.choice(commands))
            status, _ = device.request(command, _random_payload(rng, command), expect=None)
            statuses.add(status)
        # Long payloads up to the limit, and one just past it on the device's side.
        assert device.request(Command.LOAD_INPUT, bytes(256), expect=None)[0] == Status.OUT_OF_RANGE
        assert device.request(Command.LOAD_INPUT, bytes(257), expect=None)[0] == Status.BAD_LENGTH
        assert device.hello().board == "host"
        device.exit(0)
        assert port.process.wait(timeout=10) == 0  # ASan/UBSan would have exited non-zero
    assert {Status.OK, Status.BAD_LENGTH, Status.BAD_ARGUMENT, Status.UNKNOWN_COMMAND} <= statuses


def _fuzz_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "fuzz" / "run.py"
    spec = importlib.util.spec_from_file_location("fuzz_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fuzz_harnesses_replay_their_corpus_clean_under_gcc_sanitizers(tmp_path):
    """The libFuzzer harnesses of `make fuzz` (fuzz/), built with gcc + ASan + UBSan and a plain
    main() instead of libFuzzer (nothing beyond `make test`'s packages), replay the committed seed
    corpus: the parser's resync oracle and the handlers' answer checks hold, no memory error, no UB.
    The seeds are those fuzz/run.py writes (kept in step with the protocol)."""
    import subprocess

    fuzz = _fuzz_module()
    for target, files in fuzz.seeds().items():
        for name, data in files.items():
            assert (fuzz.CORPUS / target / name).read_bytes() == data, f"stale seed {target}/{name}: " \
                "run `python fuzz/run.py --write-seeds`"
    fw = fuzz.render_firmware_dir(tmp_path / "replay")
    flags = ["-g", "-O1", "-std=c99", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    exes = fuzz.build_c(fw, cc="gcc", flags=flags, driver=fuzz.FUZZ / "replay_main.c")
    for target in ("parser", "app"):
        inputs = sorted(str(p) for p in (fuzz.CORPUS / target).iterdir())
        done = subprocess.run([str(exes[target]), *inputs], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (target, done.stderr[-2000:])
        assert f"replayed {len(inputs)} inputs" in done.stdout
