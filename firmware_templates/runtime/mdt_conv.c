/* mdt_conv.c - CONV_2D and DEPTHWISE_CONV_2D, int8 per-channel, bit-exact with TFLite's
 * reference_integer_ops::ConvPerChannel / DepthwiseConvPerChannel. */
#include "mdt_dsp.h"
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"

/* The portable loops out of line: the dispatchers' frames stay a few words under the fast paths. */
static __attribute__((noinline)) void conv_ref(const mdt_conv_params *p, const int8_t *input, int8_t *output);
static __attribute__((noinline)) void dw_ref(const mdt_dwconv_params *p, const int8_t *input, int8_t *output);

void mdt_conv2d(const mdt_conv_params *p, const int8_t *input, int8_t *output, mdt_scratch scratch)
{
#if MDT_DSP
    if (mdt_conv2d_small_dsp(p, input, output, scratch) || mdt_conv2d_dsp(p, input, output, scratch)) {
        return;
    }
#else
    (void)scratch;
#endif
    conv_ref(p, input, output);
}

void mdt_depthwise_conv2d(const mdt_dwconv_params *p, const int8_t *input, int8_t *output, mdt_scratch scratch)
{
#if MDT_DSP
    /* 3x3 kernels take the newer path; other sizes the first-round one (channels in groups of 4) */
    if (mdt_dw3x3_dsp(p, input, output, scratch) || mdt_depthwise_conv2d_dsp(p, input, output)) {
        return;
    }
#else
    (void)scratch;
#endif
    dw_ref(p, input, output);
}

static void conv_ref(const mdt_conv_params *p, const int8_t *input, int8_t *output)
{
    const int32_t in_row = p->in_w * p->in_c;
    const int32_t in_img = p->in_h * in_row;
    const int32_t f_size = p->k_h * p->k_w * p->in_c;
    int32_t b, oy, ox, oc, ky, kx, ic;
    MDT_PATH(MDT_PATH_CONV_REF);
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * in_img;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                for (oc = 0; oc < p->out_c; ++oc) {
                    const int8_t *f_oc = p->filter + oc * f_size;
                    int32_t acc = 0;
                    int32_t out;
                    /* an all-zero filter row sums to 0 whatever the input */
                    const int32_t k_h = p->zero_rows && p->zero_rows[oc] ? 0 : p->k_h;
                    for (ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = iy0 + p->dil_h * ky;
                        if (iy < 0 || iy >= p->in_h) {
                            continue;
                        }
                        for (kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ix0 + p->dil_w * kx;
                            const int8_t *x;
                            const int8_t *w;
                            if (ix < 0 || ix >= p->in_w) {
                                continue;
                            }
                            x = in_b + iy * in_row + ix * p->in_c;
                            w = f_oc + (ky * p->k_w + kx) * p->in_c;
                            for (ic = 0; ic < p->in_c; ++ic) {
                                acc += (int32_t)w[ic] * ((int32_t)x[ic] + p->input_offset);
                            }
                        }
                    }
                    if (p->bias) {
                        acc += p->bias[oc];
                    }
                    out = mdt_mbqm(acc, p->multiplier[oc], p->shift[oc]) + p->output_offset;
                    *output++ = (int8_t)mdt_clamp(out, p->act_min, p->act_max);
                }
            }
        }
    }
}

static void dw_ref(const mdt_dwconv_params *p, const int8_t *input, int8_t *output)
{
    const int32_t in_row = p->in_w * p->in_c;
    const int32_t in_img = p->in_h * in_row;
    int32_t b, oy, ox, ic, m, ky, kx;
    MDT_PATH(MDT_PATH_DW_REF);
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * in_img;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                for (ic = 0; ic < p->in_c; ++ic) {
                    for (m = 0; m < p->depth_multiplier; ++m) {
                        const int32_t oc = ic * p->depth_multiplier + m;
                        int32_t acc = 0;
                        int32_t out;
                        for (ky = 0; ky < p->k_h; ++ky) {
                            const int32_t iy = iy0 + p->dil_h * ky;
                            if (iy < 0 || iy >= p->in_h) {
                                continue;
                            }
                            for (kx = 0; kx < p->k_w; ++kx) {
                                const int32_t ix = ix0 + p->dil_w * kx;
                                if (ix < 0 || ix >= p->in_w) {
                                    continue;
                                }
                                acc += (int32_t)p->filter[(ky * p->k_w + kx) * p->out_c + oc] *
                                       ((int32_t)in_b[iy * in_row + ix * p->in_c + ic] + p->input_offset);
                            }
                        }
                        if (p->bias) {
                            acc += p->bias[oc];
                        }
                        out = mdt_mbqm(acc, p->multiplier[oc], p->shift[oc]) + p->output_offset;
                        output[oc] = (int8_t)mdt_clamp(out, p->act_min, p->act_max);
                    }
                }
                output += p->out_c;
            }
        }
    }
}
