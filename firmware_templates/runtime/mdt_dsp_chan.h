/*
 * mdt_dsp_chan.h - the general conv fast path's per-channel constants (internal to the runtime;
 * included by mdt_dsp.c, and by a host test that compares chan_table_fill's bytes with the table the
 * compiler writes into flash: microt_deploy/compiler/ops/conv.py, chan_table).
 *
 * A chan_t depends only on the layer's constants (bias, multiplier, shift, zero rows, output offset,
 * activation range, depth, out_c), never on the input or the spatial shape, so the compiler builds
 * the whole layer's table once (mdt_conv_params.chan_table, in flash) and the kernel reads it in
 * place of filling one per call in the scratch: no instructions and no SRAM per inference. Kernels
 * called with a NULL chan_table (hand-written params) still fill it here.
 */
#ifndef MDT_DSP_CHAN_H
#define MDT_DSP_CHAN_H

#include <stddef.h>
#include <stdint.h>

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

/* One output channel's constants, derived once per call instead of once per pass. */
enum { RQ_FOLD = 0, RQ_POST = 1, RQ_REF = 2, RQ_CONST = 3 }; /* RQ_CONST: an all-zero filter row, output `post` */
typedef struct {
    int32_t bias;
    int32_t m;
    int32_t k_hi;
    int8_t sh; /* RQ_FOLD / RQ_POST: the right shift e - 1; RQ_REF: TFLite's shift */
    int8_t mode;
    /* 1: mdt_pass6_run takes the channel (RQ_FOLD with a right shift of 2..23, the layer's full int8
     * range, and a sum that cannot reach 2^30, so that doubling it for SMMLAR cannot overflow) */
    int8_t fast;
    int8_t post; /* RQ_POST: the output offset added after the shift; RQ_CONST: the output */
} chan_t;

/* mdt_pass6_run reads chan_t at fixed offsets (C99: a negative array size fails the build) */
typedef char chan_t_layout_check[(offsetof(chan_t, bias) == 0 && offsetof(chan_t, m) == 4 &&
                                  offsetof(chan_t, k_hi) == 8 && offsetof(chan_t, sh) == 12 &&
                                  offsetof(chan_t, mode) == 13 && offsetof(chan_t, fast) == 14 &&
                                  offsetof(chan_t, post) == 15 && sizeof(chan_t) == 16)
                                     ? 1
                                     : -1];

/* the low word of the folded form's 64-bit constant (mdt_rqf_klo: 2^30, + 2^31 for a right shift of 1) */
static inline uint32_t chan_klo(const chan_t *t)
{
    return mdt_rqf_klo(t->sh);
}

static inline int64_t chan_k(const chan_t *t)
{
    return mdt_rqf_k64(t->k_hi, chan_klo(t));
}

/* Out of line: row-wise execution calls the conv once per output row, so this runs per row; inlined,
 * it costs mdt_conv2d_dsp registers and measured slower (KWS 7,348,120 -> 7,320,720 instr). */
static __attribute__((noinline, unused)) void chan_table_fill(chan_t *t, const mdt_conv_params *p, int32_t oc0, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t oc = oc0 + i, mult = p->multiplier[oc], shift = p->shift[oc];
        const mdt_rqf r = mdt_rqf_make(mult, shift, p->output_offset);
        t[i].bias = p->bias ? p->bias[oc] : 0;
        t[i].k_hi = r.k_hi;
        t[i].m = r.m;
        t[i].sh = (int8_t)r.sh;
        t[i].post = (int8_t)r.post;
        t[i].mode = (int8_t)(!mdt_rqf_ok(mult, shift) ? RQ_REF : (r.post != 0 ? RQ_POST : RQ_FOLD));
        if (t[i].mode == RQ_REF) {
            t[i].sh = (int8_t)shift; /* the reference takes the multiplier and the TFLite shift */
        }
        /* |sum| <= |bias| + depth * 255 * 128 must stay below 2^30 (depth <= MDT_DSP_MAX_K <= 16448) */
        t[i].fast = t[i].mode == RQ_FOLD && r.k_lo == 0x40000000u && p->act_min == -128 && p->act_max == 127 &&
                    t[i].bias < (1 << 29) && t[i].bias > -(1 << 29) &&
                    !((p->k_h * p->k_w * p->in_c) % 4 != 0 && oc == p->out_c - 1);
        if (p->zero_rows != NULL && p->zero_rows[oc]) {
            /* the sum is the bias at every pixel: one output value for the whole channel */
            t[i].fast = 0;
            t[i].mode = RQ_CONST;
            t[i].post = (int8_t)mdt_clamp(mdt_mbqm(t[i].bias, mult, shift) + p->output_offset, p->act_min, p->act_max);
        }
    }
}

#endif /* MDT_DSP_CHAN_H */
