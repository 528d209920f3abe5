/* mdt_misc.c - PAD / PADV2 (int8, constant value), QUANTIZE int8->int8 and standalone
 * RELU/RELU6 (requantize + clamp) and the
 * plain copy used when a RESHAPE cannot alias its input. */
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

void mdt_pad(const mdt_pad_params *p, const int8_t *input, int8_t *output)
{
    int32_t o0, o1, o2, o3;
    for (o0 = 0; o0 < p->out_dims[0]; ++o0) {
        const int32_t i0 = o0 - p->pad_before[0];
        const int in0 = i0 >= 0 && i0 < p->in_dims[0];
        for (o1 = 0; o1 < p->out_dims[1]; ++o1) {
            const int32_t i1 = o1 - p->pad_before[1];
            const int in1 = in0 && i1 >= 0 && i1 < p->in_dims[1];
            for (o2 = 0; o2 < p->out_dims[2]; ++o2) {
                const int32_t i2 = o2 - p->pad_before[2];
                const int in2 = in1 && i2 >= 0 && i2 < p->in_dims[2];
                const int8_t *row = input + ((i0 * p->in_dims[1] + i1) * p->in_dims[2] + i2) * p->in_dims[3];
                for (o3 = 0; o3 < p->out_dims[3]; ++o3) {
                    const int32_t i3 = o3 - p->pad_before[3];
                    if (in2 && i3 >= 0 && i3 < p->in_dims[3]) {
                        *output++ = row[i3];
                    } else {
                        *output++ = (int8_t)p->pad_value;
                    }
                }
            }
        }
    }
}

void mdt_requantize(const mdt_requant_params *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t out = mdt_mbqm((int32_t)input[i] - p->input_zero_point, p->multiplier, p->shift) +
                            p->output_zero_point;
        output[i] = (int8_t)mdt_clamp(out, p->act_min, p->act_max);
    }
}

void mdt_copy(int32_t size, const int8_t *input, int8_t *output)
{
    int32_t i;
    if (input == output) {
        return;
    }
    for (i = 0; i < size; ++i) {
        output[i] = input[i];
    }
}
