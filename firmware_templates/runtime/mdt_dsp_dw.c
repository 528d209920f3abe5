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
#include "mdt_dsp_intrin.h"

/* Columns of the transposed buffer: bounds the output row width the fast path takes. The buffer
 * (8 KB of stack) holds 4 channels x DW_BUF / (4 x pitch) rows at the narrowest pitch of 16, 32, 64
 * or DW_COLS that fits the row: narrow layers are transposed whole, once. */
#define DW_COLS MDT_DSP_DW_COLS
#define DW_BUF (GROUP * 8 * DW_COLS)
#define GROUP 4

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
 * c0..c0+n-1 into buf[ch * cs + ix + pad]. The padding columns
 * around them are zeroed once per call by the caller. */
static void transpose_row(int16_t *buf, const int8_t *row, int32_t C, int32_t n, int32_t ix0, int32_t ix_end,
                          int32_t pad, int32_t in_off, int32_t off2, int32_t cs)
{
    int32_t ch, ix;
    int16_t *d = buf + ix0 + pad;
    if (row == NULL) {
        for (ch = 0; ch < n; ++ch) {
            int16_t *z = d + ch * cs;
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
                st32(d + cs, pk_bb(b0, b1));
                st32(d + 2 * cs, pk_tt(a0, a1));
                st32(d + 3 * cs, pk_tt(b0, b1));
                d += 2;
                s += 2 * C;
            }
        }
        for (; ix < ix_end; ++ix) {
            for (ch = 0; ch < n; ++ch) {
                d[ch * cs] = (int16_t)(s[ch] + in_off);
            }
            d += 1;
            s += C;
        }
    }
}

/* Raw sums of one channel's output row from its 3 transposed rows `t` (`pitch` apart), two outputs
 * per pass, with the kernel rows packed in `wk` (w0|w1, w2 per row); `stride` and `pitch` are
 * constants at each (inlined) call site, so the row offsets are load immediates. */
static inline __attribute__((always_inline)) void dw_sums(const int16_t *t, const int32_t *wk, int32_t stride,
                                                          int32_t pitch, int32_t npairs, int32_t bias,
                                                          int32_t *acc)
{
    const int32_t w01a = wk[0], w2a = wk[1], w01b = wk[2], w2b = wk[3], w01c = wk[4], w2c = wk[5];
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
            a0 = __smlad(ld32(t + pitch), w01b, a0);
            a1 = __smlad(ld32(t + pitch + 1), w01b, a1);
            x = ld32(t + pitch + 2);
            a0 = __smlabb(x, w2b, a0);
            a1 = __smlatb(x, w2b, a1);
            a0 = __smlad(ld32(t + 2 * pitch), w01c, a0);
            a1 = __smlad(ld32(t + 2 * pitch + 1), w01c, a1);
            x = ld32(t + 2 * pitch + 2);
            a0 = __smlabb(x, w2c, a0);
            a1 = __smlatb(x, w2c, a1);
        } else {
            int32_t x;
            a0 = __smlad(ld32(t), w01a, bias);
            x = ld32(t + 2);
            a0 = __smlabb(x, w2a, a0);
            a1 = __smlad(x, w01a, bias);
            a1 = __smlabb(ld32(t + 4), w2a, a1);
            a0 = __smlad(ld32(t + pitch), w01b, a0);
            x = ld32(t + pitch + 2);
            a0 = __smlabb(x, w2b, a0);
            a1 = __smlad(x, w01b, a1);
            a1 = __smlabb(ld32(t + pitch + 4), w2b, a1);
            a0 = __smlad(ld32(t + 2 * pitch), w01c, a0);
            x = ld32(t + 2 * pitch + 2);
            a0 = __smlabb(x, w2c, a0);
            a1 = __smlad(x, w01c, a1);
            a1 = __smlabb(ld32(t + 2 * pitch + 4), w2c, a1);
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

/* A band of output rows for the n channels of a group from c0; `stride` and `pitch` are constants.
 * Each channel's packed kernel rows and requantisation constants are derived here, once per band
 * (narrow layers are one band per group; row-wise calls one row). */
static inline __attribute__((always_inline)) void dw_group(const int16_t *buf, int32_t cs, int32_t n,
                                                           int32_t stride, int32_t stride_h, int32_t pitch,
                                                           int32_t nrows, int32_t out_w,
                                                           const mdt_dwconv_params *p, int32_t c0, int32_t *acc,
                                                           int8_t *out)
{
    const int32_t C = p->in_c, lo = p->act_min, hi = p->act_max, npairs = (out_w + 1) / 2;
    const int full = lo == -128 && hi == 127;
    const int32_t c_end = c0 + n;
    int32_t c;
    for (c = c0; c != c_end; ++c, buf += cs, ++out) {
        const int32_t mult = p->multiplier[c], shift = p->shift[c];
        const int8_t *w = p->filter + c;
        int32_t wk[6];
        const mdt_rqf rq = mdt_rqf_make(mult, shift, p->output_offset);
        const int32_t bias = p->bias ? p->bias[c] : 0;
        /* 0 folded + SSAT, 1 folded + clamp, 2 offset after the shift, 3 the reference */
        const int32_t variant = !mdt_rqf_ok(mult, shift) ? 3 : (rq.post != 0 ? 2 : (full ? 0 : 1));
        const int16_t *t = buf;
        int8_t *o = out;
        int32_t j;
        wk[0] = pk_bb(w[0], w[C]);
        wk[1] = w[2 * C];
        wk[2] = pk_bb(w[3 * C], w[4 * C]);
        wk[3] = w[5 * C];
        wk[4] = pk_bb(w[6 * C], w[7 * C]);
        wk[5] = w[8 * C];
        for (j = 0; j < nrows; ++j) {
            dw_sums(t, wk, stride, pitch, npairs, bias, acc);
            switch (variant) {
            case 0: dw_store(acc, out_w, &rq, 1, 0, lo, hi, C, o); break;
            case 1: dw_store(acc, out_w, &rq, 0, 0, lo, hi, C, o); break;
            case 2: dw_store(acc, out_w, &rq, 0, 1, lo, hi, C, o); break;
            default: dw_store_ref(acc, out_w, mult, shift, p->output_offset, lo, hi, C, o); break;
            }
            t += stride_h * pitch;
            o += out_w * C;
        }
    }
}

/* The group for each (stride, pitch) pair, so that dw_sums' row offsets are immediates. */
static void dw_group_any(const int16_t *buf, int32_t cs, int32_t n, int32_t stride,
                         int32_t stride_h, int32_t pitch, int32_t nrows, int32_t out_w, const mdt_dwconv_params *p,
                         int32_t c0, int32_t *acc, int8_t *out)
{
#define DW_GROUP(S, P) dw_group(buf, cs, n, S, stride_h, P, nrows, out_w, p, c0, acc, out)
    if (stride == 1) {
        switch (pitch) {
        case 16: DW_GROUP(1, 16); break;
        case 32: DW_GROUP(1, 32); break;
        case 64: DW_GROUP(1, 64); break;
        default: DW_GROUP(1, DW_COLS); break;
        }
    } else {
        switch (pitch) {
        case 16: DW_GROUP(2, 16); break;
        case 32: DW_GROUP(2, 32); break;
        case 64: DW_GROUP(2, 64); break;
        default: DW_GROUP(2, DW_COLS); break;
        }
    }
#undef DW_GROUP
}

int mdt_dw3x3_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output)
{
    int16_t buf[DW_BUF];
    int32_t acc[DW_COLS];
    const int32_t C = p->in_c, in_h = p->in_h, in_w = p->in_w, out_h = p->out_h, out_w = p->out_w;
    const int32_t stride = p->stride_w, stride_h = p->stride_h, pad_w = p->pad_w, pad_h = p->pad_h;
    const int32_t in_off = p->input_offset;
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)in_off << 16) | (uint16_t)in_off);
    const int32_t out_w2 = (out_w + 1) & ~1;
    const int32_t ncols = (out_w2 - 2) * stride + 6; /* the last pair's loads reach column ncols - 1 */
    /* input columns the row reads: [0, ix_end), at buffer columns [pad_w, pad_w + ix_end) */
    const int32_t ix_end = ncols - pad_w < in_w ? ncols - pad_w : in_w;
    /* rows of the narrowest pitch that holds ncols; as many rows per channel as the buffer allows */
    const int32_t pitch = ncols <= 16 ? 16 : (ncols <= 32 ? 32 : (ncols <= 64 ? 64 : DW_COLS));
    const int32_t rows_cap = DW_BUF / (GROUP * pitch), cs = rows_cap * pitch;
    /* output rows per band: their input rows all in the buffer at once */
    const int32_t band = (rows_cap - 3) / (stride_h > 0 ? stride_h : 1) + 1;
    int32_t b, c0;
    if (p->k_h != 3 || p->k_w != 3 || p->depth_multiplier != 1 || p->dil_h != 1 || p->dil_w != 1 ||
        (stride != 1 && stride != 2) || stride_h < 1 || ncols > DW_COLS || out_w < 1 || pad_w < 0 ||
        ix_end < 0) {
        return 0;
    }
    /* the padding columns of the rows in use: zero for the whole call (the transposes only write
     * the others) */
    {
        const int32_t used = (out_h - 1) * stride_h + 3 < rows_cap ? (out_h - 1) * stride_h + 3 : rows_cap;
        int32_t ch, r;
        for (ch = 0; ch < GROUP; ++ch) {
            for (r = 0; r < used; ++r) {
                int16_t *row = buf + ch * cs + r * pitch;
                int32_t col;
                for (col = 0; col < pad_w; ++col) {
                    row[col] = 0;
                    __asm__("" : "+r"(col)); /* a few stores: no memset call */
                }
                for (col = pad_w + ix_end; col < ncols; ++col) {
                    row[col] = 0;
                    __asm__("" : "+r"(col));
                }
            }
        }
    }
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * in_h * in_w * C;
        int8_t *out_b = output + b * out_h * out_w * C;
        /* channel groups outermost, then bands of output rows */
        for (c0 = 0; c0 < C; c0 += GROUP) {
            const int32_t n = C - c0 < GROUP ? C - c0 : GROUP;
            int32_t oy;
            /* bands of output rows: their input rows transposed once each (rows shared by two bands
             * twice) */
            for (oy = 0; oy < out_h; oy += band) {
                const int32_t nrows = out_h - oy < band ? out_h - oy : band;
                const int32_t iy0 = oy * stride_h - pad_h, rows = (nrows - 1) * stride_h + 3;
                int32_t r;
                for (r = 0; r < rows; ++r) {
                    const int32_t iy = iy0 + r;
                    const int8_t *row = iy >= 0 && iy < in_h ? in_b + iy * in_w * C + c0 : NULL;
                    transpose_row(buf + r * pitch, row, C, n, 0, ix_end, pad_w, in_off, off2, cs);
                }
                dw_group_any(buf, cs, n, stride, stride_h, pitch, nrows, out_w, p, c0, acc,
                             out_b + oy * out_w * C + c0);
            }
        }
    }
    return 1;
}

#else

typedef int mdt_dsp_dw_unused; /* keeps the translation unit non-empty without the DSP extension */

#endif /* MDT_DSP */
