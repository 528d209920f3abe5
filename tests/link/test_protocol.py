"""The host side of the frame format: CRC vectors, exact frame bytes, the streaming decoder."""

import struct

import pytest

from microt_deploy.link.protocol import MAX_PAYLOAD, Command, Decoder, crc16, encode


def test_crc16_ccitt_false_vectors():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF
    assert crc16(b"A") == 0xB915
    # Incremental use equals one pass.
    assert crc16(b"6789", crc16(b"12345")) == 0x29B1


def test_encode_exact_bytes():
    frame = encode(Command.LOAD_INPUT, 7, b"\x01\x02")
    body = bytes([1, 0x02, 7, 2, 0, 1, 2])
    assert frame == b"\xa5\x5a" + body + struct.pack("<H", crc16(body))
    assert len(encode(Command.HELLO, 0)) == 9


def test_decoder_skips_garbage_and_joins_split_frames():
    a, b = encode(Command.HELLO, 1, b"x" * 10), encode(Command.INFER, 2, b"\xa5\x5a\xa5")
    stream = b"\x00\xa5\xff\xa5" + a + b"junk\xa5" + b
    dec = Decoder()
    frames = []
    for i in range(0, len(stream), 3):
        frames += dec.feed(stream[i : i + 3])
    assert [(f.command, f.sequence, f.payload) for f in frames] == [(1, 1, b"x" * 10), (9, 2, b"\xa5\x5a\xa5")]
    assert dec.dropped > 0


def test_decoder_rejects_bad_crc_and_oversize_then_resyncs():
    bad = bytearray(encode(Command.HELLO, 3, b"abc"))
    bad[-1] ^= 0xFF
    oversize = b"\xa5\x5a\x01\x01\x04" + struct.pack("<H", MAX_PAYLOAD + 1)
    good = encode(Command.EXIT, 4, b"\x00")
    frames = Decoder().feed(bytes(bad) + oversize + good)
    assert [(f.command, f.sequence) for f in frames] == [(Command.EXIT, 4)]


def test_encode_refuses_payload_beyond_length_field():
    with pytest.raises(ValueError):
        encode(Command.LOAD_INPUT, 0, bytes(70000))
