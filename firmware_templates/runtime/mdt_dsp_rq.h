/*
 * mdt_dsp_rq.h - the fast requantisation the DSP kernels share (internal to the runtime): TFLite's
 * MultiplyByQuantizedMultiplier (double rounding) + output offset + clamp in five instructions and a
 * saturate, for a non-negative multiplier and a right shift of 1..31 (one add more above 23).
 *
 * Why it is exact: for m >= 0, srdhm(x, m) == floor((x*m + 2^30) / 2^31) for every x (the
 * reference's negative nudge and truncation toward zero give the same floor), and the rounding
 * right shift by e (ties away from zero) folds into one 64-bit sum:
 *   floor((x*m + 2^30 + 2^(30+e) - [x<0] 2^31) / 2^(31+e)),
 * where [x<0] stands for [srdhm(x, m) < 0] (they differ only where both give 0). The output offset
 * is added as off * 2^(31+e) to the same sum (exact: floor((v + k 2^n) / 2^n) == floor(v / 2^n) + k),
 * while the high word cannot overflow (e <= 23); above, the offset is added after the shift.
 */
#ifndef MDT_DSP_RQ_H
#define MDT_DSP_RQ_H

#include <stdint.h>
#if defined(__arm__)
#include <arm_acle.h>
#endif

/* One channel's constants: the 64-bit addend k (2^30 + 2^(30+e), + off 2^(31+e) when folded) as two
 * words, the multiplier, shift e - 1 applied to the high word, and the offset still to add after it
 * (0 when folded; folding needs e <= MDT_RQF_FOLD_MAX so the high word cannot overflow). */
typedef struct {
    uint32_t k_lo;
    int32_t k_hi, m, sh, post;
} mdt_rqf;

#define MDT_RQF_FOLD_MAX 23

/* 1 when (mult, shift) is within the fast form: mult >= 0 and a right shift of 1..31, or mult == 0
 * (any shift: the product is 0, which the form with e = 1 gives exactly). */
static inline int mdt_rqf_ok(int32_t mult, int32_t shift)
{
    return mult == 0 || (mult > 0 && shift <= -1 && shift >= -31);
}

/* k's low word, from sh = e - 1 (what mdt_rqf and chan_t keep): 2^30, and 2^31 for a right shift e of 1
 * (the 2^(30+e) of a larger e is in k_hi) */
static inline uint32_t mdt_rqf_klo(int32_t sh)
{
    return sh == 0 ? 0xC0000000u : 0x40000000u;
}

static inline mdt_rqf mdt_rqf_make(int32_t mult, int32_t shift, int32_t out_off)
{
    mdt_rqf r;
    /* e = 1 also for channels outside the form: no undefined shifts below (callers test _ok);
     * written to compile without branches (it runs once per channel per call) */
    const uint32_t e = mult > 0 && (uint32_t)(-shift - 1) < 31u ? (uint32_t)-shift : 1u;
    const uint32_t fold_mask = e <= MDT_RQF_FOLD_MAX ? 0xFFFFFFFFu : 0u;
    const uint32_t off_hi = (uint32_t)out_off << (e - 1);
    r.m = mult;
    r.sh = (int32_t)e - 1;
    /* 2^30 and (e == 1) 2^31 in the low word; 2^(30+e) (e >= 2) and off 2^(31+e) in the high one */
    r.k_lo = mdt_rqf_klo(r.sh);
    r.k_hi = (int32_t)(((1u << e) >> 2) + (off_hi & fold_mask));
    r.post = (int32_t)((uint32_t)out_off & ~fold_mask);
    return r;
}

/* k from its two words (mdt_rqf, and mdt_dsp_chan.h's chan_t, which keeps k_hi and sh only) */
static inline int64_t mdt_rqf_k64(int32_t k_hi, uint32_t k_lo)
{
    return (int64_t)(((uint64_t)(uint32_t)k_hi << 32) | k_lo);
}

static inline int64_t mdt_rqf_k(const mdt_rqf *r)
{
    return mdt_rqf_k64(r->k_hi, r->k_lo);
}

static inline int32_t mdt_rqf_apply(int64_t k, int32_t m, int32_t sh, int32_t acc)
{
    k -= (int64_t)((uint32_t)acc & 0x80000000u);
    k += (int64_t)acc * m;
    return (int32_t)(k >> 32) >> sh;
}

/* Any shift, for m >= 0 and no offset (an ADD operand's rescaling with the ADD's left_shift, the
 * first-round depthwise path's channels): MultiplyByQuantizedMultiplier(shl(x, left), m, -e) with
 * `left` the left_shift and a positive TFLite shift together (the reference's wrapping shl), then for a
 * right shift e of 1..31 the folded sum of mdt_rqf_apply (post 0), for e == 0 (`plain`) srdhm alone,
 * floor((x m + 2^30) / 2^31) for m >= 0 (this file's first identity). */
typedef struct {
    int64_t k;
    int32_t m, sh, left, plain;
} mdt_rqs;

/* 1 where (mult, shift, left_shift) is within mdt_rqs: mult >= 0, both shifts below 32 */
static inline int mdt_rqs_ok(int32_t mult, int32_t shift, int32_t left_shift)
{
    return mult >= 0 && shift >= -31 && left_shift + (shift > 0 ? shift : 0) <= 31;
}

static inline mdt_rqs mdt_rqs_make(int32_t mult, int32_t shift, int32_t left_shift)
{
    const int32_t right = shift < 0 ? -shift : 0;
    const mdt_rqf f = mdt_rqf_make(mult, -(right > 0 ? right : 1), 0);
    mdt_rqs r;
    r.k = right > 0 ? mdt_rqf_k(&f) : ((int64_t)1 << 30);
    r.m = mult;
    r.sh = f.sh;
    r.left = left_shift + (shift > 0 ? shift : 0);
    r.plain = right == 0;
    return r;
}

/* `plain` a constant at a call site where the form is fixed (no branch per element) */
static inline __attribute__((always_inline)) int32_t mdt_rqs_apply(int64_t k, int32_t m, int32_t sh, int32_t left,
                                                                   int plain, int32_t v)
{
    const int32_t x = (int32_t)((uint32_t)v << left);
    if (plain) {
        return (int32_t)(((int64_t)x * m + k) >> 31);
    }
    return mdt_rqf_apply(k, m, sh, x);
}

/* Clamp to [lo, hi]; `full` (lo == -128 and hi == 127, a compile-time constant at each call site)
 * makes it one SSAT. */
static inline int32_t mdt_rqf_clamp(int32_t v, int full, int32_t lo, int32_t hi)
{
#if defined(__arm__)
    if (full) {
        return __ssat(v, 8);
    }
#else
    (void)full; /* the host (mdt_dsp_chan.h's test): the same clamp, without the instruction */
#endif
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

#endif /* MDT_DSP_RQ_H */
