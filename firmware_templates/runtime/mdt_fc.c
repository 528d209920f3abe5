/* mdt_fc.c - FULLY_CONNECTED int8 (per-tensor or per-channel weights), bit-exact with TFLite's
 * reference_integer_ops::FullyConnected / FullyConnectedPerChannel. */
#include "mdt_dsp.h"
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

void mdt_fully_connected(const mdt_fc_params *p, const int8_t *input, int8_t *output, mdt_scratch scratch)
{
    int32_t b, o, d;
#if MDT_DSP
    if (mdt_fc_rows3_dsp(p, input, output, scratch)) { /* it takes every depth of 4 .. MDT_DSP_MAX_K */
        return;
    }
#else
    (void)scratch;
#endif
    MDT_PATH(MDT_PATH_FC_REF);
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->in_depth;
        for (o = 0; o < p->out_depth; ++o) {
            const int8_t *w = p->filter + o * p->in_depth;
            const int32_t q = p->per_channel ? o : 0;
            int32_t acc = 0;
            int32_t out;
            for (d = 0; d < p->in_depth; ++d) {
                acc += (int32_t)w[d] * ((int32_t)x[d] + p->input_offset);
            }
            if (p->bias) {
                acc += p->bias[o];
            }
            out = mdt_mbqm(acc, p->multiplier[q], p->shift[q]) + p->output_offset;
            *output++ = (int8_t)mdt_clamp(out, p->act_min, p->act_max);
        }
    }
}
