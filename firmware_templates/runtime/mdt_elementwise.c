/* mdt_elementwise.c - MUL int8 (broadcasting), table lookups (LOGISTIC, HARD_SWISH) and the
 * float32 <-> int8 QUANTIZE / DEQUANTIZE at the edges of float-I/O graphs. Every output element
 * depends only on the same element of each non-broadcast input, so output may equal an input. */
#include <string.h>

#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

void mdt_mul(const mdt_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    int32_t d0, d1, d2, d3;
    for (d0 = 0; d0 < p->dims[0]; ++d0) {
        for (d1 = 0; d1 < p->dims[1]; ++d1) {
            for (d2 = 0; d2 < p->dims[2]; ++d2) {
                const int8_t *a = input1 + d0 * p->stride1[0] + d1 * p->stride1[1] + d2 * p->stride1[2];
                const int8_t *b = input2 + d0 * p->stride2[0] + d1 * p->stride2[1] + d2 * p->stride2[2];
                for (d3 = 0; d3 < p->dims[3]; ++d3) {
                    const int32_t x = (int32_t)a[d3 * p->stride1[3]] + p->input1_offset;
                    const int32_t y = (int32_t)b[d3 * p->stride2[3]] + p->input2_offset;
                    const int32_t out = mdt_mbqm(x * y, p->output_multiplier, p->output_shift) +
                                        p->output_offset;
                    *output++ = (int8_t)mdt_clamp(out, p->act_min, p->act_max);
                }
            }
        }
    }
}

void mdt_lookup(const mdt_lut_params *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        output[i] = p->table[(uint8_t)input[i]];
    }
}

/* roundf without libm: truncate, then step away from zero on a half or more (x - trunc(x) is
 * exact for |x| < 2^23; larger values are already integers). */
static int32_t round_half_away(float x)
{
    int32_t t;
    float frac;
    if (!(x == x)) {
        return -1000; /* NaN: clamps to the lowest code */
    }
    if (x > 1000.0f) {
        return 1000; /* anything this large clamps to 127 after the zero point is added */
    }
    if (x < -1000.0f) {
        return -1000;
    }
    t = (int32_t)x;
    frac = x - (float)t;
    if (frac >= 0.5f) {
        ++t;
    } else if (frac <= -0.5f) {
        --t;
    }
    return t;
}

void mdt_quantize_f32(const mdt_affine_params *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        float v;
        memcpy(&v, input + 4 * i, sizeof v); /* the arena is int8_t; no type-punned loads */
        output[i] = (int8_t)mdt_clamp(round_half_away(v / p->scale) + p->zero_point, -128, 127);
    }
}

void mdt_dequantize_f32(const mdt_affine_params *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    /* backwards: output may start at input (the float tensor is 4x larger and overwrites it) */
    for (i = p->size - 1; i >= 0; --i) {
        /* (float)(double(scale) * n) in the reference: the product is exact in double, so one
         * float multiply rounds to the same value */
        const float v = p->scale * (float)((int32_t)input[i] - p->zero_point);
        memcpy(output + 4 * i, &v, sizeof v);
    }
}
