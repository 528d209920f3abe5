/*
 * mdt_dsp_dw.c - Cortex-M4 fast path of DEPTHWISE_CONV_2D for 3x3 kernels (depth multiplier 1, no
 * dilation, horizontal stride 1 or 2), bit-exact with TFLite's reference DepthwiseConvPerChannel.
 *
 * Per band of output rows and group of 4 channels, the input rows the band reads are transposed
 * once into a bounded stack buffer of int16 (row-major: [row][channel][column], input offset added,
 * padding as 0, which is what a padded tap contributes in the reference). Then, per channel, two asm
 * passes:
 *  - sums: four adjacent outputs per iteration (stride 1: 3 word loads and 8 multiply-accumulates
 *    per kernel row, the packed weight pairs (w0|w1) and (w1|w2) covering the odd third tap with
 *    SMLABT / SMLATB; stride 2: 5 loads and 8 MACs), 36 MACs in 37 or 43 instructions, and a
 *    pair-of-outputs pass for widths of 4k + 1 or 4k + 2;
 *  - requantisation of the band's sums, four outputs per iteration in six instructions each.
 * Sums are the reference's integers in another order, doubled (weights and bias times 2: the fast
 * requantisation below wants 2x).
 *
 * Requantisation (why it is exact): for m > 0, srdhm(x, m) == floor((2x m + 2^31) / 2^32) (see
 * mdt_dsp_rq.h), which SMMLAR computes, accumulating Ra 2^32 in the same exact 64-bit sum. The
 * rounding right shift by e (ties away from zero) is floor((v + 2^(e-1) - [v<0]) / 2^e), and the
 * output offset adds off 2^e before the same floor, so
 *   out = (SMMLAR(2x, m, 2^(e-1) + off 2^e + (x >> 31)) >> e), saturated to int8,
 * where [x<0] stands for [v<0] (they differ only where both give 0). The high word cannot overflow
 * for e <= 22 and |x| < 2^30. Channels outside (left shifts, e > 22, a bias too large to double,
 * an activation range narrower than int8) take the C requantisation of mdt_dsp_rq.h or the
 * reference's.
 */
#include "mdt_dsp.h"

#if MDT_DSP

#include <string.h>

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"
#include "mdt_dsp_intrin.h"

/* The transposed buffer: 4 channels x rows x pitch int16 (8 KB at the default 128 columns), the
 * pitch the narrowest of 16, 32, 64, 128 that holds the columns a row's outputs read (each pitch has
 * its own asm passes: row offsets are immediates). Sums: DW_ACC of a band's rows at once, + 3 for
 * the last iteration's unused outputs. Stack: 8 KB + 0.5 KB + about 200 bytes of frames. */
#define DW_COLS MDT_DSP_DW_COLS
#define DW_BUF (GROUP * 8 * DW_COLS)
#define GROUP 4
#define DW_ACC 124
#define DW_BIAS_MAX (1 << 29) /* |bias| up to this is doubled; larger biases take the C requantisation */

/* ---------------------------------------------------------------------------------------------- */
/* asm passes. Sums (t: the channel's first row at the first output's first tap; acc; job; the acc
 * address after the last row):
 *   void mdt_dw_s<stride>_<pitch>(const int16_t *t, int32_t *acc, const int32_t *job, int32_t *end)
 * four outputs per iteration over job[12] / 16 iterations per row, rows until acc == end;
 *   void mdt_dw_s<stride>p_<pitch>(...)
 * one pair per row (t and acc at the pair). job: bias x 4 (doubled), the packed weights
 * (w0|w1, w1|w2) of kernel rows 0, 1, 2, then t and acc advances per row after the 4-output
 * iterations, the acc bytes of those iterations, t and acc advances per row of the pair pass.
 * Requantisation: void mdt_dw_rq(const int32_t *acc, int8_t *out, const int32_t *job) with job
 * {n, C, m, 2^(e-1) + off 2^e, e}: n outputs to out, out + C, ... */
/* ---------------------------------------------------------------------------------------------- */
__asm__(
    "  .pushsection .text.mdt_dw_asm,\"ax\",%progbits\n"
    "  .syntax unified\n"
    "  .thumb\n"
    /* one kernel row of 4 stride-1 outputs r6..r9 from t (r11) + off - 8 (t already advanced) */
    "  .macro MDT_DW_S1ROW first, off, wa, wb\n"
    "  .if \\first\n"
    "  ldr r10, [r11], #8\n"
    "  .else\n"
    "  ldr r10, [r11, #(\\off - 8)]\n"
    "  .endif\n"
    "  smlad r6, r10, \\wa, r6\n"
    "  smlatb r7, r10, \\wa, r7\n"
    "  ldr r10, [r11, #(\\off - 4)]\n"
    "  smlabt r6, r10, \\wb, r6\n"
    "  smlad r7, r10, \\wb, r7\n"
    "  smlad r8, r10, \\wa, r8\n"
    "  smlatb r9, r10, \\wa, r9\n"
    "  ldr r10, [r11, #\\off]\n"
    "  smlabt r8, r10, \\wb, r8\n"
    "  smlad r9, r10, \\wb, r9\n"
    "  .endm\n"
    /* the same at stride 2: columns 0..9, t advanced by 16 */
    "  .macro MDT_DW_S2ROW first, off, wa, wb\n"
    "  .if \\first\n"
    "  ldr r10, [r11], #16\n"
    "  .else\n"
    "  ldr r10, [r11, #(\\off - 16)]\n"
    "  .endif\n"
    "  smlad r6, r10, \\wa, r6\n"
    "  ldr r10, [r11, #(\\off - 12)]\n"
    "  smlabt r6, r10, \\wb, r6\n"
    "  smlad r7, r10, \\wa, r7\n"
    "  ldr r10, [r11, #(\\off - 8)]\n"
    "  smlabt r7, r10, \\wb, r7\n"
    "  smlad r8, r10, \\wa, r8\n"
    "  ldr r10, [r11, #(\\off - 4)]\n"
    "  smlabt r8, r10, \\wb, r8\n"
    "  smlad r9, r10, \\wa, r9\n"
    "  ldr r10, [r11, #\\off]\n"
    "  smlabt r9, r10, \\wb, r9\n"
    "  .endm\n"
    /* one kernel row of a pair (r6, r7) from t (r11) + off, not advanced */
    "  .macro MDT_DW_S1PROW off, wa, wb\n"
    "  ldr r8, [r11, #\\off]\n"
    "  smlad r6, r8, \\wa, r6\n"
    "  smlatb r7, r8, \\wa, r7\n"
    "  ldr r8, [r11, #(\\off + 4)]\n"
    "  smlabt r6, r8, \\wb, r6\n"
    "  smlad r7, r8, \\wb, r7\n"
    "  .endm\n"
    "  .macro MDT_DW_S2PROW off, wa, wb\n"
    "  ldr r8, [r11, #\\off]\n"
    "  smlad r6, r8, \\wa, r6\n"
    "  ldr r8, [r11, #(\\off + 4)]\n"
    "  smlabt r6, r8, \\wb, r6\n"
    "  smlad r7, r8, \\wa, r7\n"
    "  ldr r8, [r11, #(\\off + 8)]\n"
    "  smlabt r7, r8, \\wb, r7\n"
    "  .endm\n"
    /* sums, 4 outputs per iteration; RS: bytes between a channel's rows */
    "  .macro MDT_DW_SUMS name, stride, RS\n"
    "  .p2align 2\n"
    "  .global \\name\n"
    "  .hidden \\name\n"
    "  .type \\name, %function\n"
    "  .thumb_func\n"
    "\\name:\n"
    "  push {r4-r11, lr}\n"
    "  add r4, r2, #40\n"
    "  ldm r4, {r4-r6}\n"       /* t advance, acc advance, acc bytes per row */
    "  mov r7, r3\n"            /* end */
    "  push {r4-r7}\n"
    "  add lr, r1, r6\n"        /* end of the first row's iterations */
    "  ldm r2!, {r3-r6}\n"
    "  push {r3-r6}\n"          /* sp: bias x 4, then the row parameters */
    "  mov r11, r0\n"
    "  mov r12, r1\n"
    "  ldm r2, {r0-r5}\n"       /* weights */
    "1:\n"
    "  ldm sp, {r6-r9}\n"
    "  .if \\stride == 1\n"
    "  MDT_DW_S1ROW 1, 0, r0, r1\n"
    "  MDT_DW_S1ROW 0, \\RS, r2, r3\n"
    "  MDT_DW_S1ROW 0, (2 * \\RS), r4, r5\n"
    "  .else\n"
    "  MDT_DW_S2ROW 1, 0, r0, r1\n"
    "  MDT_DW_S2ROW 0, \\RS, r2, r3\n"
    "  MDT_DW_S2ROW 0, (2 * \\RS), r4, r5\n"
    "  .endif\n"
    "  stm r12!, {r6-r9}\n"
    "  cmp r12, lr\n"
    "  bne 1b\n"
    "  ldrd r10, lr, [sp, #16]\n" /* next row */
    "  add r11, r11, r10\n"
    "  add r12, r12, lr\n"
    "  ldrd r10, lr, [sp, #24]\n"
    "  cmp r12, lr\n"
    "  add lr, r12, r10\n"
    "  bne 1b\n"
    "  add sp, sp, #32\n"
    "  pop {r4-r11, pc}\n"
    "  .size \\name, . - \\name\n"
    "  .endm\n"
    /* sums, one pair per row */
    "  .macro MDT_DW_PAIR name, stride, RS\n"
    "  .p2align 2\n"
    "  .global \\name\n"
    "  .hidden \\name\n"
    "  .type \\name, %function\n"
    "  .thumb_func\n"
    "\\name:\n"
    "  push {r4-r11, lr}\n"
    "  mov r11, r0\n"
    "  mov r12, r1\n"
    "  mov lr, r3\n"
    "  ldr r6, [r2]\n"
    "  mov r7, r6\n"
    "  push {r6, r7}\n"         /* sp: bias x 2 */
    "  ldr r9, [r2, #52]\n"
    "  ldr r10, [r2, #56]\n"
    "  add r2, r2, #16\n"
    "  ldm r2, {r0-r5}\n"
    "1:\n"
    "  ldrd r6, r7, [sp]\n"
    "  .if \\stride == 1\n"
    "  MDT_DW_S1PROW 0, r0, r1\n"
    "  MDT_DW_S1PROW \\RS, r2, r3\n"
    "  MDT_DW_S1PROW (2 * \\RS), r4, r5\n"
    "  .else\n"
    "  MDT_DW_S2PROW 0, r0, r1\n"
    "  MDT_DW_S2PROW \\RS, r2, r3\n"
    "  MDT_DW_S2PROW (2 * \\RS), r4, r5\n"
    "  .endif\n"
    "  strd r6, r7, [r12]\n"
    "  add r11, r11, r9\n"
    "  add r12, r12, r10\n"
    "  cmp r12, lr\n"
    "  bne 1b\n"
    "  add sp, sp, #8\n"
    "  pop {r4-r11, pc}\n"
    "  .size \\name, . - \\name\n"
    "  .endm\n"
    "  MDT_DW_SUMS mdt_dw_s1_16, 1, 128\n"
    "  MDT_DW_SUMS mdt_dw_s1_32, 1, 256\n"
    "  MDT_DW_SUMS mdt_dw_s1_64, 1, 512\n"
    "  MDT_DW_SUMS mdt_dw_s1_128, 1, 1024\n"
    "  MDT_DW_SUMS mdt_dw_s2_16, 2, 128\n"
    "  MDT_DW_SUMS mdt_dw_s2_32, 2, 256\n"
    "  MDT_DW_SUMS mdt_dw_s2_64, 2, 512\n"
    "  MDT_DW_SUMS mdt_dw_s2_128, 2, 1024\n"
    "  MDT_DW_PAIR mdt_dw_s1p_16, 1, 128\n"
    "  MDT_DW_PAIR mdt_dw_s1p_32, 1, 256\n"
    "  MDT_DW_PAIR mdt_dw_s1p_64, 1, 512\n"
    "  MDT_DW_PAIR mdt_dw_s1p_128, 1, 1024\n"
    "  MDT_DW_PAIR mdt_dw_s2p_16, 2, 128\n"
    "  MDT_DW_PAIR mdt_dw_s2p_32, 2, 256\n"
    "  MDT_DW_PAIR mdt_dw_s2p_64, 2, 512\n"
    "  MDT_DW_PAIR mdt_dw_s2p_128, 2, 1024\n"
    /* requantisation: r0 acc, r1 out, r3 C, r12 3C, r4 m, r5 2^(e-1) + off 2^e, r6 e */
    "  .p2align 2\n"
    "  .global mdt_dw_rq\n"
    "  .hidden mdt_dw_rq\n"
    "  .type mdt_dw_rq, %function\n"
    "  .thumb_func\n"
    "mdt_dw_rq:\n"
    "  push {r4-r11, lr}\n"
    "  ldm r2, {r2-r6}\n"
    "  add r12, r3, r3, lsl #1\n"
    "  and lr, r2, #3\n"
    "  bic r2, r2, #3\n"
    "  add r2, r0, r2, lsl #2\n"
    "  cmp r0, r2\n"
    "  beq 2f\n"
    "1:\n"
    "  ldm r0!, {r7-r10}\n"
    "  add r11, r5, r7, asr #31\n"
    "  smmlar r7, r7, r4, r11\n"
    "  add r11, r5, r8, asr #31\n"
    "  smmlar r8, r8, r4, r11\n"
    "  add r11, r5, r9, asr #31\n"
    "  smmlar r9, r9, r4, r11\n"
    "  add r11, r5, r10, asr #31\n"
    "  smmlar r10, r10, r4, r11\n"
    "  asr r7, r7, r6\n"
    "  asr r8, r8, r6\n"
    "  asr r9, r9, r6\n"
    "  asr r10, r10, r6\n"
    "  ssat r7, #8, r7\n"
    "  ssat r8, #8, r8\n"
    "  ssat r9, #8, r9\n"
    "  ssat r10, #8, r10\n"
    "  strb r7, [r1]\n"
    "  strb r8, [r1, r3]\n"
    "  strb r9, [r1, r3, lsl #1]\n"
    "  strb r10, [r1, r12]\n"
    "  add r1, r1, r3, lsl #2\n"
    "  cmp r0, r2\n"
    "  bne 1b\n"
    "2:\n"
    "  subs lr, lr, #1\n"
    "  bmi 3f\n"
    "  ldr r7, [r0], #4\n"
    "  add r11, r5, r7, asr #31\n"
    "  smmlar r7, r7, r4, r11\n"
    "  asr r7, r7, r6\n"
    "  ssat r7, #8, r7\n"
    "  strb r7, [r1]\n"
    "  add r1, r1, r3\n"
    "  b 2b\n"
    "3:\n"
    "  pop {r4-r11, pc}\n"
    "  .size mdt_dw_rq, . - mdt_dw_rq\n"
    "  .popsection\n");

typedef void mdt_dw_sums_fn(const int16_t *t, int32_t *acc, const int32_t *job, int32_t *end);
mdt_dw_sums_fn mdt_dw_s1_16, mdt_dw_s1_32, mdt_dw_s1_64, mdt_dw_s1_128;
mdt_dw_sums_fn mdt_dw_s2_16, mdt_dw_s2_32, mdt_dw_s2_64, mdt_dw_s2_128;
mdt_dw_sums_fn mdt_dw_s1p_16, mdt_dw_s1p_32, mdt_dw_s1p_64, mdt_dw_s1p_128;
mdt_dw_sums_fn mdt_dw_s2p_16, mdt_dw_s2p_32, mdt_dw_s2p_64, mdt_dw_s2p_128;
void mdt_dw_rq(const int32_t *acc, int8_t *out, const int32_t *job);

/* [stride - 1][pitch 16, 32, 64, 128] */
static mdt_dw_sums_fn *const dw_sums_tab[2][4] = {
    {mdt_dw_s1_16, mdt_dw_s1_32, mdt_dw_s1_64, mdt_dw_s1_128},
    {mdt_dw_s2_16, mdt_dw_s2_32, mdt_dw_s2_64, mdt_dw_s2_128},
};
static mdt_dw_sums_fn *const dw_pair_tab[2][4] = {
    {mdt_dw_s1p_16, mdt_dw_s1p_32, mdt_dw_s1p_64, mdt_dw_s1p_128},
    {mdt_dw_s2p_16, mdt_dw_s2p_32, mdt_dw_s2p_64, mdt_dw_s2p_128},
};

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

/* two words to a word-aligned address in one STRD */
static inline void st64(int16_t *d, int32_t a, int32_t b)
{
    __asm__ volatile("strd %1, %2, [%0]" : : "r"(d), "r"(a), "r"(b) : "memory");
}

/* Transposes npx pixels (sx bytes apart) of channels c..c+n-1 from s into d + ch * pitch (d word
 * aligned), input offset added. */
static void transpose_row(int16_t *d, const int8_t *s, int32_t sx, int32_t n, int32_t npx, int32_t in_off,
                          int32_t off2, int32_t pitch)
{
    int32_t i = 0, ch;
    if (n == GROUP) {
        /* per pixel pair: bytes (p0 c0, p0 c1, p1 c0, p1 c1) and (.. c2, .. c3), then SXTAB16 */
        for (; i + 4 <= npx; i += 4) {
            const int32_t v0 = ld32(s), v1 = ld32(s + sx), v2 = ld32(s + 2 * sx), v3 = ld32(s + 3 * sx);
            const int32_t lo0 = pk_bb(v0, v1), hi0 = pk_tt(v0, v1), lo1 = pk_bb(v2, v3), hi1 = pk_tt(v2, v3);
            st64(d, __sxtab16(off2, lo0), __sxtab16(off2, lo1));
            st64(d + pitch, sxtab16_ror8(off2, lo0), sxtab16_ror8(off2, lo1));
            st64(d + 2 * pitch, __sxtab16(off2, hi0), __sxtab16(off2, hi1));
            st64(d + 3 * pitch, sxtab16_ror8(off2, hi0), sxtab16_ror8(off2, hi1));
            d += 4;
            s += 4 * sx;
        }
        if (i + 2 <= npx) {
            const int32_t v0 = ld32(s), v1 = ld32(s + sx);
            const int32_t lo = pk_bb(v0, v1), hi = pk_tt(v0, v1);
            st32(d, __sxtab16(off2, lo));
            st32(d + pitch, sxtab16_ror8(off2, lo));
            st32(d + 2 * pitch, __sxtab16(off2, hi));
            st32(d + 3 * pitch, sxtab16_ror8(off2, hi));
            d += 2;
            s += 2 * sx;
            i += 2;
        }
    }
    for (; i < npx; ++i) {
        for (ch = 0; ch < n; ++ch) {
            d[ch * pitch] = (int16_t)(s[ch] + in_off);
        }
        d += 1;
        s += sx;
    }
}

/* Zero halfwords [c0, c1) of rows r0..r1-1 (all 4 channels), by words where aligned. */
static void zero_cols(int16_t *buf, int32_t pitch, int32_t r0, int32_t r1, int32_t c0, int32_t c1)
{
    int32_t r, k;
    for (r = r0 * GROUP; r < r1 * GROUP; ++r) {
        int16_t *row = buf + r * pitch;
        for (k = c0; k < c1; ++k) {
            row[k] = 0;
            __asm__("" : "+r"(k)); /* a few stores: no memset call */
        }
    }
}

/* The C requantisation of n doubled-or-not sums (for channels the asm pass does not take). */
static void dw_store_c(const int32_t *acc, int32_t n, int32_t dbl, int32_t mult, int32_t shift,
                       const mdt_dwconv_params *p, int8_t *out)
{
    const int32_t lo = p->act_min, hi = p->act_max, C = p->in_c;
    int32_t i;
    if (mdt_rqf_ok(mult, shift)) {
        const mdt_rqf rq = mdt_rqf_make(mult, shift, p->output_offset);
        const int64_t k = mdt_rqf_k(&rq);
        for (i = 0; i < n; ++i) {
            out[i * C] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, rq.m, rq.sh, acc[i] >> dbl) + rq.post, 0, lo, hi);
        }
    } else {
        for (i = 0; i < n; ++i) {
            out[i * C] = (int8_t)mdt_clamp(mdt_mbqm(acc[i] >> dbl, mult, shift) + p->output_offset, lo, hi);
        }
    }
}

int mdt_dw3x3_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output)
{
    int16_t buf[DW_BUF] __attribute__((aligned(8)));
    int32_t acc[DW_ACC + 4];
    int32_t job[15], rqjob[5];
    const int32_t C = p->in_c, in_h = p->in_h, in_w = p->in_w, out_h = p->out_h, out_w = p->out_w;
    const int32_t stride = p->stride_w, stride_h = p->stride_h, pad_w = p->pad_w, pad_h = p->pad_h;
    const int32_t in_off = p->input_offset;
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)in_off << 16) | (uint16_t)in_off);
    const int full = p->act_min == -128 && p->act_max == 127;
    /* 4-output iterations per row, and a pair for widths 4k + 1, 4k + 2 (4k + 3: one more 4) */
    const int32_t rem = out_w & 3, pair = rem == 1 || rem == 2;
    const int32_t nq = out_w / 4 + (rem == 3);
    /* columns the row's outputs read from the first tap; lead puts input column 0 on a word */
    const int32_t lead = pad_w & 1;
    const int32_t reach = stride == 1 ? 4 * nq + (pair ? 4 : 2) : 8 * nq + (pair ? 6 : 2);
    const int32_t ncols = lead + reach;
    const int32_t ix_end = ncols - lead - pad_w < in_w ? ncols - lead - pad_w : in_w;
    const int32_t pi = ncols <= 16 ? 0 : (ncols <= 32 ? 1 : (ncols <= 64 ? 2 : 3));
    const int32_t pitch = 16 << pi, rs = 8 * pitch;
    const int32_t rows_cap = DW_BUF / (GROUP * pitch);
    /* output rows per band: their input rows all in the buffer at once */
    const int32_t band = (rows_cap - 3) / (stride_h > 0 ? stride_h : 1) + 1;
    /* output rows per requantisation pass */
    const int32_t chunk = out_w <= DW_ACC ? DW_ACC / out_w : 1;
    int32_t b, c0, oy;
    if (p->k_h != 3 || p->k_w != 3 || p->depth_multiplier != 1 || p->dil_h != 1 || p->dil_w != 1 ||
        (stride != 1 && stride != 2) || stride_h < 1 || out_w < 1 || out_w > DW_ACC || out_h < 1 ||
        pad_w < 0 || ix_end < 1 || pitch > DW_COLS || ncols > pitch || rows_cap < 3) {
        return 0;
    }
    {
        /* the padding columns of the rows in use: zero for the whole call (the transposes only
         * write the others) */
        const int32_t used = (out_h - 1) * stride_h + 3 < rows_cap ? (out_h - 1) * stride_h + 3 : rows_cap;
        zero_cols(buf, pitch, 0, used, 0, lead + pad_w);
        zero_cols(buf, pitch, 0, used, lead + pad_w + ix_end, ncols);
    }
    job[10] = stride_h * rs - (stride == 1 ? 8 : 16) * nq;
    job[11] = 4 * (out_w - 4 * nq);
    job[12] = 16 * nq;
    job[13] = stride_h * rs;
    job[14] = 4 * out_w;
    rqjob[1] = C;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * in_h * in_w * C;
        int8_t *out_b = output + b * out_h * out_w * C;
        for (oy = 0; oy < out_h; oy += band) {
            const int32_t nrows = out_h - oy < band ? out_h - oy : band;
            const int32_t iy0 = oy * stride_h - pad_h, rows = (nrows - 1) * stride_h + 3;
            int32_t r;
            /* padded rows of the band: zero for all its groups */
            for (r = 0; r < rows; ++r) {
                if (iy0 + r < 0 || iy0 + r >= in_h) {
                    zero_cols(buf, pitch, r, r + 1, 0, ncols);
                }
            }
            for (c0 = 0; c0 < C; c0 += GROUP) {
                const int32_t n = C - c0 < GROUP ? C - c0 : GROUP;
                int32_t ch;
                for (r = 0; r < rows; ++r) {
                    const int32_t iy = iy0 + r;
                    if (iy >= 0 && iy < in_h) {
                        transpose_row(buf + r * GROUP * pitch + lead + pad_w, in_b + iy * in_w * C + c0, C, n,
                                      ix_end, in_off, off2, pitch);
                    }
                }
                for (ch = 0; ch < n; ++ch) {
                    const int32_t c = c0 + ch;
                    const int32_t mult = p->multiplier[c], shift = p->shift[c];
                    const int32_t bias = p->bias ? p->bias[c] : 0;
                    const int32_t dbl = bias >= -DW_BIAS_MAX && bias <= DW_BIAS_MAX;
                    const int8_t *w = p->filter + c;
                    /* the asm requantisation: right shift e in 1..22 (or a zero multiplier) */
                    const int32_t e = mult == 0 ? 1 : -shift;
                    const int fast = full && dbl && mult >= 0 && e >= 1 && e <= 22;
                    const int16_t *t0 = buf + ch * pitch + lead;
                    int32_t k, j;
                    for (k = 0; k < 4; ++k) {
                        job[k] = (int32_t)((uint32_t)bias << dbl);
                    }
                    for (k = 0; k < 3; ++k) {
                        const int32_t wa = w[3 * k * C] * (1 + dbl), wb = w[(3 * k + 1) * C] * (1 + dbl);
                        const int32_t wc = w[(3 * k + 2) * C] * (1 + dbl);
                        job[4 + 2 * k] = pk_bb(wa, wb);
                        job[5 + 2 * k] = pk_bb(wb, wc);
                    }
                    if (fast) {
                        rqjob[2] = mult;
                        rqjob[3] = (int32_t)((1u << (e - 1)) + ((uint32_t)p->output_offset << e));
                        rqjob[4] = e;
                    }
                    for (j = 0; j < nrows; j += chunk) {
                        const int32_t nr = nrows - j < chunk ? nrows - j : chunk;
                        const int16_t *t = t0 + j * stride_h * GROUP * pitch;
                        int8_t *o = out_b + ((oy + j) * out_w) * C + c;
                        if (pair) {
                            dw_pair_tab[stride - 1][pi](t + stride * 4 * nq, acc + 4 * nq, job,
                                                        acc + 4 * nq + nr * out_w);
                        }
                        if (nq > 0) {
                            dw_sums_tab[stride - 1][pi](t, acc, job, acc + nr * out_w);
                        }
                        if (fast) {
                            rqjob[0] = nr * out_w;
                            mdt_dw_rq(acc, o, rqjob);
                        } else {
                            dw_store_c(acc, nr * out_w, dbl, mult, shift, p, o);
                        }
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
