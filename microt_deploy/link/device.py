"""The host-side client of the device: one typed method per command of docs/protocol.md, over any
pyserial port (a real board's VCP, the emulator's socket, the host build's pty).

Owns: request/response matching by sequence, response timeouts, chunking of inputs, tensors and
heads into payload-sized pieces, and turning error statuses into one-line DeviceErrors.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import serial

from microt_deploy.errors import DeviceError
from microt_deploy.link.protocol import RESPONSE_BIT, Command, Decoder, Status, encode

COUNTER_UNITS = {0: "instructions", 1: "cycles", 2: "ns"}
STAGES = ("trunk", "part_head", "part_classifier", "rest", "full_classifier")
TENSORS = {"split": 0, "part": 1, "full": 2}
# The device drops a partial frame after this long without a byte (MDT_RX_TIMEOUT_MS + margin).
RESYNC_S = 0.3

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
    """A device behind ``port`` (a pyserial object: ``read``, ``write``, ``reset_input_buffer``)."""

    def __init__(self, port: Any, timeout: float = 10.0, long_timeout: float = 900.0) -> None:
        self.port = port
        self.timeout = timeout
        self.long_timeout = long_timeout
        self.decoder = Decoder()
        self.sequence = 0
        self.info: DeviceInfo | None = None

    # ------------------------------------------------------------ transport
    def request(self, command: Command, payload: bytes = b"", timeout: float | None = None,
                expect: Status | None = Status.OK) -> tuple[Status, bytes]:
        """Send one request, return (status, response payload after the status byte)."""
        self.sequence = (self.sequence + 1) & 0xFF
        seq = self.sequence
        try:
            return self._exchange(command, seq, payload, timeout, expect)
        except (serial.SerialException, OSError) as err:
            raise DeviceError(f"lost the connection to the device during {command.name} ({err})",
                              "check the port; the firmware may have stopped") from None

    def _exchange(self, command: Command, seq: int, payload: bytes, timeout: float | None,
                  expect: Status | None) -> tuple[Status, bytes]:
        self.port.write(encode(command, seq, payload))
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        frames: list = []
        while True:
            for frame in frames:
                # Late answers (to garbage, or to a request that timed out) are skipped.
                if frame.sequence == seq and frame.command == (command | RESPONSE_BIT) and frame.payload:
                    return self._check(command, frame.payload[0], frame.payload[1:], expect)
            if time.monotonic() > deadline:
                self._resync()
                raise DeviceError(f"device did not answer {command.name} within {wait:g} s",
                                  "check the port / that the firmware is flashed")
            chunk = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            frames = self.decoder.feed(chunk) if chunk else []

    def _check(self, command: Command, code: int, body: bytes, expect: Status | None) -> tuple[Status, bytes]:
        if code not in Status._value2member_map_:
            raise DeviceError(f"device answered unknown status {code} to {command.name}",
                              "host and firmware versions differ; rebuild and flash the firmware")
        status = Status(code)
        if expect is not None and status != expect:
            name = status.name
            raise DeviceError(f"device answered {name} to {command.name}",
                              _HINTS.get(status, "check the request against docs/protocol.md"))
        return status, body

    def _resync(self) -> None:
        time.sleep(RESYNC_S)
        self.port.reset_input_buffer()
        self.decoder = Decoder(self.decoder.max_payload)

    # ------------------------------------------------------------ commands
    def hello(self) -> DeviceInfo:
        _, body = self.request(Command.HELLO)
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
            self.request(Command.LOAD_INPUT, struct.pack("<I", offset) + data[offset : offset + step])

    def run_graphs(self) -> dict[str, int]:
        _, body = self.request(Command.RUN_GRAPHS, timeout=self.long_timeout)
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
            _, body = self.request(Command.READ_TENSOR, struct.pack("<BIH", tid, len(out), n))
            out += body
        return bytes(out)

    def store_features(self, slot: int) -> dict[str, int]:
        _, body = self.request(Command.STORE_FEATURES, struct.pack("<I", slot), timeout=self.long_timeout)
        return dict(zip(("trunk", "part_head", "rest"), struct.unpack("<3Q", body), strict=True))

    def set_labels(self, task: int, n_classes: int, first_slot: int, labels: bytes | np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.uint8).tobytes() if not isinstance(labels, bytes | bytearray) else labels
        step = self._info().max_payload - 6
        for start in range(0, max(len(labels), 1), step):
            chunk = bytes(labels[start : start + step])
            self.request(Command.SET_LABELS, struct.pack("<BBI", task, n_classes, first_slot + start) + chunk)

    def train(self, task: int, epochs: int, lr: float, first_slot: int, n_slots: int, seed: int = 0) -> TrainResult:
        payload = struct.pack("<BHfIII", task, epochs, lr, first_slot, n_slots, seed)
        _, body = self.request(Command.TRAIN, payload, timeout=self.long_timeout)
        return TrainResult(*_TRAIN.unpack(body))

    def set_ratio(self, task: int, ratio: float, first_slot: int, n_slots: int) -> float:
        payload = struct.pack("<BfII", task, ratio, first_slot, n_slots)
        _, body = self.request(Command.SET_RATIO, payload, timeout=self.long_timeout)
        return struct.unpack("<f", body)[0]

    def infer(self, task: int, force_full: bool = False) -> InferResult:
        _, body = self.request(Command.INFER, struct.pack("<BB", task, 1 if force_full else 0),
                               timeout=self.long_timeout)
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
            n = step if total is None else min(step, total - len(values))
            _, body = self.request(Command.READ_HEAD, struct.pack("<BBIH", task, which, len(values), 0 if total
                                                                  is None else n))
            n_classes, dim = struct.unpack_from("<HH", body)
            if total is None:
                total = n_classes * (dim + 1)
                continue
            values += struct.unpack_from(f"<{(len(body) - 4) // 4}f", body, 4)
        arr = np.asarray(values, dtype=np.float32)
        w = arr[: n_classes * dim].reshape(n_classes, dim)
        return w, arr[n_classes * dim :].copy()

    def exit(self, code: int = 0) -> None:
        self.request(Command.EXIT, struct.pack("<B", code))


_HINTS = {
    Status.BAD_CRC: "the link corrupted the frame; retry, check the cable / baud rate",
    Status.BAD_LENGTH: "host and firmware disagree on a payload size; rebuild the firmware from this version",
    Status.BAD_VERSION: "host and firmware speak different protocol versions; rebuild and flash the firmware",
    Status.UNKNOWN_COMMAND: "the firmware is older than this host; rebuild and flash it",
    Status.BAD_ARGUMENT: "check task index, class count, labels and ratio against the device's HELLO limits",
    Status.NOT_READY: "send the input, store features, set labels or train first (see docs/protocol.md)",
    Status.OUT_OF_RANGE: "keep slots and offsets below the device's limits (see HELLO)",
}
