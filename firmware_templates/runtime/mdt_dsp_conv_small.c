/*
 * mdt_dsp_conv_small.c - Cortex-M4 fast path of CONV_2D for small depths (k_h * k_w * in_c <= 16,
 * e.g. pointwise convs over 4..16 channels), bit-exact with TFLite's reference ConvPerChannel.
 *
 * The general pass (mdt_dsp.c) re-derives each output channel's constants every 4 pixels, which is
 * most of the work when a channel's dot product is 8 or 16 MACs long. Here a chunk of up to
 * SMALL_PIX output pixels is widened once (2 words per group of 4 depth elements, per pixel), then
 * each output channel keeps its unpacked weights in registers over the whole chunk: per pixel
 * 1..4 LDRD + 2..8 SMLAD into a sum buffer, then one tight folded requantisation loop.
 */
#include "mdt_dsp.h"

#if MDT_DSP

#include <string.h>

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"
#include "mdt_dsp_intrin.h"

#define SMALL_PIX 64   /* output pixels per chunk (stack: 64 x 8 words + 64 sums = 2.3 KB) */
#define SMALL_GROUPS 4 /* depth <= 16 */

/* One pixel's im2col into dst (ng groups, 2 words each): bytes first (padding and the positions past
 * the depth = the input zero point, which contributes 0), then widened with the offset. */
static void gather(uint32_t *dst, int32_t ng, const int8_t *in_b, int32_t oy, int32_t ox,
                   const mdt_conv_params *p, int32_t off2)
{
    int8_t row[4 * SMALL_GROUPS];
    const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
    const int8_t pad = (int8_t)(-p->input_offset);
    int32_t ky, kx, c, n = 0, g;
    for (ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = iy0 + p->dil_h * ky;
        for (kx = 0; kx < p->k_w; ++kx) {
            const int32_t ix = ix0 + p->dil_w * kx;
            const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
            const int8_t *src = in_b + (iy * p->in_w + ix) * p->in_c;
            for (c = 0; c < p->in_c; ++c) {
                row[n++] = inside ? src[c] : pad;
            }
        }
    }
    for (; n < 4 * ng; ++n) {
        row[n] = pad;
    }
    for (g = 0; g < ng; ++g) {
        const int32_t v = ld32(row + 4 * g);
        dst[2 * g] = (uint32_t)__sxtab16(off2, v);
        dst[2 * g + 1] = (uint32_t)sxtab16_ror8(off2, v);
    }
}

/* A pointwise conv over whole words (1x1, stride 1, no padding, in_c a multiple of 4): the chunk's
 * pixels are contiguous in the input, widened as one stream. */
static void widen_run(uint32_t *dst, const int8_t *src, int32_t n4, int32_t off2)
{
    int32_t g;
    for (g = 0; g < n4; ++g) {
        const int32_t v = ld32(src + 4 * g);
        dst[2 * g] = (uint32_t)__sxtab16(off2, v);
        dst[2 * g + 1] = (uint32_t)sxtab16_ror8(off2, v);
    }
}

/* Sums of one channel over npix pixels; `ng` is a constant at each inlined call site. */
static inline __attribute__((always_inline)) void sums(const uint32_t *x, const int32_t *w, int32_t ng,
                                                       int32_t npix, int32_t bias, int32_t *acc)
{
    const int32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7];
    int32_t *const end = acc + npix;
    while (acc != end) {
        int32_t a = __smlad((int32_t)x[0], w0, bias);
        a = __smlad((int32_t)x[1], w1, a);
        if (ng > 1) {
            a = __smlad((int32_t)x[2], w2, a);
            a = __smlad((int32_t)x[3], w3, a);
        }
        if (ng > 2) {
            a = __smlad((int32_t)x[4], w4, a);
            a = __smlad((int32_t)x[5], w5, a);
        }
        if (ng > 3) {
            a = __smlad((int32_t)x[6], w6, a);
            a = __smlad((int32_t)x[7], w7, a);
        }
        *acc++ = a;
        x += 2 * ng;
    }
}

/* Requantises n sums into out, out + stride, ...; `full` and `has_post` constant at each site. */
static inline __attribute__((always_inline)) void store(const int32_t *acc, int32_t n, const mdt_rqf *r, int full,
                                                        int has_post, int32_t lo, int32_t hi, int32_t stride,
                                                        int8_t *out)
{
    const int64_t k = mdt_rqf_k(r);
    const int32_t m = r->m, sh = r->sh, post = r->post;
    const int32_t *const end = acc + n;
    while (acc != end) {
        *out = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, *acc++) + (has_post ? post : 0), full, lo, hi);
        out += stride;
    }
}

static void chunk(const uint32_t *cols, int32_t ng, int32_t npix, const mdt_conv_params *p, int8_t *out)
{
    int32_t acc[SMALL_PIX];
    const int32_t out_c = p->out_c, depth = p->k_h * p->k_w * p->in_c, lo = p->act_min, hi = p->act_max;
    const int full = lo == -128 && hi == 127;
    int32_t oc;
    for (oc = 0; oc < out_c; ++oc) {
        int8_t wb[4 * SMALL_GROUPS] = {0};
        int32_t w[2 * SMALL_GROUPS] = {0};
        const int32_t mult = p->multiplier[oc], shift = p->shift[oc];
        const int32_t bias = p->bias ? p->bias[oc] : 0;
        int32_t g;
        /* the channel's weights, zero past the depth, unpacked like the inputs */
        memcpy(wb, p->filter + oc * depth, (size_t)depth);
        for (g = 0; g < ng; ++g) {
            const int32_t v = ld32(wb + 4 * g);
            w[2 * g] = __sxtb16(v);
            w[2 * g + 1] = sxtb16_ror8(v);
        }
        if (ng == 1) {
            sums(cols, w, 1, npix, bias, acc);
        } else if (ng == 2) {
            sums(cols, w, 2, npix, bias, acc);
        } else if (ng == 3) {
            sums(cols, w, 3, npix, bias, acc);
        } else {
            sums(cols, w, 4, npix, bias, acc);
        }
        if (mdt_rqf_ok(mult, shift)) {
            const mdt_rqf r = mdt_rqf_make(mult, shift, p->output_offset);
            if (r.post != 0) {
                store(acc, npix, &r, 0, 1, lo, hi, out_c, out + oc);
            } else if (full) {
                store(acc, npix, &r, 1, 0, lo, hi, out_c, out + oc);
            } else {
                store(acc, npix, &r, 0, 0, lo, hi, out_c, out + oc);
            }
        } else {
            int32_t i;
            for (i = 0; i < npix; ++i) {
                out[i * out_c + oc] = (int8_t)mdt_clamp(mdt_mbqm(acc[i], mult, shift) + p->output_offset, lo, hi);
            }
        }
    }
}

int mdt_conv2d_small_dsp(const mdt_conv_params *p, const int8_t *input, int8_t *output)
{
    uint32_t cols[SMALL_PIX * 2 * SMALL_GROUPS];
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    const int32_t ng = (depth + 3) / 4;
    const int32_t npix_total = p->out_h * p->out_w;
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset);
    const int stream = p->k_h == 1 && p->k_w == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
                       p->pad_w == 0 && p->in_h == p->out_h && p->in_w == p->out_w && (p->in_c % 4) == 0;
    int32_t b;
    if (depth > 4 * SMALL_GROUPS || depth < 1) {
        return 0;
    }
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * p->in_h * p->in_w * p->in_c;
        int8_t *out_b = output + b * npix_total * p->out_c;
        int32_t pix;
        for (pix = 0; pix < npix_total; pix += SMALL_PIX) {
            const int32_t npix = npix_total - pix < SMALL_PIX ? npix_total - pix : SMALL_PIX;
            if (stream) {
                widen_run(cols, in_b + pix * p->in_c, npix * ng, off2);
            } else {
                int32_t s;
                for (s = 0; s < npix; ++s) {
                    gather(cols + s * 2 * ng, ng, in_b, (pix + s) / p->out_w, (pix + s) % p->out_w, p, off2);
                }
            }
            chunk(cols, ng, npix, p, out_b + pix * p->out_c);
        }
    }
    return 1;
}

#else

typedef int mdt_dsp_conv_small_unused; /* keeps the translation unit non-empty without the DSP extension */

#endif /* MDT_DSP */
