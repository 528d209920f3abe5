/* libFuzzer harness of the command handlers: the whole portable firmware (mdt_app.c's main loop and
 * dispatch, microt.c, mdt_learn.c, the kernels) around the toy model, with the fuzz board layer.
 *
 * Input: byte 0 picks a pause (timeout) before every n-th byte (0: none); then records [command, n, n payload
 * bytes], each sent as a frame with a good CRC (command 0xFE: the n bytes go raw, unframed). Checks:
 * every answer is a well-formed response frame with a known status; without raw bytes, every
 * request is answered exactly once, in order; an OK answer to TRAIN or SET_RATIO carries only
 * finite floats (never a NaN with OK); the state is reset between inputs.
 * mdt_app.c is compiled with -Dmain=mdt_app_main. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mdt_board_fuzz.h"
#include "mdt_learn.h"
#include "mdt_protocol.h"

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            __builtin_trap();                                                                                      \
        }                                                                                                          \
    } while (0)

#define MAX_REQUESTS 256

int mdt_app_main(int argc, char **argv);

static uint8_t stream[MAX_REQUESTS * (255u + MDT_FRAME_OVERHEAD)];
static uint8_t requests[MAX_REQUESTS];
static uint8_t exits[MAX_REQUESTS]; /* an EXIT with its 1-byte payload: the program ends there */
static mdt_parser_t reader;

static void check_answer(uint8_t command, const uint8_t *payload, uint16_t length)
{
    uint8_t status;
    CHECK(length >= 1);
    status = payload[0];
    CHECK(status <= MDT_IO_ERROR);
    CHECK(status == MDT_OK || length == 1);
    if (status != MDT_OK) {
        return;
    }
    if (command == MDT_CMD_TRAIN) {
        uint32_t k;
        CHECK(length == 25);
        for (k = 0; k < 4; k++) {
            CHECK(isfinite(mdt_get_f32(&payload[1 + 4 * k])));
        }
    } else if (command == MDT_CMD_SET_RATIO) {
        float th;
        CHECK(length == 5);
        th = mdt_get_f32(&payload[1]);
        CHECK(isfinite(th) && th > 0.0f && th <= MDT_NEVER_EXIT);
    } else if (command == MDT_CMD_HOST_OPEN) {
        CHECK(length == 9 && mdt_get_u32(&payload[5]) > 0u);
    } else if (command == MDT_CMD_STORE_SAMPLES) {
        CHECK(length == 25);
    } else if (command == MDT_CMD_LOAD_SAMPLE || command == MDT_CMD_SET_THRESHOLD) {
        CHECK(length == 1);
    } else if (command == MDT_CMD_INFER) {
        CHECK(length == 53);
        CHECK(isfinite(mdt_get_f32(&payload[5])) && isfinite(mdt_get_f32(&payload[9])));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jmp_buf on_exit;
    uint32_t len = 0, n_req = 0, answered = 0, i = 1, k;
    int raw = 0;
    if (size == 0) {
        return 0;
    }
    while (i + 2 <= size && n_req < MAX_REQUESTS) {
        uint8_t command = data[i], n = data[i + 1];
        if (i + 2 + n > size) {
            n = (uint8_t)(size - i - 2);
        }
        if (command == 0xFE) {
            memcpy(&stream[len], &data[i + 2], n);
            len += n;
            raw = 1;
        } else {
            if (command == MDT_CMD_TRAIN && n >= 3) {
                /* keep the epochs small: the fuzzer is after the checks, not long trainings */
                uint8_t payload[255];
                memcpy(payload, &data[i + 2], n);
                payload[2] = 0;
                payload[1] &= 7u;
                len += mdt_frame_encode(&stream[len], command, (uint8_t)n_req, payload, n);
            } else {
                len += mdt_frame_encode(&stream[len], command, (uint8_t)n_req, &data[i + 2], n);
            }
            exits[n_req] = command == MDT_CMD_EXIT && n == 1;
            requests[n_req++] = command;
        }
        i += 2u + n;
    }
    mdt_learn_reset();
    mdt_fuzz_board_start(stream, len, data[0], &on_exit);
    if (setjmp(on_exit) == 0) {
        (void)mdt_app_main(0, 0);
    }
    /* Read the answers back with the receiver itself. */
    mdt_parser_reset(&reader);
    for (k = 0; k < mdt_fuzz_tx_len; k++) {
        mdt_event_t ev = mdt_parser_feed(&reader, mdt_fuzz_tx[k]);
        while (ev != MDT_EV_NONE) {
            CHECK(ev == MDT_EV_FRAME); /* the device only writes good frames */
            CHECK(reader.command & MDT_RESPONSE_BIT);
            if (!raw && data[0] == 0) { /* no pauses (they may cut a request), no raw bytes */
                CHECK(answered < n_req && reader.sequence == (uint8_t)answered);
                CHECK(reader.command == (requests[answered] | MDT_RESPONSE_BIT));
                check_answer(requests[answered], reader.payload, reader.length);
            } else {
                CHECK(reader.payload[0] <= MDT_IO_ERROR);
            }
            answered++;
            ev = mdt_parser_poll(&reader);
        }
    }
    CHECK(!mdt_parser_busy(&reader));
    if (!raw && data[0] == 0 && mdt_fuzz_tx_len < MDT_FUZZ_TX_BYTES) {
        /* Each request answered once (no pauses, no raw bytes); EXIT ends the program early. */
        uint32_t until = n_req;
        for (k = 0; k < n_req; k++) {
            if (exits[k]) {
                until = k + 1;
                break;
            }
        }
        CHECK(answered == until);
    }
    return 0;
}
