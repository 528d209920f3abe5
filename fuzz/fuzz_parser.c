/* libFuzzer harness of the frame receiver (firmware_templates/app/mdt_protocol.c).
 *
 * Byte 0 picks the mode. Raw (even): the rest is a byte stream (byte 1: a timeout after every n-th
 * byte, 0 none); every event must be consistent (a frame's CRC and length good, an error one of the
 * three framing statuses). Records (odd): the rest is records [kind, n, n bytes] that the harness
 * turns into a stream of garbage (no 0xA5), good frames, truncated frames and timeouts; then, unless
 * a frame with a good CRC appeared that the harness did not send (a CRC collision the fuzzer may
 * build), every good frame sent must be received, in order: the resync property. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mdt_protocol.h"

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            __builtin_trap();                                                                                      \
        }                                                                                                          \
    } while (0)

#define MAX_SENT 512

typedef struct {
    uint8_t command, sequence;
    uint16_t length;
    uint16_t crc; /* of the payload */
} sent_t;

static mdt_parser_t parser;
static sent_t sent[MAX_SENT];
static uint32_t n_sent, n_matched;
static int phantom;
static uint8_t frame[MDT_MAX_PAYLOAD + MDT_FRAME_OVERHEAD];

static void check_event(mdt_event_t ev)
{
    uint32_t guard = 0;
    while (ev != MDT_EV_NONE) {
        CHECK(++guard < 100000u);
        if (ev == MDT_EV_FRAME) {
            uint16_t crc;
            CHECK(parser.version == MDT_PROTOCOL_VERSION && parser.length <= MDT_MAX_PAYLOAD);
            CHECK(parser.payload >= parser.buf && parser.payload + parser.length + 2u <= parser.buf + sizeof(parser.buf));
            crc = mdt_crc16(MDT_CRC_INIT, parser.buf, MDT_HEADER_BYTES - 2u + parser.length);
            CHECK(crc == mdt_get_u16(parser.payload + parser.length));
            if (n_matched < n_sent && sent[n_matched].command == parser.command &&
                sent[n_matched].sequence == parser.sequence && sent[n_matched].length == parser.length &&
                sent[n_matched].crc == mdt_crc16(MDT_CRC_INIT, parser.payload, parser.length)) {
                n_matched++;
            } else {
                phantom = 1; /* a frame not sent as such: a CRC collision the fuzzer built */
            }
        } else {
            CHECK(ev == MDT_EV_ERROR);
            CHECK(parser.error == MDT_BAD_CRC || parser.error == MDT_BAD_LENGTH || parser.error == MDT_BAD_VERSION);
        }
        ev = mdt_parser_poll(&parser);
    }
}

static void feed(uint8_t byte)
{
    check_event(mdt_parser_feed(&parser, byte));
}

static void finish(void)
{
    uint32_t guard = 0;
    while (mdt_parser_busy(&parser)) {
        CHECK(++guard < 100000u);
        check_event(mdt_parser_timeout(&parser));
    }
    CHECK(mdt_parser_poll(&parser) == MDT_EV_NONE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t i = 1;
    mdt_parser_reset(&parser);
    n_sent = n_matched = 0;
    phantom = 0;
    if (size == 0) {
        return 0;
    }
    if ((data[0] & 1u) == 0) {
        uint32_t every = size > 1 ? data[1] : 0, k = 0;
        for (i = 2; i < size; i++) {
            feed(data[i]);
            if (every != 0 && ++k % every == 0 && mdt_parser_busy(&parser)) {
                check_event(mdt_parser_timeout(&parser));
            }
        }
        finish();
        return 0;
    }
    while (i + 2 <= size) {
        uint8_t kind = data[i] & 3u, n = data[i + 1];
        const uint8_t *p = &data[i + 2];
        uint32_t j, len;
        if (i + 2 + n > size) {
            n = (uint8_t)(size - i - 2);
        }
        i += 2u + n;
        if (kind == 0) {
            for (j = 0; j < n; j++) {
                if (p[j] != MDT_SYNC0) {
                    feed(p[j]);
                }
            }
        } else if (kind == 3) {
            if (mdt_parser_busy(&parser)) {
                check_event(mdt_parser_timeout(&parser));
            }
        } else if (n >= 1) {
            uint8_t seq = (uint8_t)n_sent;
            len = mdt_frame_encode(frame, p[0], seq, p + 1, (uint16_t)(n - 1u));
            if (kind == 1) {
                if (n_sent == MAX_SENT) {
                    continue;
                }
                sent[n_sent].command = p[0];
                sent[n_sent].sequence = seq;
                sent[n_sent].length = (uint16_t)(n - 1u);
                sent[n_sent].crc = mdt_crc16(MDT_CRC_INIT, p + 1, n - 1u);
                n_sent++;
            } else {
                len = 2u + (uint32_t)p[0] % (len - 2u); /* sync pair + a strict prefix of the rest */
            }
            for (j = 0; j < len; j++) {
                feed(frame[j]);
            }
        }
    }
    finish();
    if (!phantom) {
        /* Every good frame sent is received, once, in order. */
        CHECK(n_matched == n_sent);
    }
    return 0;
}
