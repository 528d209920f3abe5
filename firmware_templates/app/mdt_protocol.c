/* Frame receive state machine and framing (docs/protocol.md). Bounded: a frame never writes
 * past buf[MDT_BODY_BYTES]; an oversize header is rejected before its payload arrives. A false
 * start is given up alone: the scan resumes at the byte after its sync pair. */
#include "mdt_protocol.h"

#include <string.h>

/* ST_DONE: a frame was returned, its bytes are still in buf; ST_FAILED: a false start was given up
 * (error event or timeout), its bytes after the sync pair are rescanned on the next feed / poll. */
enum { ST_HUNT = 0, ST_SYNC1, ST_BODY, ST_DONE, ST_FAILED };

uint16_t mdt_crc16(uint16_t crc, const uint8_t *data, uint32_t length)
{
    uint32_t i;
    int bit;
    for (i = 0; i < length; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ MDT_CRC_POLY) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

void mdt_parser_reset(mdt_parser_t *p)
{
    p->state = ST_HUNT;
    p->used = 0;
    p->scan = 0;
    p->avail = 0;
    p->length = 0;
    p->payload = &p->buf[MDT_HEADER_BYTES - 2u];
}

int mdt_parser_busy(const mdt_parser_t *p)
{
    return p->state != ST_HUNT;
}

/* Leave ST_DONE / ST_FAILED. A failed frame's bytes (after its sync pair) go back in front of the
 * unscanned ones: buf[0..used) and buf[scan..avail) become one run from buf[0]. */
static void settle(mdt_parser_t *p)
{
    if (p->state == ST_DONE) {
        p->used = 0;
        p->state = ST_HUNT;
    } else if (p->state == ST_FAILED) {
        uint32_t rest = p->avail - p->scan;
        if (rest > 0) {
            memmove(&p->buf[p->used], &p->buf[p->scan], rest);
        }
        p->avail = p->used + rest;
        p->scan = 0;
        p->used = 0;
        p->state = ST_HUNT;
    }
}

static mdt_event_t fail(mdt_parser_t *p, uint8_t status)
{
    p->error = status;
    p->state = ST_FAILED;
    return MDT_EV_ERROR;
}

/* Scan buf[scan..avail) until an event or the end. The current frame's bytes are copied down to
 * buf[used]; used <= scan always holds, so the copy never overtakes the scan. */
static mdt_event_t run(mdt_parser_t *p)
{
    settle(p);
    while (p->scan < p->avail) {
        uint8_t byte = p->buf[p->scan++];
        switch (p->state) {
        case ST_HUNT:
            if (byte == MDT_SYNC0) {
                p->state = ST_SYNC1;
            }
            break;
        case ST_SYNC1:
            if (byte == MDT_SYNC1) {
                p->state = ST_BODY;
                p->used = 0;
            } else if (byte != MDT_SYNC0) {
                p->state = ST_HUNT;
            }
            break;
        default: /* ST_BODY */
            p->buf[p->used++] = byte;
            if (p->used == MDT_HEADER_BYTES - 2u) {
                p->version = p->buf[0];
                p->command = p->buf[1];
                p->sequence = p->buf[2];
                p->length = mdt_get_u16(&p->buf[3]);
                if (p->version != MDT_PROTOCOL_VERSION) {
                    return fail(p, MDT_BAD_VERSION);
                }
                if (p->length > MDT_MAX_PAYLOAD) {
                    return fail(p, MDT_BAD_LENGTH);
                }
            } else if (p->used == MDT_HEADER_BYTES + (uint32_t)p->length) {
                uint32_t n = MDT_HEADER_BYTES - 2u + (uint32_t)p->length;
                if (mdt_crc16(MDT_CRC_INIT, p->buf, n) != mdt_get_u16(&p->buf[n])) {
                    return fail(p, MDT_BAD_CRC);
                }
                p->payload = &p->buf[MDT_HEADER_BYTES - 2u];
                p->state = ST_DONE;
                return MDT_EV_FRAME;
            }
            break;
        }
    }
    /* Everything scanned: only the current frame's bytes stay, at the front. */
    if (p->state != ST_BODY) {
        p->used = 0;
    }
    p->scan = p->avail = p->used;
    return MDT_EV_NONE;
}

/* A caller that fed on without polling after an event: finish what is pending (events dropped). */
static void drain(mdt_parser_t *p)
{
    while (p->state == ST_DONE || p->state == ST_FAILED || p->scan < p->avail) {
        (void)run(p);
    }
}

mdt_event_t mdt_parser_feed(mdt_parser_t *p, uint8_t byte)
{
    drain(p);
    /* Now avail == used < MDT_BODY_BYTES: a frame is complete (an event) at its last byte. */
    p->buf[p->avail++] = byte;
    return run(p);
}

mdt_event_t mdt_parser_poll(mdt_parser_t *p)
{
    if (p->state != ST_DONE && p->state != ST_FAILED && p->scan >= p->avail) {
        return MDT_EV_NONE;
    }
    return run(p);
}

mdt_event_t mdt_parser_timeout(mdt_parser_t *p)
{
    drain(p);
    if (p->state == ST_SYNC1) {
        p->state = ST_HUNT;
        return MDT_EV_NONE;
    }
    if (p->state != ST_BODY) {
        return MDT_EV_NONE;
    }
    p->state = ST_FAILED; /* silently: a timeout is not answered */
    return run(p);
}

uint32_t mdt_frame_encode(uint8_t *out, uint8_t command, uint8_t sequence, const uint8_t *payload,
                          uint16_t length)
{
    uint16_t crc;
    out[0] = MDT_SYNC0;
    out[1] = MDT_SYNC1;
    out[2] = MDT_PROTOCOL_VERSION;
    out[3] = command;
    out[4] = sequence;
    mdt_put_u16(&out[5], length);
    if (length > 0) {
        memcpy(&out[MDT_HEADER_BYTES], payload, length);
    }
    crc = mdt_crc16(MDT_CRC_INIT, &out[2], MDT_HEADER_BYTES - 2u + length);
    mdt_put_u16(&out[MDT_HEADER_BYTES + length], crc);
    return (uint32_t)length + MDT_FRAME_OVERHEAD;
}

uint16_t mdt_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t mdt_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

float mdt_get_f32(const uint8_t *p)
{
    uint32_t bits = mdt_get_u32(p);
    float v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

void mdt_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void mdt_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void mdt_put_u64(uint8_t *p, uint64_t v)
{
    mdt_put_u32(p, (uint32_t)v);
    mdt_put_u32(p + 4, (uint32_t)(v >> 32));
}

void mdt_put_f32(uint8_t *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof(bits));
    mdt_put_u32(p, bits);
}
