/* Frame format, CRC and the receive state machine of docs/protocol.md. */
#ifndef MDT_PROTOCOL_H
#define MDT_PROTOCOL_H

#include <stdint.h>

#include "mdt_config.h"

#define MDT_PROTOCOL_VERSION 1u
#define MDT_SYNC0 0xA5u
#define MDT_SYNC1 0x5Au
#define MDT_HEADER_BYTES 7u /* sync(2) version command sequence length(2) */
#define MDT_FRAME_OVERHEAD 9u

enum {
    MDT_CMD_HELLO = 0x01,
    MDT_CMD_LOAD_INPUT = 0x02,
    MDT_CMD_RUN_GRAPHS = 0x03,
    MDT_CMD_READ_TENSOR = 0x04,
    MDT_CMD_STORE_FEATURES = 0x05,
    MDT_CMD_SET_LABELS = 0x06,
    MDT_CMD_TRAIN = 0x07,
    MDT_CMD_SET_RATIO = 0x08,
    MDT_CMD_INFER = 0x09,
    MDT_CMD_READ_HEAD = 0x0A,
    MDT_CMD_EXIT = 0x0B
};

enum {
    MDT_OK = 0,
    MDT_BAD_CRC = 1,
    MDT_BAD_LENGTH = 2,
    MDT_BAD_VERSION = 3,
    MDT_UNKNOWN_COMMAND = 4,
    MDT_BAD_ARGUMENT = 5,
    MDT_NOT_READY = 6,
    MDT_OUT_OF_RANGE = 7
};

typedef enum { MDT_EV_NONE = 0, MDT_EV_FRAME = 1, MDT_EV_ERROR = 2 } mdt_event_t;

typedef struct {
    uint8_t state;
    uint8_t header[5]; /* version command sequence len_lo len_hi */
    uint8_t header_got;
    uint8_t crc_got;
    uint16_t crc_rx;
    uint16_t length;
    uint16_t payload_got;
    uint8_t version;
    uint8_t command;
    uint8_t sequence;
    uint8_t error; /* status for MDT_EV_ERROR */
    uint8_t payload[MDT_MAX_PAYLOAD];
} mdt_parser_t;

uint16_t mdt_crc16(uint16_t crc, const uint8_t *data, uint32_t length);
void mdt_parser_reset(mdt_parser_t *p);
/* Non-zero while a frame is partly received (the caller then applies the byte timeout). */
int mdt_parser_busy(const mdt_parser_t *p);
mdt_event_t mdt_parser_feed(mdt_parser_t *p, uint8_t byte);
/* Frame `payload` as a response to (command, sequence) into out; returns the frame length. */
uint32_t mdt_frame_encode(uint8_t *out, uint8_t command, uint8_t sequence, const uint8_t *payload,
                          uint16_t length);

/* Little-endian field access; floats travel as IEEE-754 bits. */
uint16_t mdt_get_u16(const uint8_t *p);
uint32_t mdt_get_u32(const uint8_t *p);
float mdt_get_f32(const uint8_t *p);
void mdt_put_u16(uint8_t *p, uint16_t v);
void mdt_put_u32(uint8_t *p, uint32_t v);
void mdt_put_u64(uint8_t *p, uint64_t v);
void mdt_put_f32(uint8_t *p, float v);

#endif
