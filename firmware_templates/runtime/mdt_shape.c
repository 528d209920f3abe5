/* mdt_shape.c - data movement: TRANSPOSE (strided gather), CONCATENATION (chunk copies) and
 * RESIZE_NEAREST_NEIGHBOR (index tables computed at compile time). Bytes are copied unchanged:
 * the compiler has checked that input and output quantization are equal. */
#include "mdt_runtime.h"

void mdt_transpose(const mdt_transpose_params *p, const int8_t *input, int8_t *output)
{
    int32_t d0, d1, d2, d3;
    for (d0 = 0; d0 < p->out_dims[0]; ++d0) {
        for (d1 = 0; d1 < p->out_dims[1]; ++d1) {
            for (d2 = 0; d2 < p->out_dims[2]; ++d2) {
                const int8_t *src = input + d0 * p->in_strides[0] + d1 * p->in_strides[1] + d2 * p->in_strides[2];
                for (d3 = 0; d3 < p->out_dims[3]; ++d3) {
                    *output++ = src[d3 * p->in_strides[3]];
                }
            }
        }
    }
}

void mdt_concat(const mdt_concat_params *p, const int8_t *const *inputs, int8_t *output)
{
    int32_t o, i, k;
    for (o = 0; o < p->outer; ++o) {
        for (i = 0; i < p->count; ++i) {
            const int8_t *src = inputs[i] + o * p->chunks[i];
            for (k = 0; k < p->chunks[i]; ++k) {
                *output++ = src[k];
            }
        }
    }
}

void mdt_resize_nearest(const mdt_resize_params *p, const int8_t *input, int8_t *output)
{
    int32_t b, y, x, c;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *image = input + b * p->in_h * p->in_w * p->channels;
        for (y = 0; y < p->out_h; ++y) {
            for (x = 0; x < p->out_w; ++x) {
                const int8_t *src = image + (p->ys[y] * p->in_w + p->xs[x]) * p->channels;
                for (c = 0; c < p->channels; ++c) {
                    *output++ = src[c];
                }
            }
        }
    }
}
