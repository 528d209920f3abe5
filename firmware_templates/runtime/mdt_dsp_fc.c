/*
 * mdt_dsp_fc.c - Cortex-M4 fast path of FULLY_CONNECTED int8, bit-exact with TFLite's reference
 * FullyConnected / FullyConnectedPerChannel.
 *
 * The input row is widened once (offset added, SXTAB16 lanes); then three output rows at a time run
 * one asm loop: per group of 4 inputs one LDRD of the widened input shared by the three rows, and
 * per row a weight word, two SXTB16 and two SMLAD: 12 MACs in 18 instructions, weights read once.
 * Requantisation is the folded form of mdt_dsp_rq.h (the reference for channels outside it).
 */
#include "mdt_dsp.h"

#if MDT_DSP

#include <string.h>

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"
#include "mdt_dsp_intrin.h"

/* Three rows' sums over ng >= 1 groups (w0..w2 are the rows' first weights); four would need 14
 * registers, more than gcc can give an asm statement here. */
static inline void rows3(const uint32_t *x, const int8_t *w0, const int8_t *w1, const int8_t *w2, int32_t ng,
                         int32_t *a)
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2];
    int32_t wa, wb, x0, x1;
    __asm__ volatile("1:\n\t"
                     "ldrd %[x0], %[x1], [%[x]], #8\n\t"
                     "ldr %[wb], [%[w0]], #4\n\t"
                     "sxtb16 %[wa], %[wb]\n\t"
                     "sxtb16 %[wb], %[wb], ror #8\n\t"
                     "smlad %[a0], %[wa], %[x0], %[a0]\n\t"
                     "smlad %[a0], %[wb], %[x1], %[a0]\n\t"
                     "ldr %[wb], [%[w1]], #4\n\t"
                     "sxtb16 %[wa], %[wb]\n\t"
                     "sxtb16 %[wb], %[wb], ror #8\n\t"
                     "smlad %[a1], %[wa], %[x0], %[a1]\n\t"
                     "smlad %[a1], %[wb], %[x1], %[a1]\n\t"
                     "ldr %[wb], [%[w2]], #4\n\t"
                     "sxtb16 %[wa], %[wb]\n\t"
                     "sxtb16 %[wb], %[wb], ror #8\n\t"
                     "smlad %[a2], %[wa], %[x0], %[a2]\n\t"
                     "smlad %[a2], %[wb], %[x1], %[a2]\n\t"
                     "subs %[n], %[n], #1\n\t"
                     "bne 1b"
                     : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2),
                       [x] "+r"(x), [n] "+r"(ng), [wa] "=&r"(wa), [wb] "=&r"(wb), [x0] "=&r"(x0), [x1] "=&r"(x1)
                     :
                     : "cc", "memory");
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
}

/* One row's sums over ng >= 1 groups. */
static inline int32_t row1(const uint32_t *x, const int8_t *w, int32_t ng, int32_t a)
{
    int32_t g;
    for (g = 0; g < ng; ++g) {
        const int32_t v = ld32(w + 4 * g);
        a = __smlad(__sxtb16(v), (int32_t)x[2 * g], a);
        a = __smlad(sxtb16_ror8(v), (int32_t)x[2 * g + 1], a);
    }
    return a;
}

/* Output o's requantisation: `r` holds the per-tensor constants (derived once per call) unless the
 * weights are per channel. */
static inline int8_t requant(const mdt_fc_params *p, const mdt_rqf *r, int ok, int32_t o, int32_t acc)
{
    if (p->per_channel) {
        const int32_t mult = p->multiplier[o], shift = p->shift[o];
        if (mdt_rqf_ok(mult, shift)) {
            const mdt_rqf rc = mdt_rqf_make(mult, shift, p->output_offset);
            return (int8_t)mdt_clamp(mdt_rqf_apply(mdt_rqf_k(&rc), rc.m, rc.sh, acc) + rc.post, p->act_min,
                                     p->act_max);
        }
        return (int8_t)mdt_clamp(mdt_mbqm(acc, mult, shift) + p->output_offset, p->act_min, p->act_max);
    }
    if (ok) {
        return (int8_t)mdt_clamp(mdt_rqf_apply(mdt_rqf_k(r), r->m, r->sh, acc) + r->post, p->act_min, p->act_max);
    }
    return (int8_t)mdt_clamp(mdt_mbqm(acc, p->multiplier[0], p->shift[0]) + p->output_offset, p->act_min,
                             p->act_max);
}

int mdt_fc_rows3_dsp(const mdt_fc_params *p, const int8_t *input, int8_t *output, mdt_scratch s)
{
    uint32_t *xw; /* the input widened once, offset added: 2 words per group of 4 */
    const int32_t D = p->in_depth, O = p->out_depth, n4 = D / 4;
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset);
    const mdt_rqf r0 = mdt_rqf_make(p->multiplier[0], p->shift[0], p->output_offset);
    const int ok0 = mdt_rqf_ok(p->multiplier[0], p->shift[0]);
    /* locals: the int8 output stores may alias anything, fields would be reloaded after each */
    const int8_t *const filter = p->filter;
    const int32_t *const bias = p->bias;
    const int fast = ok0 && !p->per_channel;
    const int64_t k0 = mdt_rqf_k(&r0);
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t b, o;
    if (D > MDT_DSP_MAX_K || n4 < 1) {
        return 0;
    }
    xw = (uint32_t *)mdt_scratch_take(&s, 8 * n4);
    if (xw == 0) {
        return 0;
    }
    MDT_PATH(MDT_PATH_FC_DSP);
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * D;
        int32_t g;
        for (g = 0; g < n4; ++g) {
            const int32_t v = ld32(x + 4 * g);
            xw[2 * g] = (uint32_t)__sxtab16(off2, v);
            xw[2 * g + 1] = (uint32_t)sxtab16_ror8(off2, v);
        }
        for (o = 0; o < O; o += 3) {
            const int32_t n = O - o < 3 ? O - o : 3;
            const int8_t *w = filter + o * D;
            int32_t a[3], i, d;
            for (i = 0; i < 3; ++i) {
                a[i] = bias && i < n ? bias[o + i] : 0;
            }
            if (n == 3) {
                rows3(xw, w, w + D, w + 2 * D, n4, a);
            } else {
                for (i = 0; i < n; ++i) {
                    a[i] = row1(xw, w + i * D, n4, a[i]);
                }
            }
            for (i = 0; i < n; ++i) {
                for (d = n4 * 4; d < D; ++d) {
                    a[i] += (int32_t)w[i * D + d] * ((int32_t)x[d] + p->input_offset);
                }
                if (fast) {
                    *output++ = (int8_t)mdt_clamp(mdt_rqf_apply(k0, r0.m, r0.sh, a[i]) + r0.post, lo, hi);
                } else {
                    *output++ = requant(p, &r0, ok0, o + i, a[i]);
                }
            }
        }
    }
    return 1;
}

#else

typedef int mdt_dsp_fc_unused; /* keeps the translation unit non-empty without the DSP extension */

#endif /* MDT_DSP */
