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


def test_decoder_finds_a_good_frame_inside_a_truncated_ones_claimed_payload():
    truncated = encode(Command.LOAD_INPUT, 5, bytes(40))[:20]  # claims 40 payload bytes, sends 13
    good, after = encode(Command.HELLO, 6), encode(Command.INFER, 7, b"\x00\x01")
    dec = Decoder()
    # The false start still waits for its 40 bytes: nothing yet, whatever arrives byte by byte ...
    frames = [f for b in truncated + good for f in dec.feed(bytes([b]))]
    assert frames == [] and dec.pending()
    # ... until the receive timeout gives it up: the scan resumes right after its sync pair.
    assert [(f.command, f.sequence) for f in dec.flush()] == [(Command.HELLO, 6)]
    assert not dec.pending()
    # Enough bytes to fail the false start's CRC: found without a flush, the frame after it too.
    frames = Decoder().feed(truncated + good + after + bytes(40))
    assert [(f.command, f.sequence) for f in frames] == [(Command.HELLO, 6), (Command.INFER, 7)]
    # A false start inside a false start, then a good frame: both given up, the frame found.
    nested = truncated[:9] + encode(Command.EXIT, 9, bytes(30))[:12] + good
    dec = Decoder()
    assert dec.feed(nested) == [] and [f.sequence for f in dec.flush() + dec.flush()] == [6]
    assert Decoder().flush() == [] and Decoder().feed(b"\xa5") == []


def test_c_header_section_is_generated_from_this_module():
    from pathlib import Path

    from microt_deploy.link import protocol

    path = Path(protocol.__file__).resolve().parents[2] / protocol.HEADER_PATH
    text = path.read_text()
    assert protocol.render_header(text) == text, f"stale tables: run `{protocol.HEADER_COMMAND}`"
    block = protocol.c_block()
    for cmd in Command:
        assert f"MDT_CMD_{cmd.name} = 0x{cmd.value:02X}" in block
    for status in protocol.Status:
        assert f"MDT_{status.name} = {status.value}" in block
    # The firmware's other sources use the generated names, never the numbers.
    app = path.parent
    for name in ("mdt_protocol.c", "mdt_app.c"):
        source = (app / name).read_text()
        assert "0xA5" not in source and "0x80u" not in source and "0x1021" not in source, name
    # The CLI entry point prints the same section.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "microt_deploy.link.protocol", "--header"], capture_output=True,
                          text=True, check=True)
    assert done.stdout == block


def test_docs_tables_match_the_protocol_tables():
    import re
    from pathlib import Path

    from microt_deploy.link import protocol

    doc = (Path(protocol.__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    commands = {int(v, 16): n for v, n in re.findall(r"^\| (0x[0-9A-F]{2}) \| ([A-Z_]+) \|", doc, re.M)}
    assert commands == {c.value: c.name for c in Command}
    statuses = {int(v): n for n, v in re.findall(r"^\| ([A-Z_]+) \| (\d+) \|", doc, re.M)}
    assert statuses == {s.value: s.name for s in protocol.Status}
    assert f"`0x{protocol.SYNC[0]:02X} 0x{protocol.SYNC[1]:02X}`" in doc
    assert f"currently `{protocol.VERSION}`" in doc and f"`0x{protocol.RESPONSE_BIT:02X}`" in doc
    assert f"`MAX_PAYLOAD` ({protocol.MAX_PAYLOAD}" in doc
    assert f"bit 0 {protocol.InferFlag.FORCE_FULL.name}" in doc
