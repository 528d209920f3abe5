/*
 * mdt_fixedpoint.h - the integer requantisation primitives shared by all kernels
 * (TFLite's MultiplyByQuantizedMultiplier, double-rounding variant, and gemmlowp's helpers).
 * Internal to the runtime. Signed overflow is avoided by doing wrapping steps in uint32_t,
 * which gives the same bits the reference gets on two's-complement machines.
 */
#ifndef MDT_FIXEDPOINT_H
#define MDT_FIXEDPOINT_H

#include <stdint.h>

static inline int32_t mdt_wrap_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t mdt_wrap_sub(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

static inline int32_t mdt_wrap_shl(int32_t x, int s)
{
    return (int32_t)((uint32_t)x << s);
}

/* High 32 bits of 2*a*b, rounded; INT32_MIN*INT32_MIN saturates. The division by 2^31
 * truncates toward zero in the reference; the biased shift below is the same and avoids a
 * 64-bit division call on Cortex-M. */
static inline int32_t mdt_srdhm(int32_t a, int32_t b)
{
    int64_t ab, nudged;
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudged = ab + (ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30)));
    if (nudged < 0) {
        nudged += (int64_t)0x7FFFFFFF;
    }
    return (int32_t)(nudged >> 31);
}

/* Rounding arithmetic right shift, ties away from zero. */
static inline int32_t mdt_rdbpot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t mdt_mbqm(int32_t x, int32_t multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return mdt_rdbpot(mdt_srdhm(mdt_wrap_shl(x, left), multiplier), right);
}

static inline int32_t mdt_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

#endif /* MDT_FIXEDPOINT_H */
