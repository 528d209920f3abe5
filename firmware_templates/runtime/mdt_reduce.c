/* mdt_reduce.c - MEAN and SUM int8 over any set of axes of an up-to-4-D tensor, bit-exact with TFLite's
 * reference (reduce.cc, reference_ops::QuantizedMeanOrSum, the int32 sum of each output's elements):
 * (sum - input_zero_point * count) requantized with one multiplier (for MEAN, 1/count folded into it at
 * compile time) plus the output zero point, clamped. H x W means of 4-D NHWC tensors keep their own
 * kernel (mdt_mean_hw), which computes the same. */
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

void mdt_reduce(const mdt_reduce_params *p, const int8_t *input, int8_t *output)
{
    int32_t o0, o1, o2, o3, r0, r1, r2, r3;
    for (o0 = 0; o0 < p->out_dims[0]; ++o0) {
        for (o1 = 0; o1 < p->out_dims[1]; ++o1) {
            for (o2 = 0; o2 < p->out_dims[2]; ++o2) {
                for (o3 = 0; o3 < p->out_dims[3]; ++o3) {
                    const int8_t *base = input + o0 * p->strides[0] + o1 * p->strides[1] +
                                         o2 * p->strides[2] + o3 * p->strides[3];
                    int32_t sum = 0;
                    int32_t out;
                    for (r0 = 0; r0 < p->red_dims[0]; ++r0) {
                        for (r1 = 0; r1 < p->red_dims[1]; ++r1) {
                            for (r2 = 0; r2 < p->red_dims[2]; ++r2) {
                                const int8_t *row = base + r0 * p->strides[0] + r1 * p->strides[1] +
                                                    r2 * p->strides[2];
                                for (r3 = 0; r3 < p->red_dims[3]; ++r3) {
                                    sum += row[r3 * p->strides[3]];
                                }
                            }
                        }
                    }
                    out = mdt_mbqm(mdt_wrap_sub(sum, p->input_zero_point * p->count), p->multiplier, p->shift) +
                          p->output_zero_point;
                    *output++ = (int8_t)mdt_clamp(out, -128, 127);
                }
            }
        }
    }
}
