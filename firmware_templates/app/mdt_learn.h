/* The feature store, the per-task float32 linear heads, the on-device trainer and the
 * stage-decision threshold (docs/protocol.md, "Feature store and tasks", "Stage decision"). */
#ifndef MDT_LEARN_H
#define MDT_LEARN_H

#include <stdint.h>

#include "mdt_config.h"
#include "mdt_graphs.h"

#define MDT_PART_DIM MDT_PART_HEAD_OUTPUT0_SIZE
#define MDT_FULL_DIM MDT_REST_OUTPUT0_SIZE
#define MDT_NO_LABEL 0xFFu
#define MDT_NEVER_EXIT 2.0f /* above any softmax probability */
/* Training arguments beyond these are refused (BAD_ARGUMENT): epochs travel as u16 in the protocol,
 * and a learning rate above MDT_MAX_LR only ever overflows the float heads. */
#define MDT_MAX_EPOCHS 65535u
#define MDT_MAX_LR 1000.0f

typedef struct {
    uint16_t n_classes; /* 0: task not configured */
    uint8_t trained;
    float threshold;
    float part_w[MDT_MAX_CLASSES * MDT_PART_DIM];
    float part_b[MDT_MAX_CLASSES];
    float full_w[MDT_MAX_CLASSES * MDT_FULL_DIM];
    float full_b[MDT_MAX_CLASSES];
} mdt_task_t;

/* Forget every stored feature, label, head and threshold (the state at power-up). */
void mdt_learn_reset(void);
/* NULL when task >= MDT_MAX_TASKS. */
mdt_task_t *mdt_task(uint32_t task);
int mdt_store_put(uint32_t slot, const int8_t *part, const int8_t *full);
int mdt_set_labels(uint32_t task, uint32_t n_classes, uint32_t first_slot, const uint8_t *labels,
                   uint32_t count);
/* out: part_loss, part_acc, full_loss, full_acc. Refuses (MDT_BAD_ARGUMENT) epochs outside
 * 1..MDT_MAX_EPOCHS, an lr that is not finite or outside (0, MDT_MAX_LR], n_slots 0, and heads that
 * came out non-finite (the task is then left untrained): never a NaN with MDT_OK. */
int mdt_train(uint32_t task, uint32_t epochs, float lr, uint32_t first_slot, uint32_t n_slots,
              uint32_t seed, float out[4]);
int mdt_set_ratio(uint32_t task, float ratio, uint32_t first_slot, uint32_t n_slots, float *threshold);
/* Set a trained task's threshold directly (one that mdt_set_ratio answered earlier): 0 <= threshold
 * <= MDT_NEVER_EXIT, else (NaN too) MDT_BAD_ARGUMENT; an untrained task: MDT_NOT_READY. */
int mdt_set_threshold(uint32_t task, float threshold);
/* Prediction of a head on int8 features; *confidence = max softmax. */
uint8_t mdt_classify(const float *w, const float *b, uint32_t n_classes, uint32_t dim,
                     const int8_t *q, float scale, int32_t zero_point, float *confidence);

#endif
