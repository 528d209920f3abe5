"""The host-side client of the device: one typed method per command of docs/protocol.md, over any
pyserial port (a real board's VCP, the emulator's socket, the host build's pty).

Owns: request/response matching by sequence, response timeouts, chunking of inputs, tensors and
heads into payload-sized pieces, and turning error statuses into one-line DeviceErrors.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import serial

from microt_deploy.errors import DeviceError
from microt_deploy.link.protocol import (
    HOST_PATH_MAX,
    RESPONSE_BIT,
    SYNC,
    Command,
    Decoder,
    Frame,
    Status,
    encode,
)

COUNTER_UNITS = {0: "instructions", 1: "cycles", 2: "ns"}
STAGES = ("trunk", "part_head", "part_classifier", "rest", "full_classifier")
TENSORS = {"split": 0, "part": 1, "full": 2}
# The device drops a partial frame after this long without a byte (MDT_RX_TIMEOUT_MS + margin);
# also how long an answer may pause before what came of it counts as damaged.
RESYNC_S = 0.3

# Why each command may be sent again when its answer is missing or damaged: the device may have
# executed it already, so a second execution must leave the same state and give the same answer.
# (firmware_templates/app/mdt_app.c, microt.c, mdt_learn.c; docs/protocol.md)
RETRY_SAFE: dict[int, str] = {
    Command.HELLO: "reads constants",
    Command.LOAD_INPUT: "writes the same bytes at the same offset",
    Command.RUN_GRAPHS: "recomputes from the loaded input; the counter is aligned first, so the counts repeat",
    Command.READ_TENSOR: "reads only",
    Command.STORE_FEATURES: "recomputes the loaded input's features and overwrites the same slot",
    Command.SET_LABELS: "overwrites the same labels; the same n_classes does not reset the task",
    Command.TRAIN: "zeroes both heads first and shuffles from the request's seed: same heads, same answer "
                   "(the threshold it resets was reset by the first run too)",
    Command.SET_RATIO: "recomputes the threshold from the stored features and heads, overwrites it",
    Command.INFER: "recomputes from the loaded input and the task's heads and threshold; changes nothing but "
                   "the READ_TENSOR copies, to the same values",
    Command.READ_HEAD: "reads only",
    Command.EXIT: "a device that ended cannot act on a second EXIT; a link closed after EXIT counts as done",
    Command.HOST_OPEN: "closes the file opened before and opens the same path again: same file, same answer",
    Command.LOAD_SAMPLE: "reads the same bytes of the same file into the whole input again",
    Command.STORE_SAMPLES: "recomputes the same samples' features into the same slots; the input ends as the "
                           "last sample either way",
    Command.SET_THRESHOLD: "overwrites the task's threshold with the same value",
}
# Statuses the device's frame parser answers for a frame the link may have damaged.
_TRANSPORT_STATUSES = (Status.BAD_CRC, Status.BAD_LENGTH, Status.BAD_VERSION)

_HELLO = struct.Struct("<BBI" + "IfiIfiIfiIfi" + "HHIIH")
_TRAIN = struct.Struct("<ffffQ")
_INFER = struct.Struct("<BBBBff5Q")


@dataclass(frozen=True)
class QuantParams:
    size: int
    scale: float
    zero_point: int


@dataclass(frozen=True)
class DeviceInfo:
    """What HELLO reports: the board, its counter and the compiled model's shapes and limits.
    Plain numbers only (it goes into reports as JSON); ``input``/``split``/``part_features``/
    ``full_features`` group them as QuantParams."""

    protocol_version: int
    board: str
    counter_unit: str
    clock_hz: int
    input_size: int
    input_scale: float
    input_zero_point: int
    split_size: int
    split_scale: float
    split_zero_point: int
    part_dim: int
    part_scale: float
    part_zero_point: int
    full_dim: int
    full_scale: float
    full_zero_point: int
    max_tasks: int
    max_classes: int
    max_slots: int
    arena_bytes: int
    max_payload: int

    @property
    def input(self) -> QuantParams:
        return QuantParams(self.input_size, self.input_scale, self.input_zero_point)

    @property
    def split(self) -> QuantParams:
        return QuantParams(self.split_size, self.split_scale, self.split_zero_point)

    @property
    def part_features(self) -> QuantParams:
        return QuantParams(self.part_dim, self.part_scale, self.part_zero_point)

    @property
    def full_features(self) -> QuantParams:
        return QuantParams(self.full_dim, self.full_scale, self.full_zero_point)


@dataclass(frozen=True)
class TrainResult:
    part_loss: float
    part_accuracy: float
    full_loss: float
    full_accuracy: float
    counter: int


@dataclass(frozen=True)
class InferResult:
    """A staged inference: the staged answer, both heads' answers (full None if the rest did not
    run) and counter values per stage (0 for a stage that did not run)."""

    prediction: int
    exit_stage: int
    part_prediction: int
    full_prediction: int | None
    confidence: float
    full_confidence: float
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counters.values())


class Device:
    """A device behind ``port`` (a pyserial object: ``read``, ``write``, ``reset_input_buffer``).

    ``timeout`` bounds the wait for the answer to a quick command, ``long_timeout`` for the ones
    that compute (RUN_GRAPHS, STORE_FEATURES, TRAIN, SET_RATIO, INFER). A request whose answer is
    missing, cut short, corrupted (bad CRC: skipped by the decoder), malformed, or refused by the
    device's parser (BAD_CRC, or BAD_LENGTH / BAD_VERSION not repeated) is sent again, up to
    ``retries`` more times, as long as the command may be re-sent (:data:`RETRY_SAFE`). Each
    attempt has its own sequence number, so an earlier attempt's late answer is discarded.
    ``stats`` counts what happened (see :meth:`_new_stats`).
    """

    def __init__(self, port: Any, timeout: float = 10.0, long_timeout: float = 900.0, retries: int = 4,
                 local: bool = False) -> None:
        self.port = port
        # True when the device runs on this machine (QEMU, the host build): it can read our files.
        self.local = local
        self.timeout = timeout
        self.long_timeout = long_timeout
        self.retries = max(0, int(retries))
        self.decoder = Decoder()
        self.sequence = 0
        self.info: DeviceInfo | None = None
        self.stats: dict[str, Any] = self._new_stats()
        self._last_write = 0.0

    @staticmethod
    def _new_stats() -> dict[str, Any]:
        return {
            "requests": 0,  # calls of request() (one per command or chunk)
            "attempts": 0,  # frames sent
            "retries": 0,  # attempts after the first
            "timeouts": 0,  # attempts that got no answer in time
            "damaged": 0,  # attempts whose answer came damaged (bytes, then silence, no good frame)
            "bad_status": 0,  # BAD_CRC / BAD_LENGTH / BAD_VERSION answers to our request
            "malformed": 0,  # matching OK answers of the wrong size
            "stale": 0,  # good frames that were not the answer (other sequence or command)
            "salvaged": 0,  # answers found behind a false header in the receive buffer
            "exhausted": 0,  # requests that ran out of attempts (raised DeviceError)
            "exit_unconfirmed": 0,  # EXITs whose answer was lost with the link closing
            "bytes_sent": 0,  # frame bytes written to the link (all attempts)
            "retries_by_command": {},
        }

    # ------------------------------------------------------------ transport
    def request(self, command: Command | int, payload: bytes = b"", timeout: float | None = None,
                expect: Status | None = Status.OK,
                size: int | Callable[[bytes], bool] | None = None) -> tuple[Status, bytes]:
        """Send one request, return (status, response payload after the status byte).

        ``size``: the length an OK answer's body must have (or a predicate on it); an answer that
        fails it counts as corrupted and the request is retried. ``expect=None`` returns whatever
        status the device settles on instead of raising.
        """
        name = _name(command)
        wait = self.timeout if timeout is None else timeout
        attempts = 1 + (self.retries if command in RETRY_SAFE else 0)
        failures: list[str] = []
        previous: Status | None = None
        written = False
        self.stats["requests"] += 1
        for attempt in range(attempts):
            if attempt:
                self.stats["retries"] += 1
                by_command = self.stats["retries_by_command"]
                by_command[name] = by_command.get(name, 0) + 1
                # After BAD_LENGTH / BAD_VERSION the device already hunts for sync again: no wait.
                self._settle(wait_for_device=previous not in (Status.BAD_LENGTH, Status.BAD_VERSION))
            self.sequence = (self.sequence + 1) & 0xFF
            seq = self.sequence
            self.stats["attempts"] += 1
            try:
                frame = encode(command, seq, payload)
                self.stats["bytes_sent"] += len(frame)
                self.port.write(frame)
                written = True
                self._last_write = time.monotonic()
                outcome = self._await(command, seq, wait)
            except (serial.SerialException, OSError) as err:
                if command == Command.EXIT and written:
                    # The device ends right after answering EXIT; the answer can be lost with the link.
                    self.stats["exit_unconfirmed"] += 1
                    return Status.OK, b""
                raise DeviceError(f"lost the connection to the device during {name} ({err})",
                                  "check the port; the firmware may have stopped") from None
            if isinstance(outcome, str):
                failures.append(outcome)
                previous = None
                continue
            code, body = outcome
            if code not in Status._value2member_map_:
                raise DeviceError(f"device answered unknown status {code} to {name}",
                                  "host and firmware versions differ; rebuild and flash the firmware")
            status = Status(code)
            if status in _TRANSPORT_STATUSES:
                self.stats["bad_status"] += 1
                # BAD_LENGTH / BAD_VERSION twice in a row is the device's verdict on the request, not
                # a corrupted header; BAD_CRC always means the link damaged the request.
                settled = status != Status.BAD_CRC and status == previous
                previous = status
                if not settled and attempt + 1 < attempts:
                    failures.append(f"{status.name} from the device")
                    continue
                if not settled and attempts > 1 and expect is not None:
                    failures.append(f"{status.name} from the device")
                    break
                return self._check(name, status, body, expect)
            previous = status
            if status == Status.OK and size is not None and not (
                    size(body) if callable(size) else len(body) == size):
                self.stats["malformed"] += 1
                failures.append(f"malformed answer ({len(body)} bytes)")
                continue
            return self._check(name, status, body, expect)
        self.stats["exhausted"] += 1
        raise self._exhausted(name, failures, wait)

    def _await(self, command: Command | int, seq: int, wait: float) -> tuple[int, bytes] | str:
        """The answer to attempt ``seq`` as (status byte, body), or why there is none."""
        now = time.monotonic()
        deadline = now + wait
        last_rx = now
        junk = False  # bytes arrived since the last whole frame
        frames: list[Frame] = []
        while True:
            for frame in frames:
                # Late answers (to garbage, or to an earlier attempt) are skipped.
                if frame.sequence == seq and frame.command == (command | RESPONSE_BIT) and frame.payload:
                    return frame.payload[0], frame.payload[1:]
                self.stats["stale"] += 1
                if len(frame.payload) == 1 and frame.payload[0] in _TRANSPORT_STATUSES:
                    # The parser refused a frame whose header the link damaged (its sequence or
                    # command is not ours): most likely our request. Our answer, if it comes at
                    # all, comes at once; do not wait out the whole timeout for it.
                    deadline = min(deadline, time.monotonic() + RESYNC_S)
            frames = []
            now = time.monotonic()
            if junk and now - last_rx > RESYNC_S:
                # Bytes came, then nothing, and they were no whole frame: the answer was damaged
                # (a bad CRC, a lost byte, a false length). A good frame may still sit behind a
                # false header in the decoder's buffer.
                junk = False
                frames = self._salvage()
                if frames:
                    continue
                self.stats["damaged"] += 1
                return "damaged answer"
            if now > deadline:
                self.stats["timeouts"] += 1
                return f"no answer within {wait:g} s"
            chunk = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            if chunk:
                last_rx = time.monotonic()
                frames = self.decoder.feed(chunk)
                junk = not frames or bool(self.decoder.buffer)

    def _salvage(self) -> list[Frame]:
        """Complete, CRC-checked frames behind the false start at the front of the decoder's buffer.

        The decoder waits for all ``length`` bytes a header claims before it checks the CRC, so a
        damaged length field hides the frames behind it until that many bytes arrive."""
        flush = getattr(self.decoder, "flush", None)
        frames: list[Frame] = []
        if flush is not None:  # protocol.Decoder.flush: give up the false start, rescan after it
            while self.decoder.buffer and not frames:
                frames = flush()
        else:
            buf = bytes(self.decoder.buffer)
            start = buf.find(SYNC, 1)
            while start >= 0 and not frames:
                frames = Decoder(self.decoder.max_payload).feed(buf[start:])
                start = buf.find(SYNC, start + 1)
            self.decoder = Decoder(self.decoder.max_payload)
        if frames:
            self.stats["salvaged"] += 1
        return frames

    def _settle(self, wait_for_device: bool = True) -> None:
        """Before re-sending: let the device's receiver drop a partial frame (it does so after
        MDT_RX_TIMEOUT_MS without a byte), then forget everything received so far."""
        if wait_for_device:
            time.sleep(max(0.0, RESYNC_S - (time.monotonic() - self._last_write)))
        self.port.reset_input_buffer()
        self.decoder = Decoder(self.decoder.max_payload)

    def _check(self, name: str, status: Status, body: bytes, expect: Status | None) -> tuple[Status, bytes]:
        if expect is not None and status != expect:
            raise DeviceError(f"device answered {status.name} to {name}",
                              _HINTS.get(status, "check the request against docs/protocol.md"))
        return status, body

    def _exhausted(self, name: str, failures: list[str], wait: float) -> DeviceError:
        n = len(failures)
        if all(f.startswith("no answer") for f in failures):
            lead = f"after {n} attempts, " if n > 1 else ""
            return DeviceError(f"{lead}device did not answer {name} within {wait:g} s",
                               "check the port / that the firmware is flashed")
        tally: dict[str, int] = {}
        for f in failures:
            tally[f] = tally.get(f, 0) + 1
        what = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in tally.items())
        return DeviceError(f"{name} failed after {n} attempt{'s' if n != 1 else ''} ({what})",
                           "the link loses or corrupts frames; check the cable / baud rate, or allow more retries")

    # ------------------------------------------------------------ commands
    def hello(self) -> DeviceInfo:
        _, body = self.request(Command.HELLO, size=_hello_size)
        v = _HELLO.unpack_from(body)
        name_len = body[_HELLO.size]
        name = body[_HELLO.size + 1 : _HELLO.size + 1 + name_len].decode("ascii", errors="replace")
        self.info = DeviceInfo(v[0], name, COUNTER_UNITS.get(v[1], f"unit{v[1]}"), *v[2:])
        self.decoder.max_payload = self.info.max_payload
        return self.info

    def _info(self) -> DeviceInfo:
        return self.info if self.info is not None else self.hello()

    def load_input(self, data: bytes | np.ndarray) -> None:
        data = bytes(np.ascontiguousarray(data).view(np.uint8).tobytes()) if isinstance(data, np.ndarray) else data
        info = self._info()
        if len(data) != info.input_size:
            raise DeviceError(f"input of {len(data)} bytes, the device's model takes {info.input_size}",
                              "quantise the sample with the exported input parameters")
        step = info.max_payload - 4
        for offset in range(0, len(data), step):
            self.request(Command.LOAD_INPUT, struct.pack("<I", offset) + data[offset : offset + step], size=0)

    def run_graphs(self) -> dict[str, int]:
        _, body = self.request(Command.RUN_GRAPHS, timeout=self.long_timeout, size=24)
        return dict(zip(("trunk", "part_head", "rest"), struct.unpack("<3Q", body), strict=True))

    def read_tensor(self, tensor: int | str) -> bytes:
        tid = TENSORS[tensor] if isinstance(tensor, str) else int(tensor)
        info = self._info()
        size = {0: info.split.size, 1: info.part_dim, 2: info.full_dim}.get(tid)
        if size is None:
            raise DeviceError(f"unknown tensor id {tensor}", "use 0 split, 1 part features, 2 full features")
        out = bytearray()
        step = info.max_payload - 1
        while len(out) < size:
            n = min(step, size - len(out))
            _, body = self.request(Command.READ_TENSOR, struct.pack("<BIH", tid, len(out), n), size=n)
            out += body
        return bytes(out)

    def store_features(self, slot: int) -> dict[str, int]:
        _, body = self.request(Command.STORE_FEATURES, struct.pack("<I", slot), timeout=self.long_timeout,
                               size=24)
        return dict(zip(("trunk", "part_head", "rest"), struct.unpack("<3Q", body), strict=True))

    def set_labels(self, task: int, n_classes: int, first_slot: int, labels: bytes | np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.uint8).tobytes() if not isinstance(labels, bytes | bytearray) else labels
        step = self._info().max_payload - 6
        for start in range(0, max(len(labels), 1), step):
            chunk = bytes(labels[start : start + step])
            self.request(Command.SET_LABELS, struct.pack("<BBI", task, n_classes, first_slot + start) + chunk,
                         size=0)

    def train(self, task: int, epochs: int, lr: float, first_slot: int, n_slots: int, seed: int = 0) -> TrainResult:
        payload = struct.pack("<BHfIII", task, epochs, lr, first_slot, n_slots, seed)
        _, body = self.request(Command.TRAIN, payload, timeout=self.long_timeout, size=_TRAIN.size)
        return TrainResult(*_TRAIN.unpack(body))

    def set_ratio(self, task: int, ratio: float, first_slot: int, n_slots: int) -> float:
        payload = struct.pack("<BfII", task, ratio, first_slot, n_slots)
        _, body = self.request(Command.SET_RATIO, payload, timeout=self.long_timeout, size=4)
        return struct.unpack("<f", body)[0]

    def infer(self, task: int, force_full: bool = False) -> InferResult:
        _, body = self.request(Command.INFER, struct.pack("<BB", task, 1 if force_full else 0),
                               timeout=self.long_timeout, size=_INFER.size)
        pred, stage, part_pred, full_pred, conf, full_conf, *counts = _INFER.unpack(body)
        return InferResult(prediction=pred, exit_stage=stage, part_prediction=part_pred,
                           full_prediction=None if full_pred == 0xFF else full_pred, confidence=conf,
                           full_confidence=full_conf, counters=dict(zip(STAGES, counts, strict=True)))

    def read_head(self, task: int, which: int) -> tuple[np.ndarray, np.ndarray]:
        """The trained head ``which`` (0 part, 1 full): W (n_classes, dim) and b (n_classes,), float32."""
        values: list[float] = []
        step = (self._info().max_payload - 5) // 4
        total = None
        while total is None or len(values) < total:
            n = 0 if total is None else min(step, total - len(values))
            _, body = self.request(Command.READ_HEAD, struct.pack("<BBIH", task, which, len(values), n),
                                   size=4 + 4 * n)
            shape = struct.unpack_from("<HH", body)
            if total is None:
                n_classes, dim = shape
                total = n_classes * (dim + 1)
                continue
            if shape != (n_classes, dim):
                raise DeviceError(f"the head's shape changed while reading it ({n_classes}x{dim} -> "
                                  f"{shape[0]}x{shape[1]})", "do not train the task while reading its heads")
            values += struct.unpack_from(f"<{(len(body) - 4) // 4}f", body, 4)
        arr = np.asarray(values, dtype=np.float32)
        w = arr[: n_classes * dim].reshape(n_classes, dim)
        return w, arr[n_classes * dim :].copy()

    # ------------------------------------------------------------ host files (semihosting)
    def host_open(self, path: str | bytes) -> int:
        """Open a host file of concatenated int8 samples on the device's side (the emulator's
        semihosting, the host build's file system); returns the number of whole samples in it.
        UNSUPPORTED from a board that cannot reach host files, IO_ERROR for a missing file."""
        raw = path.encode() if isinstance(path, str) else bytes(path)
        if not 0 < len(raw) <= HOST_PATH_MAX:
            raise DeviceError(f"host file path of {len(raw)} bytes; the device takes 1..{HOST_PATH_MAX}",
                              "use a shorter path (e.g. under /tmp)")
        _, body = self.request(Command.HOST_OPEN, raw, size=8)
        return struct.unpack("<II", body)[1]

    def load_sample(self, index: int) -> None:
        """Load sample ``index`` of the open host file as the input (one short request)."""
        self.request(Command.LOAD_SAMPLE, struct.pack("<I", index), size=0)

    def store_samples(self, first_index: int, first_slot: int, count: int) -> dict[str, int]:
        """Store the features of host-file samples first_index.. in slots first_slot.. (count of
        them, one request); the counter deltas summed over the samples."""
        _, body = self.request(Command.STORE_SAMPLES, struct.pack("<IIH", first_index, first_slot, count),
                               timeout=self.long_timeout, size=24)
        return dict(zip(("trunk", "part_head", "rest"), struct.unpack("<3Q", body), strict=True))

    def set_threshold(self, task: int, threshold: float) -> None:
        """Set the task's stage-decision threshold (one SET_RATIO answered) without recomputing it."""
        self.request(Command.SET_THRESHOLD, struct.pack("<Bf", task, threshold), size=0)

    def exit(self, code: int = 0) -> None:
        self.request(Command.EXIT, struct.pack("<B", code), size=0)


def _name(command: Command | int) -> str:
    return command.name if isinstance(command, Command) else (
        Command(command).name if command in Command._value2member_map_ else f"command 0x{command:02X}")


def _hello_size(body: bytes) -> bool:
    return len(body) > _HELLO.size and len(body) == _HELLO.size + 1 + body[_HELLO.size]


_HINTS = {
    Status.BAD_CRC: "the link corrupted the frame; retry, check the cable / baud rate",
    Status.BAD_LENGTH: "host and firmware disagree on a payload size; rebuild the firmware from this version",
    Status.BAD_VERSION: "host and firmware speak different protocol versions; rebuild and flash the firmware",
    Status.UNKNOWN_COMMAND: "the firmware is older than this host; rebuild and flash it",
    Status.BAD_ARGUMENT: "check task index, class count, labels and ratio against the device's HELLO limits",
    Status.NOT_READY: "send the input, store features, set labels or train first (see docs/protocol.md)",
    Status.OUT_OF_RANGE: "keep slots and offsets below the device's limits (see HELLO)",
    Status.UNSUPPORTED: "this board cannot read host files; send the samples over the UART",
    Status.IO_ERROR: "the device could not open or read the host file; check the path",
}
