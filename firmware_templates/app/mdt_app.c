/* The portable firmware: main loop, command handlers, staged inference (docs/protocol.md).
 * It never learns which board it runs on: only mdt_board.h does. */
#include <string.h>

#include "mdt_board.h"
#include "mdt_config.h"
#include "mdt_learn.h"
#include "mdt_graphs.h"
#include "mdt_protocol.h"

#define INPUT_SIZE MDT_TRUNK_INPUT0_SIZE
#define SPLIT_SIZE MDT_TRUNK_OUTPUT0_SIZE
#define FLAG_FORCE_FULL 0x01u
#define NO_PREDICTION 0xFFu

/* The planner aligns every buffer to MDT_ARENA_ALIGN inside the arena; the arena itself too. */
#ifndef MDT_ARENA_ALIGN
#define MDT_ARENA_ALIGN 16
#endif
static int8_t arena[MDT_ARENA_SIZE] __attribute__((aligned(MDT_ARENA_ALIGN)));
static int8_t input_buf[INPUT_SIZE];
static int8_t split_buf[SPLIT_SIZE];
static int8_t part_buf[MDT_PART_DIM];
static int8_t full_buf[MDT_FULL_DIM];
static uint8_t input_loaded;
static uint8_t tensor_valid[3];
static mdt_parser_t parser;
static uint8_t resp[MDT_MAX_PAYLOAD];
static uint8_t tx[MDT_MAX_PAYLOAD + MDT_FRAME_OVERHEAD];

typedef struct {
    uint64_t trunk, part_head, part_clf, rest, full_clf;
} stage_counts_t;

static void run_trunk_and_part(stage_counts_t *c)
{
    uint64_t t0, t1, t2;
    memcpy(&arena[MDT_TRUNK_INPUT0_OFFSET], input_buf, INPUT_SIZE);
    mdt_board_counter_align();
    t0 = mdt_board_counter();
    mdt_trunk_run(arena);
    t1 = mdt_board_counter();
    mdt_part_head_run(arena);
    t2 = mdt_board_counter();
    /* The rest may reuse the part head's output bytes: copy the features out first. */
    memcpy(part_buf, &arena[MDT_PART_HEAD_OUTPUT0_OFFSET], MDT_PART_DIM);
    c->trunk = t1 - t0;
    c->part_head = t2 - t1;
}

static void run_rest(stage_counts_t *c)
{
    uint64_t t0 = mdt_board_counter();
    mdt_rest_run(arena); /* resumes from the split activation still in the arena */
    c->rest = mdt_board_counter() - t0;
    memcpy(full_buf, &arena[MDT_REST_OUTPUT0_OFFSET], MDT_FULL_DIM);
}

static uint16_t put_counts3(const stage_counts_t *c)
{
    mdt_put_u64(&resp[1], c->trunk);
    mdt_put_u64(&resp[9], c->part_head);
    mdt_put_u64(&resp[17], c->rest);
    return 25;
}

static uint16_t status_only(uint8_t status)
{
    resp[0] = status;
    return 1;
}

static uint16_t put_quant(uint16_t at, uint32_t size, float scale, int32_t zero_point)
{
    mdt_put_u32(&resp[at], size);
    mdt_put_f32(&resp[at + 4], scale);
    mdt_put_u32(&resp[at + 8], (uint32_t)zero_point);
    return (uint16_t)(at + 12);
}

static uint16_t cmd_hello(void)
{
    uint16_t at = 1;
    uint32_t name_len = (uint32_t)strlen(MDT_BOARD_ID);
    resp[at++] = MDT_PROTOCOL_VERSION;
    resp[at++] = mdt_board_counter_unit();
    mdt_put_u32(&resp[at], mdt_board_clock_hz());
    at += 4;
    at = put_quant(at, INPUT_SIZE, MDT_TRUNK_INPUT0_SCALE, MDT_TRUNK_INPUT0_ZERO_POINT);
    at = put_quant(at, SPLIT_SIZE, MDT_TRUNK_OUTPUT0_SCALE, MDT_TRUNK_OUTPUT0_ZERO_POINT);
    at = put_quant(at, MDT_PART_DIM, MDT_PART_HEAD_OUTPUT0_SCALE, MDT_PART_HEAD_OUTPUT0_ZERO_POINT);
    at = put_quant(at, MDT_FULL_DIM, MDT_REST_OUTPUT0_SCALE, MDT_REST_OUTPUT0_ZERO_POINT);
    mdt_put_u16(&resp[at], MDT_MAX_TASKS);
    mdt_put_u16(&resp[at + 2], MDT_MAX_CLASSES);
    mdt_put_u32(&resp[at + 4], MDT_MAX_SLOTS);
    mdt_put_u32(&resp[at + 8], MDT_ARENA_SIZE);
    mdt_put_u16(&resp[at + 12], MDT_MAX_PAYLOAD);
    at += 14;
    if (name_len > 64) {
        name_len = 64;
    }
    resp[at++] = (uint8_t)name_len;
    memcpy(&resp[at], MDT_BOARD_ID, name_len);
    resp[0] = MDT_OK;
    return (uint16_t)(at + name_len);
}

static uint16_t cmd_load_input(const uint8_t *p, uint16_t len)
{
    uint32_t offset, n;
    if (len < 4) {
        return status_only(MDT_BAD_LENGTH);
    }
    offset = mdt_get_u32(p);
    n = (uint32_t)len - 4u;
    if (offset > INPUT_SIZE || n > INPUT_SIZE - offset) {
        return status_only(MDT_OUT_OF_RANGE);
    }
    memcpy(&input_buf[offset], p + 4, n);
    input_loaded = 1;
    tensor_valid[0] = tensor_valid[1] = tensor_valid[2] = 0;
    return status_only(MDT_OK);
}

static uint16_t cmd_run_graphs(uint16_t len, int store, const uint8_t *p)
{
    stage_counts_t c = {0, 0, 0, 0, 0};
    uint32_t slot = 0;
    if (len != (store ? 4 : 0)) {
        return status_only(MDT_BAD_LENGTH);
    }
    if (store) {
        slot = mdt_get_u32(p);
        if (slot >= MDT_MAX_SLOTS) {
            return status_only(MDT_OUT_OF_RANGE);
        }
    }
    if (!input_loaded) {
        return status_only(MDT_NOT_READY);
    }
    run_trunk_and_part(&c);
    if (!store) {
        memcpy(split_buf, &arena[MDT_TRUNK_OUTPUT0_OFFSET], SPLIT_SIZE);
    }
    run_rest(&c);
    if (store) {
        (void)mdt_store_put(slot, part_buf, full_buf);
    } else {
        tensor_valid[0] = 1;
    }
    tensor_valid[1] = tensor_valid[2] = 1;
    resp[0] = MDT_OK;
    return put_counts3(&c);
}

static uint16_t cmd_read_tensor(const uint8_t *p, uint16_t len)
{
    static const int8_t *const bufs[3] = {split_buf, part_buf, full_buf};
    static const uint32_t sizes[3] = {SPLIT_SIZE, MDT_PART_DIM, MDT_FULL_DIM};
    uint32_t id, offset, n;
    if (len != 7) {
        return status_only(MDT_BAD_LENGTH);
    }
    id = p[0];
    offset = mdt_get_u32(p + 1);
    n = mdt_get_u16(p + 5);
    if (id > 2) {
        return status_only(MDT_BAD_ARGUMENT);
    }
    if (!tensor_valid[id]) {
        return status_only(MDT_NOT_READY);
    }
    if (n > MDT_MAX_PAYLOAD - 1u || offset > sizes[id] || n > sizes[id] - offset) {
        return status_only(MDT_OUT_OF_RANGE);
    }
    memcpy(&resp[1], &bufs[id][offset], n);
    resp[0] = MDT_OK;
    return (uint16_t)(1u + n);
}

static uint16_t cmd_set_labels(const uint8_t *p, uint16_t len)
{
    if (len < 6) {
        return status_only(MDT_BAD_LENGTH);
    }
    return status_only((uint8_t)mdt_set_labels(p[0], p[1], mdt_get_u32(p + 2), p + 6, (uint32_t)len - 6u));
}

static uint16_t cmd_train(const uint8_t *p, uint16_t len)
{
    float out[4];
    uint64_t t0, t1;
    int st;
    if (len != 19) {
        return status_only(MDT_BAD_LENGTH);
    }
    mdt_board_counter_align();
    t0 = mdt_board_counter();
    st = mdt_train(p[0], mdt_get_u16(p + 1), mdt_get_f32(p + 3), mdt_get_u32(p + 7), mdt_get_u32(p + 11),
                   mdt_get_u32(p + 15), out);
    t1 = mdt_board_counter();
    if (st != MDT_OK) {
        return status_only((uint8_t)st);
    }
    resp[0] = MDT_OK;
    mdt_put_f32(&resp[1], out[0]);
    mdt_put_f32(&resp[5], out[1]);
    mdt_put_f32(&resp[9], out[2]);
    mdt_put_f32(&resp[13], out[3]);
    mdt_put_u64(&resp[17], t1 - t0);
    return 25;
}

static uint16_t cmd_set_ratio(const uint8_t *p, uint16_t len)
{
    float threshold = 0.0f;
    int st;
    if (len != 13) {
        return status_only(MDT_BAD_LENGTH);
    }
    st = mdt_set_ratio(p[0], mdt_get_f32(p + 1), mdt_get_u32(p + 5), mdt_get_u32(p + 9), &threshold);
    if (st != MDT_OK) {
        return status_only((uint8_t)st);
    }
    resp[0] = MDT_OK;
    mdt_put_f32(&resp[1], threshold);
    return 5;
}

static uint16_t cmd_infer(const uint8_t *p, uint16_t len)
{
    stage_counts_t c = {0, 0, 0, 0, 0};
    const mdt_task_t *t;
    float part_conf = 0.0f, full_conf = 0.0f;
    uint8_t part_pred, full_pred = NO_PREDICTION, pred, exit_stage;
    uint64_t t0;
    if (len != 2) {
        return status_only(MDT_BAD_LENGTH);
    }
    t = mdt_task(p[0]);
    if (t == 0 || (p[1] & ~FLAG_FORCE_FULL) != 0) {
        return status_only(MDT_BAD_ARGUMENT);
    }
    if (!input_loaded || !t->trained) {
        return status_only(MDT_NOT_READY);
    }
    run_trunk_and_part(&c);
    t0 = mdt_board_counter();
    part_pred = mdt_classify(t->part_w, t->part_b, t->n_classes, MDT_PART_DIM, part_buf,
                             MDT_PART_HEAD_OUTPUT0_SCALE, MDT_PART_HEAD_OUTPUT0_ZERO_POINT, &part_conf);
    c.part_clf = mdt_board_counter() - t0;
    tensor_valid[0] = 0;
    tensor_valid[1] = 1;
    tensor_valid[2] = 0;
    exit_stage = part_conf >= t->threshold ? 0u : 1u;
    pred = part_pred;
    if (exit_stage == 1u || (p[1] & FLAG_FORCE_FULL)) {
        run_rest(&c);
        t0 = mdt_board_counter();
        full_pred = mdt_classify(t->full_w, t->full_b, t->n_classes, MDT_FULL_DIM, full_buf,
                                 MDT_REST_OUTPUT0_SCALE, MDT_REST_OUTPUT0_ZERO_POINT, &full_conf);
        c.full_clf = mdt_board_counter() - t0;
        tensor_valid[2] = 1;
        if (exit_stage == 1u) {
            pred = full_pred;
        }
    }
    resp[0] = MDT_OK;
    resp[1] = pred;
    resp[2] = exit_stage;
    resp[3] = part_pred;
    resp[4] = full_pred;
    mdt_put_f32(&resp[5], part_conf);
    mdt_put_f32(&resp[9], full_conf);
    mdt_put_u64(&resp[13], c.trunk);
    mdt_put_u64(&resp[21], c.part_head);
    mdt_put_u64(&resp[29], c.part_clf);
    mdt_put_u64(&resp[37], c.rest);
    mdt_put_u64(&resp[45], c.full_clf);
    return 53;
}

static uint16_t cmd_read_head(const uint8_t *p, uint16_t len)
{
    const mdt_task_t *t;
    const float *w, *b;
    uint32_t dim, total, offset, count, i, nc;
    if (len != 8) {
        return status_only(MDT_BAD_LENGTH);
    }
    t = mdt_task(p[0]);
    if (t == 0 || p[1] > 1) {
        return status_only(MDT_BAD_ARGUMENT);
    }
    if (!t->trained) {
        return status_only(MDT_NOT_READY);
    }
    nc = t->n_classes;
    dim = p[1] ? MDT_FULL_DIM : MDT_PART_DIM;
    w = p[1] ? t->full_w : t->part_w;
    b = p[1] ? t->full_b : t->part_b;
    total = nc * (dim + 1u);
    offset = mdt_get_u32(p + 2);
    count = mdt_get_u16(p + 6);
    if (count > (MDT_MAX_PAYLOAD - 5u) / 4u || offset > total || count > total - offset) {
        return status_only(MDT_OUT_OF_RANGE);
    }
    resp[0] = MDT_OK;
    mdt_put_u16(&resp[1], (uint16_t)nc);
    mdt_put_u16(&resp[3], (uint16_t)dim);
    for (i = 0; i < count; i++) {
        uint32_t k = offset + i;
        mdt_put_f32(&resp[5 + 4 * i], k < nc * dim ? w[k] : b[k - nc * dim]);
    }
    return (uint16_t)(5u + 4u * count);
}

static void send(uint8_t command, uint8_t sequence, uint16_t length)
{
    uint32_t n = mdt_frame_encode(tx, (uint8_t)(command | 0x80u), sequence, resp, length);
    mdt_board_write(tx, n);
}

static void dispatch(void)
{
    const uint8_t *p = parser.payload;
    uint16_t len = parser.length, out;
    switch (parser.command) {
    case MDT_CMD_HELLO:
        out = len == 0 ? cmd_hello() : status_only(MDT_BAD_LENGTH);
        break;
    case MDT_CMD_LOAD_INPUT:
        out = cmd_load_input(p, len);
        break;
    case MDT_CMD_RUN_GRAPHS:
        out = cmd_run_graphs(len, 0, p);
        break;
    case MDT_CMD_READ_TENSOR:
        out = cmd_read_tensor(p, len);
        break;
    case MDT_CMD_STORE_FEATURES:
        out = cmd_run_graphs(len, 1, p);
        break;
    case MDT_CMD_SET_LABELS:
        out = cmd_set_labels(p, len);
        break;
    case MDT_CMD_TRAIN:
        out = cmd_train(p, len);
        break;
    case MDT_CMD_SET_RATIO:
        out = cmd_set_ratio(p, len);
        break;
    case MDT_CMD_INFER:
        out = cmd_infer(p, len);
        break;
    case MDT_CMD_READ_HEAD:
        out = cmd_read_head(p, len);
        break;
    case MDT_CMD_EXIT:
        if (len != 1) {
            out = status_only(MDT_BAD_LENGTH);
            break;
        }
        send(parser.command, parser.sequence, status_only(MDT_OK));
        mdt_board_exit(p[0]);
        return;
    default:
        out = status_only(MDT_UNKNOWN_COMMAND);
        break;
    }
    send(parser.command, parser.sequence, out);
}

int main(int argc, char **argv)
{
    mdt_board_init(argc, argv);
    mdt_parser_reset(&parser);
    for (;;) {
        int busy = mdt_parser_busy(&parser);
        int byte = mdt_board_read_byte(busy ? MDT_RX_TIMEOUT_MS : 1000u);
        mdt_event_t ev;
        if (byte == MDT_READ_CLOSED) {
            mdt_board_exit(0);
            return 0;
        }
        if (byte == MDT_READ_TIMEOUT) {
            if (busy) {
                mdt_parser_reset(&parser); /* drop the partial frame */
            }
            continue;
        }
        ev = mdt_parser_feed(&parser, (uint8_t)byte);
        if (ev == MDT_EV_FRAME) {
            dispatch();
        } else if (ev == MDT_EV_ERROR) {
            send(parser.command, parser.sequence, status_only(parser.error));
        }
    }
}
