/* mdt_softmax.c - SOFTMAX int8 -> int8, bit-exact with TFLite's reference_ops::Softmax for
 * quantized types: gemmlowp fixed-point exp on negative values (5 integer bits), a 12-integer-bit
 * accumulator and a Newton-Raphson reciprocal. */
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

/* gemmlowp SaturatingRoundingMultiplyByPOT with a positive exponent. */
static int32_t sat_shl(int32_t x, int e)
{
    const int32_t threshold = (int32_t)((1u << (31 - e)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return mdt_wrap_shl(x, e);
}

/* exp(a) for a in [-1/4, 0), Q0.31 in and out. */
static int32_t exp_quarter(int32_t a)
{
    const int32_t constant_term = 1895147668; /* exp(-1/8) */
    const int32_t one_third = 715827883;
    const int32_t x = mdt_wrap_add(a, 1 << 28);
    const int32_t x2 = mdt_srdhm(x, x);
    const int32_t x3 = mdt_srdhm(x2, x);
    const int32_t x4 = mdt_srdhm(x2, x2);
    const int32_t x4_over_4 = mdt_rdbpot(x4, 2);
    const int32_t poly = mdt_rdbpot(mdt_wrap_add(mdt_srdhm(mdt_wrap_add(x4_over_4, x3), one_third), x2), 1);
    return mdt_wrap_add(constant_term, mdt_srdhm(constant_term, mdt_wrap_add(x, poly)));
}

/* exp(a) for a <= 0 given with 5 integer bits (26 fractional); result Q0.31. */
static int32_t exp_negative(int32_t a)
{
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308,
                                      39332535,   720401,     242};
    const int32_t quarter = 1 << 24;
    const int32_t a_mod_q = mdt_wrap_sub(a & (quarter - 1), quarter);
    const int32_t remainder = mdt_wrap_sub(a_mod_q, a);
    int32_t result = exp_quarter(sat_shl(a_mod_q, 5));
    int k;
    for (k = 0; k < 7; ++k) {
        if (remainder & (1 << (24 + k))) {
            result = mdt_srdhm(result, barrel[k]);
        }
    }
    return a == 0 ? INT32_MAX : result;
}

static int count_leading_zeros(uint32_t x)
{
    int n = 0;
    if (x == 0) {
        return 32;
    }
    while (!(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
}

/* 1 / (1 + a) for a in [0, 1), Q0.31 in and out (gemmlowp one_over_one_plus_x_for_x_in_0_1). */
static int32_t one_over_one_plus_x(int32_t a)
{
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_den = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    const int32_t c48_17 = 1515870810;
    const int32_t cneg32_17 = -1010580540;
    int32_t x = mdt_wrap_add(c48_17, mdt_srdhm(half_den, cneg32_17));
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus = mdt_wrap_sub(1 << 29, mdt_srdhm(half_den, x));
        x = mdt_wrap_add(x, sat_shl(mdt_srdhm(x, one_minus), 2));
    }
    return sat_shl(x, 1);
}

void mdt_softmax(const mdt_softmax_params *p, const int8_t *input, int8_t *output)
{
    int32_t i, c;
    for (i = 0; i < p->outer; ++i) {
        const int8_t *in = input + i * p->depth;
        int8_t *out = output + i * p->depth;
        int32_t max_in_row = -128;
        int32_t sum = 0;
        int32_t headroom, bits_over_unit, scale;
        for (c = 0; c < p->depth; ++c) {
            max_in_row = in[c] > max_in_row ? in[c] : max_in_row;
        }
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)in[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t scaled = mdt_srdhm(mdt_wrap_shl(diff, p->input_left_shift), p->input_multiplier);
                sum = mdt_wrap_add(sum, mdt_rdbpot(exp_negative(scaled), 12));
            }
        }
        headroom = count_leading_zeros((uint32_t)sum);
        bits_over_unit = 12 - headroom;
        scale = one_over_one_plus_x((int32_t)(((uint32_t)sum << headroom) - (1u << 31)));
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)in[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t scaled = mdt_srdhm(mdt_wrap_shl(diff, p->input_left_shift), p->input_multiplier);
                const int32_t e = exp_negative(scaled);
                const int32_t unsat = mdt_rdbpot(mdt_srdhm(scale, e), bits_over_unit + 31 - 8);
                out[c] = (int8_t)mdt_clamp(unsat - 128, -128, 127);
            } else {
                out[c] = -128;
            }
        }
    }
}
