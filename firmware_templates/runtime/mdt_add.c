/* mdt_add.c - ADD int8 with up-to-4D broadcasting, bit-exact with TFLite's
 * reference_integer_ops::Add / BroadcastAdd (left_shift 20, three rescalings). */
#include "mdt_dsp.h"
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

static int8_t add_one(const mdt_add_params *p, int8_t a, int8_t b)
{
    const int32_t x1 = mdt_wrap_shl(p->input1_offset + a, p->left_shift);
    const int32_t x2 = mdt_wrap_shl(p->input2_offset + b, p->left_shift);
    const int32_t s1 = mdt_mbqm(x1, p->input1_multiplier, p->input1_shift);
    const int32_t s2 = mdt_mbqm(x2, p->input2_multiplier, p->input2_shift);
    const int32_t out = mdt_mbqm(mdt_wrap_add(s1, s2), p->output_multiplier, p->output_shift) +
                        p->output_offset;
    return (int8_t)mdt_clamp(out, p->act_min, p->act_max);
}

void mdt_add(const mdt_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output,
             mdt_scratch scratch)
{
    int32_t i0, i1, i2, i3;
#if MDT_DSP
    if (mdt_add_dsp(p, input1, input2, output, scratch)) {
        return;
    }
#else
    (void)scratch;
#endif
    MDT_PATH(MDT_PATH_ADD_REF);
    for (i0 = 0; i0 < p->dims[0]; ++i0) {
        for (i1 = 0; i1 < p->dims[1]; ++i1) {
            for (i2 = 0; i2 < p->dims[2]; ++i2) {
                const int8_t *a = input1 + i0 * p->stride1[0] + i1 * p->stride1[1] + i2 * p->stride1[2];
                const int8_t *b = input2 + i0 * p->stride2[0] + i1 * p->stride2[1] + i2 * p->stride2[2];
                for (i3 = 0; i3 < p->dims[3]; ++i3) {
                    *output++ = add_one(p, a[i3 * p->stride1[3]], b[i3 * p->stride2[3]]);
                }
            }
        }
    }
}
