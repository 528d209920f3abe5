/* microt.h - the MicroT model in C99: staged inference and on-device training of the heads.
 *
 * The one API of the model, used by the serial firmware's command handlers (mdt_app.c) and by a
 * user's own firmware (the library that `microt-deploy export-lib` writes). No serial protocol, no
 * board layer, no heap: every buffer is static and sized by mdt_config.h and the compiled model.
 *
 * Staged inference (MicroT stage 5): the trunk and the part head run on the input; the task's part
 * classifier answers when its confidence (max softmax) reaches the task's threshold; otherwise the
 * rest of the network resumes from the split activation still in the arena (the trunk is not run
 * again) and the full classifier answers.
 *
 * Typical use:
 *     microt_init(NULL, NULL);                        (or a cycle counter, see microt_counter_fn)
 *     for each labelled sample i: microt_set_input(0, x, MICROT_INPUT_SIZE); microt_store_features(i, NULL);
 *     microt_set_labels(task, n_classes, 0, labels, n);
 *     microt_train(task, epochs, lr, 0, n_train, seed, &tr);
 *     microt_set_ratio(task, 0.5f, n_train, n_calib, &threshold);   (calibration slots)
 *     microt_set_input(0, x, MICROT_INPUT_SIZE); microt_infer(task, 0, &result);
 *
 * Every function that can fail returns a status (MICROT_OK or an error below). Not reentrant: one
 * call at a time (the kernels and the trainer keep static state).
 */
#ifndef MICROT_H
#define MICROT_H

#include <stddef.h>
#include <stdint.h>

#include "mdt_config.h"
#include "mdt_graphs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the model's tensors (int8: real = scale * (q - zero_point)) ---- */
#define MICROT_INPUT_SIZE MDT_TRUNK_INPUT0_SIZE /* bytes of the int8 input, NHWC */
#define MICROT_INPUT_SCALE MDT_TRUNK_INPUT0_SCALE
#define MICROT_INPUT_ZERO_POINT MDT_TRUNK_INPUT0_ZERO_POINT
#define MICROT_SPLIT_SIZE MDT_TRUNK_OUTPUT0_SIZE /* bytes of the split activation */
#define MICROT_PART_DIM MDT_PART_HEAD_OUTPUT0_SIZE
#define MICROT_PART_SCALE MDT_PART_HEAD_OUTPUT0_SCALE
#define MICROT_PART_ZERO_POINT MDT_PART_HEAD_OUTPUT0_ZERO_POINT
#define MICROT_FULL_DIM MDT_REST_OUTPUT0_SIZE
#define MICROT_FULL_SCALE MDT_REST_OUTPUT0_SCALE
#define MICROT_FULL_ZERO_POINT MDT_REST_OUTPUT0_ZERO_POINT
#define MICROT_ARENA_SIZE MDT_ARENA_SIZE

/* ---- the sizes this build was rendered with (mdt_config.h) ---- */
#define MICROT_MAX_TASKS MDT_MAX_TASKS
#define MICROT_MAX_CLASSES MDT_MAX_CLASSES
#define MICROT_MAX_SLOTS MDT_MAX_SLOTS

/* ---- statuses (the values of docs/protocol.md's status byte) ---- */
#define MICROT_OK 0
#define MICROT_BAD_ARGUMENT 5 /* task, class count, label, ratio, flags, ... */
#define MICROT_NOT_READY 6    /* no input yet, no labels, untrained task, empty slot */
#define MICROT_OUT_OF_RANGE 7 /* offset / slot / length outside the buffer */

#define MICROT_FORCE_FULL 0x01u    /* microt_infer flag: also run the rest and the full classifier */
#define MICROT_NO_PREDICTION 0xFFu /* full_prediction when the rest did not run */
#define MICROT_NEVER_EXIT 2.0f     /* a task's threshold before microt_set_ratio (or ratio 0) */
#define MICROT_MAX_EPOCHS 65535u   /* microt_train: 1 <= epochs <= MICROT_MAX_EPOCHS */
#define MICROT_MAX_LR 1000.0f      /* microt_train: 0 < lr <= MICROT_MAX_LR, finite */

/* Optional stage counts: a free-running 64-bit counter (cycles, ns, ...) and an optional hook called
 * once before the first stage of a run, so that deltas are reproducible where the counter is coarse.
 * With no counter every count is 0. */
typedef uint64_t (*microt_counter_fn)(void);
typedef void (*microt_align_fn)(void);

typedef struct {
    /* counter deltas; 0: not run. trunk: its one run on the loaded input (see microt_set_input) */
    uint64_t trunk, part_head, part_classifier, rest, full_classifier;
} microt_counts_t;

typedef struct {
    uint8_t prediction;      /* the staged answer */
    uint8_t exit_stage;      /* 0: the part classifier answered, 1: the full classifier */
    uint8_t part_prediction;
    uint8_t full_prediction; /* MICROT_NO_PREDICTION if the rest did not run */
    float part_confidence;   /* max softmax of the part classifier */
    float full_confidence;   /* 0 if the rest did not run */
    microt_counts_t counts;
} microt_result_t;

typedef struct {
    float part_loss, part_accuracy, full_loss, full_accuracy; /* a final pass over the training slots */
    uint64_t counter;                                         /* counter delta of the training */
} microt_train_result_t;

/* Start-up: forget the input; counter and align may be NULL. The learned state (stored features,
 * labels, heads, thresholds) lives in static storage and starts empty. */
void microt_init(microt_counter_fn counter, microt_align_fn align);

/* Copy `length` int8 bytes of the input (NHWC, quantised with MICROT_INPUT_SCALE / _ZERO_POINT) to
 * `offset`: MICROT_OUT_OF_RANGE past MICROT_INPUT_SIZE. The first write of any bytes makes the input
 * "loaded" (a write of none changes nothing). The input lives in the arena, where the trunk reads and
 * overwrites it: the trunk runs once per loaded input, and every later run on it (another task,
 * MICROT_FORCE_FULL, storing its features) resumes from the split activation and reports the trunk's
 * count of that first run. After a run, load the next input from offset 0 (a write at another offset
 * first: MICROT_NOT_READY). */
int microt_set_input(uint32_t offset, const int8_t *data, uint32_t length);
/* Quantise `count` float values (as the trunk's float input expects them) into the input from
 * `offset`, as TFLite does: round(x / scale) half away from zero, + zero point, saturate to int8. */
int microt_set_input_f32(uint32_t offset, const float *values, uint32_t count);
/* The input counts as not loaded (MICROT_NOT_READY) until the next microt_set_input*: for a load
 * that failed part-way, so nothing runs on a mix of two samples. */
void microt_forget_input(void);
int8_t microt_quantize(float value, float scale, int32_t zero_point);

/* Run trunk, part head and rest on the input (the rest resumes from the split activation). The
 * split activation is copied to `split_copy` (MICROT_SPLIT_SIZE bytes) unless it is NULL; `counts`
 * may be NULL. The features are then in microt_part_features() / microt_full_features(). */
int microt_run_graphs(int8_t *split_copy, microt_counts_t *counts);
const int8_t *microt_part_features(void); /* MICROT_PART_DIM bytes of the last run */
const int8_t *microt_full_features(void); /* MICROT_FULL_DIM bytes of the last run that ran the rest */

/* Run the three graphs on the input and keep its part and full features in feature slot `slot`
 * (< MICROT_MAX_SLOTS). Slots are shared by all tasks. */
int microt_store_features(uint32_t slot, microt_counts_t *counts);

/* Labels of task `task` for slots first_slot .. first_slot + count - 1; 2 <= n_classes <=
 * MICROT_MAX_CLASSES, every label < n_classes. A new n_classes resets the task. */
int microt_set_labels(uint32_t task, uint32_t n_classes, uint32_t first_slot, const uint8_t *labels,
                      uint32_t count);

/* Train the task's two float32 linear heads (on the part and on the full features of the slots
 * first_slot .. first_slot + n_slots - 1) from zero: `epochs` passes of per-sample SGD on softmax
 * cross entropy with learning rate `lr`, the order shuffled by a xorshift32 seeded with `seed`
 * (0: a fixed default). Same slots, labels and seed give the same floats. `result` may be NULL.
 * Training resets the task's threshold to MICROT_NEVER_EXIT.
 * MICROT_BAD_ARGUMENT: epochs 0 or > MICROT_MAX_EPOCHS, lr NaN / inf / <= 0 / > MICROT_MAX_LR,
 * n_slots 0, or heads that came out non-finite (the task is then untrained). Never a NaN with OK. */
int microt_train(uint32_t task, uint32_t epochs, float lr, uint32_t first_slot, uint32_t n_slots,
                 uint32_t seed, microt_train_result_t *result);

/* The stage-decision ratio: the fraction of samples that should exit at the part model. Sets the
 * task's threshold to the (1 - ratio) quantile of the part confidence on the calibration slots
 * first_slot .. first_slot + n_slots - 1 (ratio 0: nothing exits early; 1: everything does).
 * A ratio outside [0, 1] (or NaN) or n_slots 0: MICROT_BAD_ARGUMENT.
 * `threshold` may be NULL. */
int microt_set_ratio(uint32_t task, float ratio, uint32_t first_slot, uint32_t n_slots, float *threshold);
int microt_threshold(uint32_t task, float *threshold);
/* Set the task's threshold directly, e.g. to one microt_set_ratio answered before (so that several
 * ratios can take turns without recomputing the quantile): 0 <= threshold <= MICROT_NEVER_EXIT
 * (else, NaN too, MICROT_BAD_ARGUMENT); an untrained task: MICROT_NOT_READY. */
int microt_set_threshold(uint32_t task, float threshold);

/* Staged inference of task `task` on the input (flags: 0 or MICROT_FORCE_FULL). Needs a trained task. */
int microt_infer(uint32_t task, uint32_t flags, microt_result_t *result);

/* A trained head: which 0 part, 1 full; weights n_classes x dim (row-major), then n_classes biases. */
int microt_head(uint32_t task, uint32_t which, const float **weights, const float **biases,
                uint32_t *n_classes, uint32_t *dim);

#ifdef __cplusplus
}
#endif

#endif
