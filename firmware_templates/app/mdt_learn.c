/* Feature store, trainer and stage-decision threshold. All storage is static and sized by
 * mdt_config.h (MDT_MAX_SLOTS, MDT_MAX_TASKS, MDT_MAX_CLASSES): no heap. */
#include "mdt_learn.h"

#include <math.h>
#include <string.h>

#include "mdt_protocol.h"

#if MDT_MAX_SLOTS > 65535
#error "MDT_MAX_SLOTS must fit the uint16_t shuffle order (and keeps sums of 128^2 within int32_t)"
#endif
#if MDT_MAX_CLASSES > 255
#error "labels travel as u8"
#endif

#define MDT_MAX_DIM (MDT_PART_DIM > MDT_FULL_DIM ? MDT_PART_DIM : MDT_FULL_DIM)
/* Added to each feature's variance (in int8 steps squared) before standardising: a feature that moves
 * by less than a quantisation step between images is int8 noise, not to be blown up to unit scale. */
#define MDT_STD_FLOOR 1.0f

static int8_t store_part[MDT_MAX_SLOTS][MDT_PART_DIM];
static int8_t store_full[MDT_MAX_SLOTS][MDT_FULL_DIM];
static uint8_t slot_used[MDT_MAX_SLOTS];
static uint8_t labels[MDT_MAX_TASKS][MDT_MAX_SLOTS];
static mdt_task_t tasks[MDT_MAX_TASKS];
static uint16_t order[MDT_MAX_SLOTS];
static float scratch_conf[MDT_MAX_SLOTS];
static float x_buf[MDT_MAX_DIM];
static float p_buf[MDT_MAX_CLASSES];
/* Per-feature standardisation of the training slots: mean and 1 / sqrt(var + MDT_STD_FLOOR), in int8
 * steps (scale and zero point cancel); used while training, then folded into the heads. */
static float part_mean[MDT_PART_DIM], part_inv_std[MDT_PART_DIM];
static float full_mean[MDT_FULL_DIM], full_inv_std[MDT_FULL_DIM];
static uint8_t labels_init;

static void init_labels(void)
{
    if (!labels_init) {
        memset(labels, MDT_NO_LABEL, sizeof(labels));
        labels_init = 1;
    }
}

void mdt_learn_reset(void)
{
    memset(store_part, 0, sizeof(store_part));
    memset(store_full, 0, sizeof(store_full));
    memset(slot_used, 0, sizeof(slot_used));
    memset(tasks, 0, sizeof(tasks));
    labels_init = 0;
    init_labels();
}

mdt_task_t *mdt_task(uint32_t task)
{
    return task < MDT_MAX_TASKS ? &tasks[task] : 0;
}

int mdt_store_put(uint32_t slot, const int8_t *part, const int8_t *full)
{
    if (slot >= MDT_MAX_SLOTS) {
        return MDT_OUT_OF_RANGE;
    }
    memcpy(store_part[slot], part, MDT_PART_DIM);
    memcpy(store_full[slot], full, MDT_FULL_DIM);
    slot_used[slot] = 1;
    return MDT_OK;
}

static int range_ok(uint32_t first, uint32_t n)
{
    return first < MDT_MAX_SLOTS && n <= MDT_MAX_SLOTS - first;
}

int mdt_set_labels(uint32_t task, uint32_t n_classes, uint32_t first_slot, const uint8_t *lab,
                   uint32_t count)
{
    uint32_t i;
    mdt_task_t *t = mdt_task(task);
    init_labels();
    if (t == 0 || n_classes < 2 || n_classes > MDT_MAX_CLASSES || (lab == 0 && count > 0)) {
        return MDT_BAD_ARGUMENT;
    }
    if (!range_ok(first_slot, count)) {
        return MDT_OUT_OF_RANGE;
    }
    for (i = 0; i < count; i++) {
        if (lab[i] >= n_classes) {
            return MDT_BAD_ARGUMENT;
        }
    }
    if (t->n_classes != n_classes) {
        memset(t, 0, sizeof(*t));
        memset(labels[task], MDT_NO_LABEL, sizeof(labels[task]));
        t->n_classes = (uint16_t)n_classes;
        t->threshold = MDT_NEVER_EXIT;
    }
    if (count > 0) {
        memcpy(&labels[task][first_slot], lab, count);
    }
    return MDT_OK;
}

static void dequantise(const int8_t *q, uint32_t dim, float scale, int32_t zero_point)
{
    uint32_t i;
    for (i = 0; i < dim; i++) {
        x_buf[i] = scale * (float)((int32_t)q[i] - zero_point);
    }
}

/* Softmax of the head on x_buf into p_buf; returns argmax, *loss = -ln p[y] when y is valid. */
static uint8_t forward(const float *w, const float *b, uint32_t n_classes, uint32_t dim, uint32_t y,
                       float *loss, float *confidence)
{
    uint32_t c, i;
    uint8_t best = 0;
    float m, s = 0.0f, ly = 0.0f;
    for (c = 0; c < n_classes; c++) {
        const float *row = &w[c * dim];
        float acc = b[c];
        for (i = 0; i < dim; i++) {
            acc += row[i] * x_buf[i];
        }
        p_buf[c] = acc;
        if (acc > p_buf[best]) {
            best = (uint8_t)c;
        }
    }
    m = p_buf[best];
    if (y < n_classes) {
        ly = p_buf[y] - m; /* kept in the log domain: exp() of a far-off logit underflows */
    }
    for (c = 0; c < n_classes; c++) {
        p_buf[c] = expf(p_buf[c] - m);
        s += p_buf[c];
    }
    for (c = 0; c < n_classes; c++) {
        p_buf[c] /= s;
    }
    if (confidence) {
        *confidence = 1.0f / s;
    }
    if (loss && y < n_classes) {
        *loss = logf(s) - ly;
    }
    return best;
}

uint8_t mdt_classify(const float *w, const float *b, uint32_t n_classes, uint32_t dim,
                     const int8_t *q, float scale, int32_t zero_point, float *confidence)
{
    dequantise(q, dim, scale, zero_point);
    return forward(w, b, n_classes, dim, MDT_MAX_CLASSES, 0, confidence);
}

/* Mean and inverse standard deviation of each feature over rows [0, n) of an int8 store (row length
 * dim), from exact integer sums: the host's trainer (evaluate/host_train.py) computes the same floats. */
static void feature_stats(const int8_t *rows, uint32_t dim, uint32_t n, float *mean, float *inv_std)
{
    uint32_t i, k;
    for (i = 0; i < dim; i++) {
        int32_t s1 = 0, s2 = 0;
        int64_t spread;
        for (k = 0; k < n; k++) {
            int32_t q = rows[k * dim + i];
            s1 += q;
            s2 += q * q;
        }
        spread = (int64_t)n * s2 - (int64_t)s1 * s1; /* n^2 * variance, exact */
        mean[i] = (float)s1 / (float)n;
        inv_std[i] = 1.0f / sqrtf((float)spread / (float)n / (float)n + MDT_STD_FLOOR);
    }
}

static void standardise(const int8_t *q, uint32_t dim, const float *mean, const float *inv_std)
{
    uint32_t i;
    for (i = 0; i < dim; i++) {
        x_buf[i] = ((float)q[i] - mean[i]) * inv_std[i];
    }
}

/* A head trained on standardised features as a head on dequantised ones (x = scale * (q - zp), so
 * q = x / scale + zp): w' = w * inv_std / scale, b' = b + sum_i w_i * inv_std_i * (zp - mean_i). The
 * kept head, mdt_classify and READ_HEAD stay plain linear heads on the dequantised features. */
static void fold_standardisation(float *w, float *b, uint32_t n_classes, uint32_t dim, const float *mean,
                                 const float *inv_std, float scale, int32_t zero_point)
{
    uint32_t c, i;
    for (c = 0; c < n_classes; c++) {
        float *row = &w[c * dim];
        float acc = b[c];
        for (i = 0; i < dim; i++) {
            float wi = row[i] * inv_std[i];
            acc += wi * ((float)zero_point - mean[i]);
            row[i] = wi / scale;
        }
        b[c] = acc;
    }
}

static void sgd_step(float *w, float *b, uint32_t n_classes, uint32_t dim, uint32_t y, float lr)
{
    uint32_t c, i;
    forward(w, b, n_classes, dim, y, 0, 0);
    for (c = 0; c < n_classes; c++) {
        float g = lr * (p_buf[c] - (c == y ? 1.0f : 0.0f));
        float *row = &w[c * dim];
        for (i = 0; i < dim; i++) {
            row[i] -= g * x_buf[i];
        }
        b[c] -= g;
    }
}

static uint32_t xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

static int slots_ready(uint32_t task, uint32_t first, uint32_t n)
{
    uint32_t i;
    for (i = first; i < first + n; i++) {
        if (!slot_used[i] || labels[task][i] == MDT_NO_LABEL) {
            return 0;
        }
    }
    return 1;
}

static void evaluate(const mdt_task_t *t, uint32_t task, uint32_t first, uint32_t n, int full,
                     float *loss_out, float *acc_out)
{
    uint32_t i, correct = 0;
    float total = 0.0f;
    for (i = first; i < first + n; i++) {
        float loss = 0.0f;
        uint8_t pred;
        uint32_t y = labels[task][i];
        if (full) {
            dequantise(store_full[i], MDT_FULL_DIM, MDT_REST_OUTPUT0_SCALE, MDT_REST_OUTPUT0_ZERO_POINT);
            pred = forward(t->full_w, t->full_b, t->n_classes, MDT_FULL_DIM, y, &loss, 0);
        } else {
            dequantise(store_part[i], MDT_PART_DIM, MDT_PART_HEAD_OUTPUT0_SCALE,
                       MDT_PART_HEAD_OUTPUT0_ZERO_POINT);
            pred = forward(t->part_w, t->part_b, t->n_classes, MDT_PART_DIM, y, &loss, 0);
        }
        total += loss;
        correct += (pred == y) ? 1u : 0u;
    }
    *loss_out = total / (float)n;
    *acc_out = (float)correct / (float)n;
}

static int all_finite(const float *v, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        if (!isfinite(v[i])) {
            return 0;
        }
    }
    return 1;
}

static int heads_finite(const mdt_task_t *t)
{
    uint32_t n = t->n_classes;
    return all_finite(t->part_w, n * MDT_PART_DIM) && all_finite(t->part_b, n) &&
           all_finite(t->full_w, n * MDT_FULL_DIM) && all_finite(t->full_b, n);
}

int mdt_train(uint32_t task, uint32_t epochs, float lr, uint32_t first_slot, uint32_t n_slots,
              uint32_t seed, float out[4])
{
    uint32_t e, i, state = seed ? seed : 0x9E3779B9u;
    mdt_task_t *t = mdt_task(task);
    init_labels();
    /* !(lr > 0) also refuses NaN; isfinite() refuses inf, whatever the comparison said. */
    if (t == 0 || epochs == 0 || epochs > MDT_MAX_EPOCHS || n_slots == 0 || !(lr > 0.0f) || !isfinite(lr) ||
        lr > MDT_MAX_LR) {
        return MDT_BAD_ARGUMENT;
    }
    if (!range_ok(first_slot, n_slots)) {
        return MDT_OUT_OF_RANGE;
    }
    if (t->n_classes == 0 || !slots_ready(task, first_slot, n_slots)) {
        return MDT_NOT_READY;
    }
    memset(t->part_w, 0, sizeof(t->part_w));
    memset(t->part_b, 0, sizeof(t->part_b));
    memset(t->full_w, 0, sizeof(t->full_w));
    memset(t->full_b, 0, sizeof(t->full_b));
    for (i = 0; i < n_slots; i++) {
        order[i] = (uint16_t)(first_slot + i);
    }
    feature_stats(store_part[first_slot], MDT_PART_DIM, n_slots, part_mean, part_inv_std);
    feature_stats(store_full[first_slot], MDT_FULL_DIM, n_slots, full_mean, full_inv_std);
    for (e = 0; e < epochs; e++) {
        for (i = n_slots - 1; i > 0; i--) {
            uint32_t j = xorshift32(&state) % (i + 1);
            uint16_t tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        for (i = 0; i < n_slots; i++) {
            uint32_t s = order[i];
            uint32_t y = labels[task][s];
            standardise(store_part[s], MDT_PART_DIM, part_mean, part_inv_std);
            sgd_step(t->part_w, t->part_b, t->n_classes, MDT_PART_DIM, y, lr);
            standardise(store_full[s], MDT_FULL_DIM, full_mean, full_inv_std);
            sgd_step(t->full_w, t->full_b, t->n_classes, MDT_FULL_DIM, y, lr);
        }
    }
    fold_standardisation(t->part_w, t->part_b, t->n_classes, MDT_PART_DIM, part_mean, part_inv_std,
                         MDT_PART_HEAD_OUTPUT0_SCALE, MDT_PART_HEAD_OUTPUT0_ZERO_POINT);
    fold_standardisation(t->full_w, t->full_b, t->n_classes, MDT_FULL_DIM, full_mean, full_inv_std,
                         MDT_REST_OUTPUT0_SCALE, MDT_REST_OUTPUT0_ZERO_POINT);
    t->threshold = MDT_NEVER_EXIT; /* a threshold belongs to the heads it was computed with */
    evaluate(t, task, first_slot, n_slots, 0, &out[0], &out[1]);
    evaluate(t, task, first_slot, n_slots, 1, &out[2], &out[3]);
    if (!heads_finite(t) || !isfinite(out[0]) || !isfinite(out[2])) {
        /* The learning rate blew the heads up (inf / NaN): leave the task untrained, refuse. */
        t->trained = 0;
        return MDT_BAD_ARGUMENT;
    }
    t->trained = 1;
    return MDT_OK;
}

/* Heapsort: O(n log n), no recursion, in place. */
static void sift_down(float *a, uint32_t start, uint32_t end)
{
    uint32_t root = start;
    while (2u * root + 1u < end) {
        uint32_t child = 2u * root + 1u;
        if (child + 1u < end && a[child] < a[child + 1u]) {
            child++;
        }
        if (a[root] < a[child]) {
            float tmp = a[root];
            a[root] = a[child];
            a[child] = tmp;
            root = child;
        } else {
            return;
        }
    }
}

static void sort_floats(float *a, uint32_t n)
{
    uint32_t i, end;
    if (n < 2) {
        return;
    }
    for (i = n / 2; i-- > 0;) {
        sift_down(a, i, n);
    }
    for (end = n - 1; end > 0; end--) {
        float tmp = a[0];
        a[0] = a[end];
        a[end] = tmp;
        sift_down(a, 0, end);
    }
}

int mdt_set_ratio(uint32_t task, float ratio, uint32_t first_slot, uint32_t n_slots, float *threshold)
{
    uint32_t i, k;
    mdt_task_t *t = mdt_task(task);
    /* The comparisons are false for NaN: a NaN ratio is refused too. */
    if (t == 0 || !(ratio >= 0.0f && ratio <= 1.0f) || n_slots == 0 || threshold == 0) {
        return MDT_BAD_ARGUMENT;
    }
    if (!range_ok(first_slot, n_slots)) {
        return MDT_OUT_OF_RANGE;
    }
    if (!t->trained) {
        return MDT_NOT_READY;
    }
    for (i = 0; i < n_slots; i++) {
        if (!slot_used[first_slot + i]) {
            return MDT_NOT_READY;
        }
    }
    if (ratio == 0.0f) {
        t->threshold = MDT_NEVER_EXIT;
    } else {
        for (i = 0; i < n_slots; i++) {
            (void)mdt_classify(t->part_w, t->part_b, t->n_classes, MDT_PART_DIM, store_part[first_slot + i],
                               MDT_PART_HEAD_OUTPUT0_SCALE, MDT_PART_HEAD_OUTPUT0_ZERO_POINT,
                               &scratch_conf[i]);
        }
        sort_floats(scratch_conf, n_slots);
        k = (uint32_t)((1.0f - ratio) * (float)(n_slots - 1u));
        if (k >= n_slots || !isfinite(scratch_conf[k])) {
            return MDT_NOT_READY; /* cannot happen with finite heads (mdt_train refuses others) */
        }
        t->threshold = scratch_conf[k];
    }
    *threshold = t->threshold;
    return MDT_OK;
}

int mdt_set_threshold(uint32_t task, float threshold)
{
    mdt_task_t *t = mdt_task(task);
    if (t == 0 || !(threshold >= 0.0f && threshold <= MDT_NEVER_EXIT)) {
        return MDT_BAD_ARGUMENT;
    }
    if (!t->trained) {
        return MDT_NOT_READY;
    }
    t->threshold = threshold;
    return MDT_OK;
}
