/* mdt_pool.c - AVERAGE_POOL_2D and MAX_POOL_2D, bit-exact with TFLite's reference_integer_ops::AveragePool
 * / MaxPool (MEAN over H, W: mdt_reduce.c). */
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

/* The window clipped to the image, as the reference computes it. */
static void window(int32_t origin, int32_t k, int32_t size, int32_t *start, int32_t *end)
{
    *start = origin < 0 ? -origin : 0;
    *end = size - origin < k ? size - origin : k;
}

static void pool(const mdt_pool_params *p, const int8_t *input, int8_t *output, int is_max)
{
    int32_t b, oy, ox, c, fy, fx;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * p->in_h * p->in_w * p->channels;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            int32_t fy0, fy1;
            window(iy0, p->k_h, p->in_h, &fy0, &fy1);
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                int32_t fx0, fx1;
                window(ix0, p->k_w, p->in_w, &fx0, &fx1);
                for (c = 0; c < p->channels; ++c) {
                    int32_t acc = is_max ? -128 : 0;
                    int32_t count = 0;
                    for (fy = fy0; fy < fy1; ++fy) {
                        for (fx = fx0; fx < fx1; ++fx) {
                            const int32_t v = in_b[((iy0 + fy) * p->in_w + ix0 + fx) * p->channels + c];
                            if (is_max) {
                                acc = v > acc ? v : acc;
                            } else {
                                acc += v;
                            }
                            ++count;
                        }
                    }
                    if (!is_max) {
                        if (count == 0) {
                            acc = 0; /* the reference refuses this shape; the compiler never emits it */
                        } else {
                            acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                        }
                    }
                    *output++ = (int8_t)mdt_clamp(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

void mdt_avg_pool(const mdt_pool_params *p, const int8_t *input, int8_t *output)
{
    pool(p, input, output, 0);
}

void mdt_max_pool(const mdt_pool_params *p, const int8_t *input, int8_t *output)
{
    pool(p, input, output, 1);
}
