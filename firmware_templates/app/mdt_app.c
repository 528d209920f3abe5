/* The portable firmware: main loop and command handlers (docs/protocol.md). Staged inference, the
 * feature store and the trainer are the model's C API (microt.h), shared with the library export.
 * It never learns which board it runs on: only mdt_board.h does. */
#include <string.h>

#include "mdt_board.h"
#include "mdt_config.h"
#include "mdt_graphs.h"
#include "mdt_protocol.h"
#include "microt.h"

static int8_t split_buf[MICROT_SPLIT_SIZE];
static uint8_t tensor_valid[3];
static mdt_parser_t parser;
static uint8_t resp[MDT_MAX_PAYLOAD];
static uint8_t tx[MDT_MAX_PAYLOAD + MDT_FRAME_OVERHEAD];
/* The host file of HOST_OPEN (whole int8 samples, MICROT_INPUT_SIZE bytes each): -1 none open. */
static int host_file = -1;
static uint32_t host_samples;
static char host_path[MDT_HOST_PATH_MAX + 1u];

static uint16_t put_counts3(const microt_counts_t *c)
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
    at = put_quant(at, MICROT_INPUT_SIZE, MICROT_INPUT_SCALE, MICROT_INPUT_ZERO_POINT);
    at = put_quant(at, MICROT_SPLIT_SIZE, MDT_TRUNK_OUTPUT0_SCALE, MDT_TRUNK_OUTPUT0_ZERO_POINT);
    at = put_quant(at, MICROT_PART_DIM, MICROT_PART_SCALE, MICROT_PART_ZERO_POINT);
    at = put_quant(at, MICROT_FULL_DIM, MICROT_FULL_SCALE, MICROT_FULL_ZERO_POINT);
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
    int st;
    if (len < 4) {
        return status_only(MDT_BAD_LENGTH);
    }
    st = microt_set_input(mdt_get_u32(p), (const int8_t *)(p + 4), (uint32_t)len - 4u);
    if (st == MDT_OK) {
        tensor_valid[0] = tensor_valid[1] = tensor_valid[2] = 0;
    }
    return status_only((uint8_t)st);
}

static uint16_t cmd_run_graphs(uint16_t len, int store, const uint8_t *p)
{
    microt_counts_t c = {0, 0, 0, 0, 0};
    int st;
    if (len != (store ? 4 : 0)) {
        return status_only(MDT_BAD_LENGTH);
    }
    st = store ? microt_store_features(mdt_get_u32(p), &c) : microt_run_graphs(split_buf, &c);
    if (st != MDT_OK) {
        return status_only((uint8_t)st);
    }
    if (!store) {
        tensor_valid[0] = 1;
    }
    tensor_valid[1] = tensor_valid[2] = 1;
    resp[0] = MDT_OK;
    return put_counts3(&c);
}

static uint16_t cmd_read_tensor(const uint8_t *p, uint16_t len)
{
    static const uint32_t sizes[3] = {MICROT_SPLIT_SIZE, MICROT_PART_DIM, MICROT_FULL_DIM};
    const int8_t *bufs[3];
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
    bufs[0] = split_buf;
    bufs[1] = microt_part_features();
    bufs[2] = microt_full_features();
    memcpy(&resp[1], &bufs[id][offset], n);
    resp[0] = MDT_OK;
    return (uint16_t)(1u + n);
}

static uint16_t cmd_set_labels(const uint8_t *p, uint16_t len)
{
    if (len < 6) {
        return status_only(MDT_BAD_LENGTH);
    }
    return status_only((uint8_t)microt_set_labels(p[0], p[1], mdt_get_u32(p + 2), p + 6, (uint32_t)len - 6u));
}

static uint16_t cmd_train(const uint8_t *p, uint16_t len)
{
    microt_train_result_t r;
    int st;
    if (len != 19) {
        return status_only(MDT_BAD_LENGTH);
    }
    st = microt_train(p[0], mdt_get_u16(p + 1), mdt_get_f32(p + 3), mdt_get_u32(p + 7), mdt_get_u32(p + 11),
                      mdt_get_u32(p + 15), &r);
    if (st != MDT_OK) {
        return status_only((uint8_t)st);
    }
    resp[0] = MDT_OK;
    mdt_put_f32(&resp[1], r.part_loss);
    mdt_put_f32(&resp[5], r.part_accuracy);
    mdt_put_f32(&resp[9], r.full_loss);
    mdt_put_f32(&resp[13], r.full_accuracy);
    mdt_put_u64(&resp[17], r.counter);
    return 25;
}

static uint16_t cmd_set_ratio(const uint8_t *p, uint16_t len)
{
    float threshold = 0.0f;
    int st;
    if (len != 13) {
        return status_only(MDT_BAD_LENGTH);
    }
    st = microt_set_ratio(p[0], mdt_get_f32(p + 1), mdt_get_u32(p + 5), mdt_get_u32(p + 9), &threshold);
    if (st != MDT_OK) {
        return status_only((uint8_t)st);
    }
    resp[0] = MDT_OK;
    mdt_put_f32(&resp[1], threshold);
    return 5;
}

static uint16_t cmd_infer(const uint8_t *p, uint16_t len)
{
    microt_result_t r;
    int st;
    if (len != 2) {
        return status_only(MDT_BAD_LENGTH);
    }
    st = microt_infer(p[0], p[1], &r);
    if (st != MDT_OK) {
        return status_only((uint8_t)st);
    }
    tensor_valid[0] = 0;
    tensor_valid[1] = 1;
    tensor_valid[2] = r.full_prediction != MICROT_NO_PREDICTION;
    resp[0] = MDT_OK;
    resp[1] = r.prediction;
    resp[2] = r.exit_stage;
    resp[3] = r.part_prediction;
    resp[4] = r.full_prediction;
    mdt_put_f32(&resp[5], r.part_confidence);
    mdt_put_f32(&resp[9], r.full_confidence);
    mdt_put_u64(&resp[13], r.counts.trunk);
    mdt_put_u64(&resp[21], r.counts.part_head);
    mdt_put_u64(&resp[29], r.counts.part_classifier);
    mdt_put_u64(&resp[37], r.counts.rest);
    mdt_put_u64(&resp[45], r.counts.full_classifier);
    return 53;
}

static uint16_t cmd_read_head(const uint8_t *p, uint16_t len)
{
    const float *w, *b;
    uint32_t dim, total, offset, count, i, nc;
    int st;
    if (len != 8) {
        return status_only(MDT_BAD_LENGTH);
    }
    st = microt_head(p[0], p[1], &w, &b, &nc, &dim);
    if (st != MDT_OK) {
        return status_only((uint8_t)st);
    }
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

static uint8_t host_status(int st)
{
    return (uint8_t)(st == MDT_HOST_UNSUPPORTED ? MDT_UNSUPPORTED : MDT_IO_ERROR);
}

static uint16_t cmd_host_open(const uint8_t *p, uint16_t len)
{
    uint32_t file_len = 0, i;
    int h;
    if (host_file >= 0) {
        mdt_board_host_close(host_file); /* a new HOST_OPEN always forgets the old file */
        host_file = -1;
        host_samples = 0;
    }
    if (len == 0 || len > MDT_HOST_PATH_MAX) {
        return status_only(MDT_BAD_ARGUMENT);
    }
    for (i = 0; i < len; i++) {
        if (p[i] == 0u) {
            return status_only(MDT_BAD_ARGUMENT);
        }
        host_path[i] = (char)p[i];
    }
    host_path[len] = 0;
    h = mdt_board_host_open(host_path, len, &file_len);
    if (h < 0) {
        return status_only(host_status(h));
    }
    if (file_len == 0u || file_len % MICROT_INPUT_SIZE != 0u) {
        mdt_board_host_close(h); /* not whole samples of this model's input */
        return status_only(MDT_BAD_ARGUMENT);
    }
    host_file = h;
    host_samples = file_len / MICROT_INPUT_SIZE;
    resp[0] = MDT_OK;
    mdt_put_u32(&resp[1], file_len);
    mdt_put_u32(&resp[5], host_samples);
    return 9;
}

/* Sample `index` of the open host file into the model's input, a response buffer at a time (the answer
 * is written only after): no second copy of the input in RAM. A read that fails part-way leaves no
 * input loaded rather than a mix of two samples. */
static int load_sample(uint32_t index)
{
    uint32_t done = 0;
    tensor_valid[0] = tensor_valid[1] = tensor_valid[2] = 0;
    while (done < MICROT_INPUT_SIZE) {
        uint32_t n = MICROT_INPUT_SIZE - done;
        int st;
        if (n > sizeof(resp)) {
            n = sizeof(resp);
        }
        st = mdt_board_host_read(host_file, index * (uint32_t)MICROT_INPUT_SIZE + done, resp, n);
        if (st != 0) {
            microt_forget_input();
            return host_status(st);
        }
        (void)microt_set_input(done, (const int8_t *)resp, n); /* in range: done + n <= the input size */
        done += n;
    }
    return MDT_OK;
}

static uint16_t cmd_load_sample(const uint8_t *p, uint16_t len)
{
    uint32_t index;
    if (len != 4) {
        return status_only(MDT_BAD_LENGTH);
    }
    index = mdt_get_u32(p);
    if (host_file < 0) {
        return status_only(MDT_NOT_READY);
    }
    if (index >= host_samples) {
        return status_only(MDT_OUT_OF_RANGE);
    }
    return status_only((uint8_t)load_sample(index));
}

static uint16_t cmd_store_samples(const uint8_t *p, uint16_t len)
{
    microt_counts_t c, sum = {0, 0, 0, 0, 0};
    uint32_t first, slot, count, i;
    int st;
    if (len != 10) {
        return status_only(MDT_BAD_LENGTH);
    }
    first = mdt_get_u32(p);
    slot = mdt_get_u32(p + 4);
    count = mdt_get_u16(p + 8);
    if (count == 0u) {
        return status_only(MDT_BAD_ARGUMENT);
    }
    if (host_file < 0) {
        return status_only(MDT_NOT_READY);
    }
    /* Every bound before any work (no u32 wrap-around): a refusal changes nothing. */
    if (first >= host_samples || count > host_samples - first || slot >= MDT_MAX_SLOTS ||
        count > MDT_MAX_SLOTS - slot) {
        return status_only(MDT_OUT_OF_RANGE);
    }
    for (i = 0; i < count; i++) {
        st = load_sample(first + i);
        if (st == MDT_OK) {
            st = microt_store_features(slot + i, &c);
        }
        if (st != MDT_OK) {
            return status_only((uint8_t)st);
        }
        sum.trunk += c.trunk;
        sum.part_head += c.part_head;
        sum.rest += c.rest;
    }
    tensor_valid[1] = tensor_valid[2] = 1;
    resp[0] = MDT_OK;
    return put_counts3(&sum);
}

static uint16_t cmd_set_threshold(const uint8_t *p, uint16_t len)
{
    if (len != 5) {
        return status_only(MDT_BAD_LENGTH);
    }
    return status_only((uint8_t)microt_set_threshold(p[0], mdt_get_f32(p + 1)));
}

static void send(uint8_t command, uint8_t sequence, uint16_t length)
{
    uint32_t n = mdt_frame_encode(tx, (uint8_t)(command | MDT_RESPONSE_BIT), sequence, resp, length);
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
    case MDT_CMD_HOST_OPEN:
        out = cmd_host_open(p, len);
        break;
    case MDT_CMD_LOAD_SAMPLE:
        out = cmd_load_sample(p, len);
        break;
    case MDT_CMD_STORE_SAMPLES:
        out = cmd_store_samples(p, len);
        break;
    case MDT_CMD_SET_THRESHOLD:
        out = cmd_set_threshold(p, len);
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

static void handle(mdt_event_t ev)
{
    /* A rescan after a false start may hold further frames: answer them all, in order. */
    while (ev != MDT_EV_NONE) {
        if (ev == MDT_EV_FRAME) {
            dispatch();
        } else {
            send(parser.command, parser.sequence, status_only(parser.error));
        }
        ev = mdt_parser_poll(&parser);
    }
}

int main(int argc, char **argv)
{
    mdt_board_init(argc, argv);
    microt_init(mdt_board_counter, mdt_board_counter_align);
    mdt_parser_reset(&parser);
    tensor_valid[0] = tensor_valid[1] = tensor_valid[2] = 0;
    host_file = -1;
    host_samples = 0;
    for (;;) {
        int busy = mdt_parser_busy(&parser);
        int byte = mdt_board_read_byte(busy ? MDT_RX_TIMEOUT_MS : 1000u);
        if (byte == MDT_READ_CLOSED) {
            mdt_board_exit(0);
            return 0;
        }
        if (byte == MDT_READ_TIMEOUT) {
            if (busy) {
                handle(mdt_parser_timeout(&parser)); /* give up the partial frame, rescan after it */
            }
            continue;
        }
        handle(mdt_parser_feed(&parser, (uint8_t)byte));
    }
}
