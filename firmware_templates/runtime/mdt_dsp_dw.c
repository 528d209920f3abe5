/*
 * mdt_dsp_dw.c - Cortex-M4 fast path of DEPTHWISE_CONV_2D for 3x3 kernels (depth multiplier 1, no
 * dilation, horizontal stride 1 or 2), bit-exact with TFLite's reference DepthwiseConvPerChannel.
 *
 * Per output row and per group of 4 channels, the 3 input rows the row reads are transposed into a
 * bounded stack buffer of int16 (one row of columns per channel, input offset added, padding as 0,
 * which is what a padded tap contributes in the reference). A kernel row of one channel is then two
 * packed weights and one single: each pair of adjacent outputs costs per kernel row 3 word loads
 * and 4 multiply-accumulates (SMLAD + SMLABB/SMLATB), 18 MACs in 21 instructions, and one fast
 * requantisation each (mdt_dsp_rq.h). Sums are the reference's integers in another order.
 */
#include "mdt_dsp.h"

#if MDT_DSP

#include <string.h>

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"

/* Columns of the transposed buffer: bounds the output row width the fast path takes. */
#define DW_COLS MDT_DSP_DW_COLS
#define GROUP 4

static inline int32_t ld32(const void *ptr)
{
    int32_t v;
    memcpy(&v, ptr, 4); /* one LDR: the M4 allows unaligned word loads */
    return v;
}

static inline void st32(void *ptr, int32_t v)
{
    memcpy(ptr, &v, 4); /* one STR, unaligned allowed */
}

static inline int32_t sxtab16_ror8(int32_t off2, int32_t v)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(off2), "r"(v));
    return r;
}

/* (bottom half of a, bottom half of b) in one PKHBT */
static inline int32_t pk_bb(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* (top half of a, top half of b) in one PKHTB */
static inline int32_t pk_tt(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(b), "r"(a));
    return r;
}

/* Transposes input columns [ix0, ix_end) of one input row (NULL: a padded row, zeros) for channels
 * c0..c0+n-1 into buf[ch][ix + pad] (pitch 3 * DW_COLS between channels). The padding columns
 * around them are zeroed once per call by the caller. */
static void transpose_row(int16_t *buf, const int8_t *row, int32_t C, int32_t n, int32_t ix0, int32_t ix_end,
                          int32_t pad, int32_t in_off, int32_t off2)
{
    int32_t ch, ix;
    int16_t *d = buf + ix0 + pad;
    if (row == NULL) {
        for (ch = 0; ch < n; ++ch) {
            int16_t *z = d + ch * 3 * DW_COLS;
            for (ix = ix0; ix < ix_end; ++ix) {
                *z++ = 0;
            }
        }
        return;
    }
    {
        const int8_t *s = row + ix0 * C;
        ix = ix0;
        if (n == GROUP) {
            /* two pixels of four channels: (c0 c2)(c1 c3) per pixel, then paired per channel */
            for (; ix + 1 < ix_end; ix += 2) {
                const int32_t v0 = ld32(s), v1 = ld32(s + C);
                const int32_t a0 = __sxtab16(off2, v0), b0 = sxtab16_ror8(off2, v0);
                const int32_t a1 = __sxtab16(off2, v1), b1 = sxtab16_ror8(off2, v1);
                st32(d, pk_bb(a0, a1));
                st32(d + 3 * DW_COLS, pk_bb(b0, b1));
                st32(d + 6 * DW_COLS, pk_tt(a0, a1));
                st32(d + 9 * DW_COLS, pk_tt(b0, b1));
                d += 2;
                s += 2 * C;
            }
        }
        for (; ix < ix_end; ++ix) {
            for (ch = 0; ch < n; ++ch) {
                d[ch * 3 * DW_COLS] = (int16_t)(s[ch] + in_off);
            }
            d += 1;
            s += C;
        }
    }
}

/* Raw sums of one channel's output row from its 3 transposed rows `t` (pitch DW_COLS), two outputs
 * per pass; `stride` is a constant at each (inlined) call site. */
static inline __attribute__((always_inline)) void dw_sums(const int16_t *t, const int8_t *w, int32_t C,
                                                          int32_t stride, int32_t npairs, int32_t bias,
                                                          int32_t *acc)
{
    const int32_t w01a = pk_bb(w[0], w[C]), w2a = w[2 * C];
    const int32_t w01b = pk_bb(w[3 * C], w[4 * C]), w2b = w[5 * C];
    const int32_t w01c = pk_bb(w[6 * C], w[7 * C]), w2c = w[8 * C];
    int32_t *const end = acc + 2 * npairs;
    while (acc != end) {
        int32_t a0, a1;
        if (stride == 1) {
            int32_t x;
            a0 = __smlad(ld32(t), w01a, bias);
            a1 = __smlad(ld32(t + 1), w01a, bias);
            x = ld32(t + 2);
            a0 = __smlabb(x, w2a, a0);
            a1 = __smlatb(x, w2a, a1);
            a0 = __smlad(ld32(t + DW_COLS), w01b, a0);
            a1 = __smlad(ld32(t + DW_COLS + 1), w01b, a1);
            x = ld32(t + DW_COLS + 2);
            a0 = __smlabb(x, w2b, a0);
            a1 = __smlatb(x, w2b, a1);
            a0 = __smlad(ld32(t + 2 * DW_COLS), w01c, a0);
            a1 = __smlad(ld32(t + 2 * DW_COLS + 1), w01c, a1);
            x = ld32(t + 2 * DW_COLS + 2);
            a0 = __smlabb(x, w2c, a0);
            a1 = __smlatb(x, w2c, a1);
        } else {
            int32_t x;
            a0 = __smlad(ld32(t), w01a, bias);
            x = ld32(t + 2);
            a0 = __smlabb(x, w2a, a0);
            a1 = __smlad(x, w01a, bias);
            a1 = __smlabb(ld32(t + 4), w2a, a1);
            a0 = __smlad(ld32(t + DW_COLS), w01b, a0);
            x = ld32(t + DW_COLS + 2);
            a0 = __smlabb(x, w2b, a0);
            a1 = __smlad(x, w01b, a1);
            a1 = __smlabb(ld32(t + DW_COLS + 4), w2b, a1);
            a0 = __smlad(ld32(t + 2 * DW_COLS), w01c, a0);
            x = ld32(t + 2 * DW_COLS + 2);
            a0 = __smlabb(x, w2c, a0);
            a1 = __smlad(x, w01c, a1);
            a1 = __smlabb(ld32(t + 2 * DW_COLS + 4), w2c, a1);
        }
        t += 2 * stride;
        acc[0] = a0;
        acc[1] = a1;
        acc += 2;
    }
}

/* Requantises n sums into out, out + C, ...; `full` and `has_post` are constants at each call site. */
static inline __attribute__((always_inline)) void dw_store(const int32_t *acc, int32_t n, const mdt_rqf *rq,
                                                           int full, int has_post, int32_t lo, int32_t hi,
                                                           int32_t C, int8_t *out)
{
    const int64_t k = mdt_rqf_k(rq);
    const int32_t m = rq->m, sh = rq->sh, post = rq->post;
    const int32_t *const end = acc + n;
    while (acc != end) {
        *out = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, *acc++) + (has_post ? post : 0), full, lo, hi);
        out += C;
    }
}

/* The reference requantisation, for channels outside the folded form. */
static void dw_store_ref(const int32_t *acc, int32_t n, int32_t mult, int32_t shift, int32_t out_off, int32_t lo,
                         int32_t hi, int32_t C, int8_t *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i * C] = (int8_t)mdt_clamp(mdt_mbqm(acc[i], mult, shift) + out_off, lo, hi);
    }
}

int mdt_dw3x3_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output)
{
    int16_t buf[GROUP * 3 * DW_COLS];
    int32_t acc[DW_COLS];
    const int32_t C = p->in_c, in_h = p->in_h, in_w = p->in_w, out_h = p->out_h, out_w = p->out_w;
    const int32_t stride = p->stride_w, stride_h = p->stride_h, pad_w = p->pad_w, pad_h = p->pad_h;
    const int32_t in_off = p->input_offset, lo = p->act_min, hi = p->act_max;
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)in_off << 16) | (uint16_t)in_off);
    const int full = lo == -128 && hi == 127;
    const int32_t out_w2 = (out_w + 1) & ~1;
    const int32_t ncols = (out_w2 - 2) * stride + 6; /* the last pair's loads reach column ncols - 1 */
    /* input columns the row reads: [0, ix_end), at buffer columns [pad_w, pad_w + ix_end) */
    const int32_t ix_end = ncols - pad_w < in_w ? ncols - pad_w : in_w;
    int32_t b, oy, c0, j;
    if (p->k_h != 3 || p->k_w != 3 || p->depth_multiplier != 1 || p->dil_h != 1 || p->dil_w != 1 ||
        (stride != 1 && stride != 2) || ncols > DW_COLS || out_w < 1 ||
        pad_w < 0 || ix_end < 0) {
        return 0;
    }
    /* the padding columns: zero for the whole call (the transposes only write the others) */
    for (j = 0; j < GROUP * 3; ++j) {
        int16_t *r = buf + j * DW_COLS;
        int32_t col;
        for (col = 0; col < pad_w; ++col) {
            r[col] = 0;
        }
        for (col = pad_w + ix_end; col < ncols; ++col) {
            r[col] = 0;
        }
    }
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * in_h * in_w * C;
        int8_t *out_b = output + b * out_h * out_w * C;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * stride_h - pad_h;
            for (c0 = 0; c0 < C; c0 += GROUP) {
                const int32_t n = C - c0 < GROUP ? C - c0 : GROUP;
                int32_t ky, ch;
                for (ky = 0; ky < 3; ++ky) {
                    const int32_t iy = iy0 + ky;
                    const int8_t *row = iy >= 0 && iy < in_h ? in_b + iy * in_w * C + c0 : NULL;
                    transpose_row(buf + ky * DW_COLS, row, C, n, 0, ix_end, pad_w, in_off, off2);
                }
                for (ch = 0; ch < n; ++ch) {
                    const int32_t c = c0 + ch;
                    const mdt_rqf rq = mdt_rqf_make(p->multiplier[c], p->shift[c], p->output_offset);
                    const int32_t bias = p->bias ? p->bias[c] : 0;
                    const int16_t *t = buf + ch * 3 * DW_COLS;
                    int8_t *out = out_b + oy * out_w * C + c;
                    if (stride == 1) {
                        dw_sums(t, p->filter + c, C, 1, out_w2 / 2, bias, acc);
                    } else {
                        dw_sums(t, p->filter + c, C, 2, out_w2 / 2, bias, acc);
                    }
                    if (!mdt_rqf_ok(p->multiplier[c], p->shift[c])) {
                        dw_store_ref(acc, out_w, p->multiplier[c], p->shift[c], p->output_offset, lo, hi, C, out);
                    } else if (rq.post != 0) {
                        dw_store(acc, out_w, &rq, 0, 1, lo, hi, C, out);
                    } else if (full) {
                        dw_store(acc, out_w, &rq, 1, 0, lo, hi, C, out);
                    } else {
                        dw_store(acc, out_w, &rq, 0, 0, lo, hi, C, out);
                    }
                }
            }
        }
    }
    return 1;
}

#else

typedef int mdt_dsp_dw_unused; /* keeps the translation unit non-empty without the DSP extension */

#endif /* MDT_DSP */
