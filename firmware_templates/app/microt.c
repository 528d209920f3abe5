/* The model's C API (microt.h): the arena, the input, staged inference, and the feature store,
 * trainer and stage decision of mdt_learn.c behind status-returning calls. Portable C99. */
#include "microt.h"

#include <math.h>
#include <string.h>

#include "mdt_learn.h"
#include "mdt_protocol.h"

/* microt.h's statuses are the protocol's status byte values that mdt_learn.c returns. */
typedef char microt_status_check[(MICROT_OK == MDT_OK && MICROT_BAD_ARGUMENT == MDT_BAD_ARGUMENT &&
                                  MICROT_NOT_READY == MDT_NOT_READY && MICROT_OUT_OF_RANGE == MDT_OUT_OF_RANGE &&
                                  MICROT_PART_DIM == MDT_PART_DIM && MICROT_FULL_DIM == MDT_FULL_DIM &&
                                  MICROT_MAX_EPOCHS == MDT_MAX_EPOCHS &&
                                  MICROT_FORCE_FULL == MDT_FLAG_FORCE_FULL)
                                     ? 1
                                     : -1];

/* The planner aligns every buffer to MDT_ARENA_ALIGN inside the arena; the arena itself too. */
#ifndef MDT_ARENA_ALIGN
#define MDT_ARENA_ALIGN 16
#endif
#if defined(__GNUC__) || defined(__clang__) || defined(__CC_ARM)
#define MICROT_ALIGNED __attribute__((aligned(MDT_ARENA_ALIGN)))
#else
#define MICROT_ALIGNED
#endif

static int8_t arena[MDT_ARENA_SIZE] MICROT_ALIGNED;
static int8_t part_buf[MICROT_PART_DIM];
static int8_t full_buf[MICROT_FULL_DIM];
/* The input is written straight to where the trunk reads it in the arena: no copy of it beside the
 * arena (93 KB at 176x176x3). The trunk overwrites it, so it runs once per loaded input; later runs on
 * that input resume from the split activation, which stays intact in the arena (the planner keeps a
 * graph's inputs until their last reader, the rest, has finished, and nothing runs after the rest). */
enum { INPUT_NONE, INPUT_FRESH, INPUT_CONSUMED };
static uint8_t input_state;
static uint64_t trunk_count; /* what the trunk counted on the loaded input, reported by every run on it */
static microt_counter_fn counter_fn;
static microt_align_fn align_fn;

static uint64_t now(void)
{
    return counter_fn ? counter_fn() : 0u;
}

void microt_init(microt_counter_fn counter, microt_align_fn align)
{
    counter_fn = counter;
    align_fn = align;
    input_state = INPUT_NONE;
}

/* A write to the input at `offset`: refused once the trunk has consumed the input unless it starts a
 * new one at offset 0 (the rest of the region holds activations by then, not the old input). */
static int input_writable(uint32_t offset, uint32_t length)
{
    if (offset > MICROT_INPUT_SIZE || length > MICROT_INPUT_SIZE - offset) {
        return MICROT_OUT_OF_RANGE;
    }
    return (input_state == INPUT_CONSUMED && offset != 0u) ? MICROT_NOT_READY : MICROT_OK;
}

int microt_set_input(uint32_t offset, const int8_t *data, uint32_t length)
{
    int st;
    if (data == NULL && length > 0) {
        return MICROT_BAD_ARGUMENT;
    }
    st = input_writable(offset, length);
    if (st != MICROT_OK) {
        return st;
    }
    if (length > 0) { /* a write of no bytes changes nothing */
        memcpy(&arena[MDT_TRUNK_INPUT0_OFFSET + offset], data, length);
        input_state = INPUT_FRESH;
    }
    return MICROT_OK;
}

int8_t microt_quantize(float value, float scale, int32_t zero_point)
{
    float ratio = value / scale;
    float rounded = floorf(fabsf(ratio) + 0.5f);
    int32_t q;
    if (!(rounded < 2147483520.0f)) { /* also NaN: saturates (to the largest value) */
        return ratio < 0.0f ? (int8_t)-128 : (int8_t)127;
    }
    q = (int32_t)(ratio < 0.0f ? -rounded : rounded) + zero_point;
    return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}

void microt_forget_input(void)
{
    input_state = INPUT_NONE;
}

int microt_set_input_f32(uint32_t offset, const float *values, uint32_t count)
{
    uint32_t i;
    int st;
    if (values == NULL && count > 0) {
        return MICROT_BAD_ARGUMENT;
    }
    st = input_writable(offset, count);
    if (st != MICROT_OK) {
        return st;
    }
    for (i = 0; i < count; i++) {
        arena[MDT_TRUNK_INPUT0_OFFSET + offset + i] =
            microt_quantize(values[i], MICROT_INPUT_SCALE, MICROT_INPUT_ZERO_POINT);
    }
    if (count > 0) {
        input_state = INPUT_FRESH;
    }
    return MICROT_OK;
}

static void run_trunk_and_part(microt_counts_t *c)
{
    uint64_t t0, t1;
    if (input_state == INPUT_FRESH) {
        if (align_fn) {
            align_fn();
        }
        t0 = now();
        mdt_trunk_run(arena);
        trunk_count = now() - t0;
        input_state = INPUT_CONSUMED;
    }
    if (align_fn) { /* the part head's count must not depend on whether the trunk ran just before */
        align_fn();
    }
    t0 = now();
    mdt_part_head_run(arena);
    t1 = now();
    /* The rest may reuse the part head's output bytes: copy the features out first. */
    memcpy(part_buf, &arena[MDT_PART_HEAD_OUTPUT0_OFFSET], MICROT_PART_DIM);
    c->trunk = trunk_count;
    c->part_head = t1 - t0;
}

static void run_rest(microt_counts_t *c)
{
    uint64_t t0 = now();
    mdt_rest_run(arena); /* resumes from the split activation still in the arena */
    c->rest = now() - t0;
    memcpy(full_buf, &arena[MDT_REST_OUTPUT0_OFFSET], MICROT_FULL_DIM);
}

static int run_all(int8_t *split_copy, microt_counts_t *counts)
{
    microt_counts_t c = {0, 0, 0, 0, 0};
    if (input_state == INPUT_NONE) {
        return MICROT_NOT_READY;
    }
    run_trunk_and_part(&c);
    if (split_copy) {
        memcpy(split_copy, &arena[MDT_TRUNK_OUTPUT0_OFFSET], MICROT_SPLIT_SIZE);
    }
    run_rest(&c);
    if (counts) {
        *counts = c;
    }
    return MICROT_OK;
}

int microt_run_graphs(int8_t *split_copy, microt_counts_t *counts)
{
    return run_all(split_copy, counts);
}

const int8_t *microt_part_features(void)
{
    return part_buf;
}

const int8_t *microt_full_features(void)
{
    return full_buf;
}

int microt_store_features(uint32_t slot, microt_counts_t *counts)
{
    int st;
    if (slot >= MICROT_MAX_SLOTS) {
        return MICROT_OUT_OF_RANGE;
    }
    st = run_all(0, counts);
    if (st != MICROT_OK) {
        return st;
    }
    return mdt_store_put(slot, part_buf, full_buf);
}

int microt_set_labels(uint32_t task, uint32_t n_classes, uint32_t first_slot, const uint8_t *labels,
                      uint32_t count)
{
    return mdt_set_labels(task, n_classes, first_slot, labels, count);
}

int microt_train(uint32_t task, uint32_t epochs, float lr, uint32_t first_slot, uint32_t n_slots,
                 uint32_t seed, microt_train_result_t *result)
{
    float out[4];
    uint64_t t0, t1;
    int st;
    if (align_fn) {
        align_fn();
    }
    t0 = now();
    st = mdt_train(task, epochs, lr, first_slot, n_slots, seed, out);
    t1 = now();
    if (st == MICROT_OK && result) {
        result->part_loss = out[0];
        result->part_accuracy = out[1];
        result->full_loss = out[2];
        result->full_accuracy = out[3];
        result->counter = t1 - t0;
    }
    return st;
}

int microt_set_ratio(uint32_t task, float ratio, uint32_t first_slot, uint32_t n_slots, float *threshold)
{
    float th = 0.0f;
    int st = mdt_set_ratio(task, ratio, first_slot, n_slots, &th);
    if (st == MICROT_OK && threshold) {
        *threshold = th;
    }
    return st;
}

int microt_set_threshold(uint32_t task, float threshold)
{
    return mdt_set_threshold(task, threshold);
}

int microt_threshold(uint32_t task, float *threshold)
{
    const mdt_task_t *t = mdt_task(task);
    if (t == 0 || threshold == NULL) {
        return MICROT_BAD_ARGUMENT;
    }
    if (!t->trained) {
        return MICROT_NOT_READY;
    }
    *threshold = t->threshold;
    return MICROT_OK;
}

int microt_infer(uint32_t task, uint32_t flags, microt_result_t *result)
{
    microt_counts_t c = {0, 0, 0, 0, 0};
    const mdt_task_t *t = mdt_task(task);
    float part_conf = 0.0f, full_conf = 0.0f;
    uint8_t part_pred, full_pred = MICROT_NO_PREDICTION, pred, exit_stage;
    uint64_t t0;
    if (t == 0 || (flags & ~MICROT_FORCE_FULL) != 0 || result == NULL) {
        return MICROT_BAD_ARGUMENT;
    }
    if (input_state == INPUT_NONE || !t->trained) {
        return MICROT_NOT_READY;
    }
    run_trunk_and_part(&c);
    t0 = now();
    part_pred = mdt_classify(t->part_w, t->part_b, t->n_classes, MICROT_PART_DIM, part_buf, MICROT_PART_SCALE,
                             MICROT_PART_ZERO_POINT, &part_conf);
    c.part_classifier = now() - t0;
    exit_stage = part_conf >= t->threshold ? 0u : 1u;
    pred = part_pred;
    if (exit_stage == 1u || (flags & MICROT_FORCE_FULL)) {
        run_rest(&c);
        t0 = now();
        full_pred = mdt_classify(t->full_w, t->full_b, t->n_classes, MICROT_FULL_DIM, full_buf, MICROT_FULL_SCALE,
                                 MICROT_FULL_ZERO_POINT, &full_conf);
        c.full_classifier = now() - t0;
        if (exit_stage == 1u) {
            pred = full_pred;
        }
    }
    result->prediction = pred;
    result->exit_stage = exit_stage;
    result->part_prediction = part_pred;
    result->full_prediction = full_pred;
    result->part_confidence = part_conf;
    result->full_confidence = full_conf;
    result->counts = c;
    return MICROT_OK;
}

int microt_head(uint32_t task, uint32_t which, const float **weights, const float **biases,
                uint32_t *n_classes, uint32_t *dim)
{
    const mdt_task_t *t = mdt_task(task);
    if (t == 0 || which > 1 || weights == NULL || biases == NULL || n_classes == NULL || dim == NULL) {
        return MICROT_BAD_ARGUMENT;
    }
    if (!t->trained) {
        return MICROT_NOT_READY;
    }
    *weights = which ? t->full_w : t->part_w;
    *biases = which ? t->full_b : t->part_b;
    *n_classes = t->n_classes;
    *dim = which ? MICROT_FULL_DIM : MICROT_PART_DIM;
    return MICROT_OK;
}
