/* Frame receive state machine and framing (docs/protocol.md). Bounded: a frame never writes
 * past payload[MDT_MAX_PAYLOAD]; an oversize header is rejected before its payload arrives. */
#include "mdt_protocol.h"

#include <string.h>

enum { ST_HUNT = 0, ST_SYNC1, ST_HEADER, ST_PAYLOAD, ST_CRC };

uint16_t mdt_crc16(uint16_t crc, const uint8_t *data, uint32_t length)
{
    uint32_t i;
    int bit;
    for (i = 0; i < length; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

void mdt_parser_reset(mdt_parser_t *p)
{
    p->state = ST_HUNT;
    p->header_got = 0;
    p->crc_got = 0;
    p->crc_rx = 0;
    p->length = 0;
    p->payload_got = 0;
}

int mdt_parser_busy(const mdt_parser_t *p)
{
    return p->state != ST_HUNT;
}

static mdt_event_t header_done(mdt_parser_t *p)
{
    p->version = p->header[0];
    p->command = p->header[1];
    p->sequence = p->header[2];
    p->length = (uint16_t)(p->header[3] | (p->header[4] << 8));
    if (p->version != MDT_PROTOCOL_VERSION) {
        p->error = MDT_BAD_VERSION;
        mdt_parser_reset(p);
        return MDT_EV_ERROR;
    }
    if (p->length > MDT_MAX_PAYLOAD) {
        p->error = MDT_BAD_LENGTH;
        mdt_parser_reset(p);
        return MDT_EV_ERROR;
    }
    p->payload_got = 0;
    p->state = (p->length == 0) ? ST_CRC : ST_PAYLOAD;
    return MDT_EV_NONE;
}

mdt_event_t mdt_parser_feed(mdt_parser_t *p, uint8_t byte)
{
    switch (p->state) {
    case ST_HUNT:
        if (byte == MDT_SYNC0) {
            p->state = ST_SYNC1;
        }
        return MDT_EV_NONE;
    case ST_SYNC1:
        if (byte == MDT_SYNC1) {
            p->state = ST_HEADER;
            p->header_got = 0;
        } else if (byte != MDT_SYNC0) {
            p->state = ST_HUNT;
        }
        return MDT_EV_NONE;
    case ST_HEADER:
        p->header[p->header_got++] = byte;
        if (p->header_got == sizeof(p->header)) {
            return header_done(p);
        }
        return MDT_EV_NONE;
    case ST_PAYLOAD:
        p->payload[p->payload_got++] = byte;
        if (p->payload_got == p->length) {
            p->state = ST_CRC;
            p->crc_got = 0;
        }
        return MDT_EV_NONE;
    case ST_CRC:
    default:
        if (p->crc_got == 0) {
            p->crc_rx = byte;
            p->crc_got = 1;
            return MDT_EV_NONE;
        } else {
            uint16_t want = mdt_crc16(0xFFFFu, p->header, sizeof(p->header));
            want = mdt_crc16(want, p->payload, p->length);
            p->crc_rx = (uint16_t)(p->crc_rx | ((uint16_t)byte << 8));
            p->state = ST_HUNT;
            p->crc_got = 0;
            if (want != p->crc_rx) {
                p->error = MDT_BAD_CRC;
                return MDT_EV_ERROR;
            }
            return MDT_EV_FRAME;
        }
    }
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
        memcpy(&out[7], payload, length);
    }
    crc = mdt_crc16(0xFFFFu, &out[2], 5u + length);
    mdt_put_u16(&out[7 + length], crc);
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
