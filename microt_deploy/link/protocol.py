"""The frame format of docs/protocol.md on the host side: CRC, encoding, a streaming decoder,
command ids and status codes. Mirrors firmware_templates/app/mdt_protocol.{h,c}."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

VERSION = 1
SYNC = b"\xa5\x5a"
MAX_PAYLOAD = 4096
HEADER = struct.Struct("<2sBBBH")  # sync, version, command, sequence, length
RESPONSE_BIT = 0x80


class Command(enum.IntEnum):
    HELLO = 0x01
    LOAD_INPUT = 0x02
    RUN_GRAPHS = 0x03
    READ_TENSOR = 0x04
    STORE_FEATURES = 0x05
    SET_LABELS = 0x06
    TRAIN = 0x07
    SET_RATIO = 0x08
    INFER = 0x09
    READ_HEAD = 0x0A
    EXIT = 0x0B


class Status(enum.IntEnum):
    OK = 0
    BAD_CRC = 1
    BAD_LENGTH = 2
    BAD_VERSION = 3
    UNKNOWN_COMMAND = 4
    BAD_ARGUMENT = 5
    NOT_READY = 6
    OUT_OF_RANGE = 7


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def encode(command: int, sequence: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    """One frame: sync, header, payload, CRC over version..payload."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit the u16 length field")
    head = HEADER.pack(SYNC, version, command, sequence & 0xFF, len(payload))
    crc = crc16(head[2:] + payload)
    return head + payload + struct.pack("<H", crc)


@dataclass(frozen=True)
class Frame:
    version: int
    command: int
    sequence: int
    payload: bytes


class Decoder:
    """Streaming frame decoder: feed bytes, collect whole frames with a good CRC; anything else
    (garbage, bad CRC, oversize length) is skipped by hunting for the next sync bytes."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.buffer = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames = []
        while True:
            start = self.buffer.find(SYNC)
            if start < 0:
                keep = 1 if self.buffer.endswith(SYNC[:1]) else 0
                self.dropped += len(self.buffer) - keep
                del self.buffer[: len(self.buffer) - keep]
                return frames
            if start:
                self.dropped += start
                del self.buffer[:start]
            if len(self.buffer) < HEADER.size:
                return frames
            _, version, command, sequence, length = HEADER.unpack_from(self.buffer)
            if length > self.max_payload:
                self._skip()
                continue
            end = HEADER.size + length + 2
            if len(self.buffer) < end:
                return frames
            body = bytes(self.buffer[2 : HEADER.size + length])
            (crc,) = struct.unpack_from("<H", self.buffer, HEADER.size + length)
            if crc16(body) != crc:
                self._skip()
                continue
            frames.append(Frame(version, command, sequence, body[5:]))
            del self.buffer[:end]

    def _skip(self) -> None:
        # Not a frame after all: resync from the byte after this sync pair.
        self.dropped += 2
        del self.buffer[:2]
