/*
 * mdt_dsp_add.c - Cortex-M4 fast path of ADD int8, bit-exact with TFLite's reference Add /
 * BroadcastAdd.
 *
 * Each input's rescaling (offset, << left_shift, MultiplyByQuantizedMultiplier) depends on one int8
 * value only, so it is tabulated: by the compiler into flash (mdt_add_params.input1_table /
 * input2_table, computed as the very reference function does), else once per call (2 x 256 int32 in
 * the layer's scratch, with the reference function itself); per element there remain two table loads, an add and the output
 * requantisation in its folded form (mdt_dsp_rq.h) where the output multiplier allows it.
 */
#include "mdt_dsp.h"

#if MDT_DSP

#include "mdt_dsp_add.h"
#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"

/* Fewer elements than this: the tables would cost more than they save. */
#define ADD_MIN_ELEMS 512

static void table(int32_t *t, int32_t offset, int32_t left_shift, int32_t mult, int32_t shift)
{
    int32_t v;
    for (v = -128; v < 128; ++v) {
        t[(uint8_t)v] = mdt_mbqm(mdt_wrap_shl(offset + v, left_shift), mult, shift);
    }
}

/* The element loops over the broadcast dims; `full`, `has_post` constants at each inlined site. */
static inline __attribute__((always_inline)) void add_loops(const mdt_add_params *p, const int8_t *in1,
                                                            const int8_t *in2, int8_t *out, const int32_t *t1,
                                                            const int32_t *t2, const mdt_rqf *r, int full,
                                                            int has_post)
{
    const int64_t k = mdt_rqf_k(r);
    const int32_t m = r->m, sh = r->sh, post = r->post, lo = p->act_min, hi = p->act_max;
    const int32_t n3 = p->dims[3], s13 = p->stride1[3], s23 = p->stride2[3];
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < p->dims[0]; ++i0) {
        for (i1 = 0; i1 < p->dims[1]; ++i1) {
            for (i2 = 0; i2 < p->dims[2]; ++i2) {
                const int8_t *a = in1 + i0 * p->stride1[0] + i1 * p->stride1[1] + i2 * p->stride1[2];
                const int8_t *b = in2 + i0 * p->stride2[0] + i1 * p->stride2[1] + i2 * p->stride2[2];
                for (i3 = 0; i3 < n3; ++i3) {
                    const int32_t s = mdt_wrap_add(t1[(uint8_t)*a], t2[(uint8_t)*b]);
                    *out++ = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, s) + (has_post ? post : 0), full, lo, hi);
                    a += s13;
                    b += s23;
                }
            }
        }
    }
}

/* the element strides of a dense tensor of the output's dims (ops/add.py writes exactly these) */
static int dense(const mdt_add_params *p, const int32_t *st)
{
    return st[3] == 1 && st[2] == p->dims[3] && st[1] == p->dims[2] * p->dims[3] &&
           (p->dims[0] == 1 || st[0] == p->dims[1] * p->dims[2] * p->dims[3]);
}

int mdt_add_dsp(const mdt_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output, mdt_scratch s)
{
    const int32_t *t1, *t2;
    mdt_rqf r;
    const int32_t n = p->dims[0] * p->dims[1] * p->dims[2] * p->dims[3];
    if (!mdt_rqf_ok(p->output_multiplier, p->output_shift)) {
        return 0;
    }
    if (p->input1_table != 0 && p->input2_table != 0) {
        /* the compiler's tables (same function, same 256 values each): nothing to build, no scratch */
        MDT_PATH(MDT_PATH_ADD_TABLES_CONST);
        t1 = p->input1_table;
        t2 = p->input2_table;
    } else {
        int32_t *const t = n < ADD_MIN_ELEMS ? 0 : (int32_t *)mdt_scratch_take(&s, 2 * 256 * (int32_t)sizeof(int32_t));
        if (t == 0) {
            return 0;
        }
        table(t, p->input1_offset, p->left_shift, p->input1_multiplier, p->input1_shift);
        table(t + 256, p->input2_offset, p->left_shift, p->input2_multiplier, p->input2_shift);
        t1 = t;
        t2 = t + 256;
    }
    MDT_PATH(MDT_PATH_ADD_DSP);
    r = mdt_rqf_make(p->output_multiplier, p->output_shift, p->output_offset);
    /* tables indexed by the int8 value's byte, (uint8_t)v: a zero-extending load and a scaled index,
     * no offset to add (gcc turned t[v + 128] into a multiply-add with two constants in registers) */
    if (dense(p, p->stride1) && dense(p, p->stride2)) {
        /* both operands dense (no broadcast, the usual residual ADD): one flat loop, in assembly where
         * the output's requantisation allows. The four nested loops keep eleven values live besides the
         * two table bases, which spills on Cortex-M4 (measured: ResNet-8's ADDs 23 instructions an
         * element with the flash tables, against 19 with both tables on the stack, whose SP-based
         * indexing took no register). */
        mdt_add_tables(input1, input2, output, n, t1, t2, &r, p->act_min, p->act_max);
    } else if (r.post != 0) {
        add_loops(p, input1, input2, output, t1, t2, &r, 0, 1);
    } else if (p->act_min == -128 && p->act_max == 127) {
        add_loops(p, input1, input2, output, t1, t2, &r, 1, 0);
    } else {
        add_loops(p, input1, input2, output, t1, t2, &r, 0, 0);
    }
    return 1;
}

#else

typedef int mdt_dsp_add_unused; /* keeps the translation unit non-empty without the DSP extension */

#endif /* MDT_DSP */
