/*
 * mdt_dsp_add.h - the ADD element loop over operand tables, in assembly where the output's
 * requantisation allows, else in C (internal to the runtime; used by mdt_dsp_add.c's dense ADD and
 * mdt_fused.c's ADD half, DSP builds only).
 *
 * Per element: the two operands' rescaled values from their tables (indexed by the int8's byte), their
 * sum s, and the output requantisation of mdt_dsp_rq.h in its folded form with k_lo = 2^30 (a right
 * shift e of 2..23, offset folded: post 0): hi:lo = k - (s & 2^31) + s * m, (int32)hi >> sh, SSAT to
 * int8, then max(lo) for a clamp [lo, 127] (ReLU). k - (s & 2^31) with k_lo = 2^30 is one RSBS on the
 * low word (2^30 - {0, 2^31}) and an SBC of the borrow from k_hi, so k_lo never takes a register.
 * Exact: the same integer steps as mdt_rqf_apply and mdt_rqf_clamp (mdt_dsp_rq.h), 13 instructions an
 * element (16 with the ReLU's max) where gcc's C loop spilled to the stack (the loop keeps 12 values
 * live).
 */
#ifndef MDT_DSP_ADD_H
#define MDT_DSP_ADD_H

#include <stdint.h>

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"

/* 1 where the asm loop below takes the output's requantisation: a folded form with k_lo = 2^30 and no
 * post offset, an upper clamp of 127 (the lower one any) */
static inline int mdt_add_asm_ok(const mdt_rqf *r, int32_t act_max)
{
    return r->k_lo == 0x40000000u && r->post == 0 && act_max == 127;
}

/* out[j] = max(ssat8(rq(t1[(uint8_t)a[j]] + t2[(uint8_t)b[j]])), lo) for j < n (n >= 1); `clamp_lo`
 * (lo > -128) a constant at each call site: the assembler keeps the ReLU's max only where it is set
 * (.if), and `lo` may then be an immediate the text never names, so the plain loop takes no register
 * for it (the loop without the clamp is the same 13 instructions it was as a statement of its own).
 * out may be a or b (each element is read before its output is written). */
static inline __attribute__((always_inline)) void mdt_add_tables_asm(const int8_t *a, const int8_t *b, int8_t *out,
                                                                     int32_t n, const int32_t *t1,
                                                                     const int32_t *t2, const mdt_rqf *r,
                                                                     int32_t lo, const int clamp_lo)
{
    int32_t x, y, h;
    const int32_t k_hi = r->k_hi, m = r->m, sh = r->sh;
    __asm__ volatile("1:\n\t"
                     "ldrb %[x], [%[a]], #1\n\t"
                     "ldrb %[y], [%[b]], #1\n\t"
                     "ldr %[x], [%[t1], %[x], lsl #2]\n\t"
                     "ldr %[y], [%[t2], %[y], lsl #2]\n\t"
                     "add %[y], %[x], %[y]\n\t"
                     "and %[x], %[y], #0x80000000\n\t"
                     "rsbs %[x], %[x], #0x40000000\n\t"
                     "sbc %[h], %[khi], #0\n\t"
                     "smlal %[x], %[h], %[y], %[m]\n\t"
                     "asr %[h], %[h], %[sh]\n\t"
                     "ssat %[h], #8, %[h]\n\t"
                     ".if %c[clamp]\n\t"
                     "cmp %[h], %[lo]\n\t"
                     "it lt\n\t"
                     "movlt %[h], %[lo]\n\t"
                     ".endif\n\t"
                     "strb %[h], [%[out]], #1\n\t"
                     "subs %[n], %[n], #1\n\t"
                     "bne 1b"
                     : [a] "+r"(a), [b] "+r"(b), [out] "+r"(out), [n] "+r"(n), [x] "=&r"(x), [y] "=&r"(y),
                       [h] "=&r"(h)
                     : [t1] "r"(t1), [t2] "r"(t2), [khi] "r"(k_hi), [m] "r"(m), [sh] "r"(sh), [lo] "ri"(lo),
                       [clamp] "i"(clamp_lo)
                     : "cc", "memory");
}

/* The same in C for the outputs the asm loop does not take (an offset after the shift, an upper clamp
 * below 127); `full` and `has_post` constants at each call site. */
static inline __attribute__((always_inline)) void mdt_add_tables_c(const int8_t *a, const int8_t *b, int8_t *out,
                                                                   int32_t n, const int32_t *t1, const int32_t *t2,
                                                                   const mdt_rqf *r, int32_t lo, int32_t hi, int full,
                                                                   int has_post)
{
    const int64_t k = mdt_rqf_k(r);
    const int32_t m = r->m, sh = r->sh, post = r->post;
    const int8_t *const end = a + n;
    while (a < end) {
        const int32_t s = mdt_wrap_add(t1[(uint8_t)*a++], t2[(uint8_t)*b++]);
        *out++ = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, s) + (has_post ? post : 0), full, lo, hi);
    }
}

/* A dense ADD of n elements from the operand tables t1, t2 (each operand's rescaling of the 256 int8
 * values) and the output's folded requantisation r, clamped to [lo, hi]: the one element loop of the
 * plain ADD (mdt_dsp_add.c) and the fused conv + ADD (mdt_fused.c). out may be a or b. */
static inline __attribute__((always_inline)) void mdt_add_tables(const int8_t *a, const int8_t *b, int8_t *out,
                                                                 int32_t n, const int32_t *t1, const int32_t *t2,
                                                                 const mdt_rqf *r, int32_t lo, int32_t hi)
{
    if (n > 0 && mdt_add_asm_ok(r, hi)) {
        if (lo == -128) {
            mdt_add_tables_asm(a, b, out, n, t1, t2, r, -128, 0);
        } else {
            mdt_add_tables_asm(a, b, out, n, t1, t2, r, lo, 1);
        }
    } else if (r->post != 0) {
        mdt_add_tables_c(a, b, out, n, t1, t2, r, lo, hi, 0, 1);
    } else if (lo == -128 && hi == 127) {
        mdt_add_tables_c(a, b, out, n, t1, t2, r, -128, 127, 1, 0);
    } else {
        mdt_add_tables_c(a, b, out, n, t1, t2, r, lo, hi, 0, 0);
    }
}

#endif /* MDT_DSP_ADD_H */
