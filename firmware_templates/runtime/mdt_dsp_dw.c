/*
 * mdt_dsp_dw.c - Cortex-M4 fast path of DEPTHWISE_CONV_2D for 3x3 kernels (depth multiplier 1, no
 * dilation, horizontal stride 1 or 2), bit-exact with TFLite's reference DepthwiseConvPerChannel.
 *
 * Two layouts of the input in a buffer of int16 in the layer's scratch (input offset added, padding
 * as 0, which is what a padded tap contributes in the reference):
 *  - transposed rows, [row][channel][column] for a group of 4 channels (the band's rows transposed
 *    once per group, 4 pixels in 23 instructions). Per channel, asm sums of four adjacent outputs
 *    per iteration (stride 1: 3 word loads and 8 multiply-accumulates per kernel row, the weight
 *    pairs (w0|w1) and (w1|w2) covering the odd third tap with SMLABT / SMLATB; stride 2: 5 loads
 *    and 8 MACs): 36 MACs in 37 or 43 instructions, a pair of outputs after them for widths 4k + 1,
 *    4k + 2; then the asm requantisation of the sums, 5 instructions an output;
 *  - channel-interleaved rows (per column the words (c0|c2), (c1|c3)) for layers of at most
 *    DW_DIRECT_MAX outputs per channel (row-wise calls, 3x3 outputs), where per-channel setup would
 *    dominate: per output pixel and tap one LDRD of the 4 channels, one of their weights and 4
 *    SMLAxy, for 4 channels at once.
 * Where every channel takes the fast requantisation, one asm routine runs all groups (weights,
 * biases and constants read from the layer's arrays); otherwise the C prepares a job per channel.
 * Sums are the reference's integers in another order, doubled (weights and bias times 2: the
 * requantisation wants 2x).
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
#include <stddef.h>

#include "mdt_dsp.h"

#if MDT_DSP

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"
#include "mdt_dsp_intrin.h"

/* The transposed buffer: 4 channels x rows x pitch int16, the pitch the narrowest of 16, 32, 64, 128
 * that holds the columns a row's outputs read (each pitch has its own asm passes: row offsets are
 * immediates). A band holds at most DW_BUF int16 (7.5 KB: 7 rows of 128, 15 of 64, 30 of 32, 60 of
 * 16); the buffer itself is in the layer's scratch, as many of those rows as the layer's bands use
 * (3 for a row-wise call), after the C path's context (dw_ctx: sums, DW_ACC of a band's rows at once
 * + 4 for the last iteration's unused outputs, and a channel's job). The band descriptor and
 * the transposition's job are there too (dw_call); the stack keeps mdt_dw3x3_dsp's and the asm
 * routines' own frames. */
#define DW_COLS MDT_DSP_DW_COLS
#define DW_BUF (GROUP * 15 * DW_COLS / 2)
#define GROUP 4
#define DW_ACC 124
#define DW_DS 32 /* direct path: sums per channel (acc holds 4 channels' DW_DS) */
#ifndef DW_DIRECT_MAX
#define DW_DIRECT_MAX 16 /* outputs per channel up to which the direct path runs the layer */
#endif
#define DW_JOB 14 /* bias x 4, 6 weights, geometry pointer, m, 2^(e-1) + off 2^e, e */
#define DW_BIAS_MAX (1u << 29) /* |bias| under this is doubled; larger biases take the C requantisation */

/* asm routines (RS, the bytes between a channel's rows, and P, the pitch, are immediates of each
 * pitch's copy):
 *   void mdt_dw_tr_<P>(int16_t *d, const int8_t *s, const int32_t *job): a band's input rows of 4
 *     channels to transposed rows; job {C, d advance, s advance per row, bytes of 4-pixel blocks
 *     per row, 1: a 2-pixel block, 2: a last pixel, rows, offset in both halves};
 *   mdt_dw_s<stride>_<P>: one channel's rows of sums (custom convention, on the frame of the two
 *     drivers below);
 *   mdt_dw_rq: the requantisation of one channel's sums (a subroutine of the drivers);
 *   void mdt_dw_run(t, acc, job, out, end, n): n channels from C-prepared jobs (the C path);
 *   void mdt_dw_band(const dw_band *b): all groups of a band, every channel in the fast case;
 *   void mdt_dw_direct_s<stride>(const dw_direct *d): the direct path, the whole layer. */
__asm__(
    "  .pushsection .text.mdt_dw_asm,\"ax\",%progbits\n"
    "  .syntax unified\n"
    "  .thumb\n"
    "  .macro MDT_DW_FN name\n"
    "  .p2align 2\n"
    "  .global \\name\n"
    "  .hidden \\name\n"
    "  .type \\name, %function\n"
    "  .thumb_func\n"
    "\\name:\n"
    "  .endm\n"
    /* transposition; P: the pitch in halfwords */
    "  .macro MDT_DW_TR name, P\n"
    "  MDT_DW_FN \\name\n"
    "  push {r4-r11, lr}\n"
    "  ldr r10, [r2, #24]\n"
    "  ldr r12, [r2, #20]\n"
    "  ldr r3, [r2, #16]\n"
    "  ldr lr, [r2, #12]\n"
    "  ldrd r4, r5, [r2, #4]\n"
    "  ldr r2, [r2]\n"
    "  push {r3, r4, r5, lr}\n"  /* sp: flags, d advance, s advance, block bytes */
    "  add r3, r2, r2, lsl #1\n"
    "0:\n"
    "  ldr r11, [sp, #12]\n"
    "  add r11, r1, r11\n"
    "  cmp r1, r11\n"
    "  beq 2f\n"
    "1:\n"                       /* 4 pixels: (p0 c0, p0 c1, p1 c0, p1 c1), (.. c2, .. c3) per pair */
    "  ldr r4, [r1]\n"
    "  ldr r5, [r1, r2]\n"
    "  ldr r6, [r1, r2, lsl #1]\n"
    "  ldr r7, [r1, r3]\n"
    "  add r1, r1, r2, lsl #2\n"
    "  pkhbt r8, r4, r5, lsl #16\n"
    "  pkhtb r9, r5, r4, asr #16\n"
    "  pkhbt r4, r6, r7, lsl #16\n"
    "  pkhtb r5, r7, r6, asr #16\n"
    "  sxtab16 r6, r10, r8, ror #8\n"
    "  sxtab16 r7, r10, r4, ror #8\n"
    "  strd r6, r7, [r0, #(2 * \\P)]\n"
    "  sxtab16 r6, r10, r9\n"
    "  sxtab16 r7, r10, r5\n"
    "  strd r6, r7, [r0, #(4 * \\P)]\n"
    "  sxtab16 r6, r10, r9, ror #8\n"
    "  sxtab16 r7, r10, r5, ror #8\n"
    "  strd r6, r7, [r0, #(6 * \\P)]\n"
    "  sxtab16 r6, r10, r8\n"
    "  sxtab16 r7, r10, r4\n"
    "  strd r6, r7, [r0], #8\n"
    "  cmp r1, r11\n"
    "  bne 1b\n"
    "2:\n"
    "  ldr r4, [sp]\n"
    "  tst r4, #1\n"
    "  beq 3f\n"
    "  ldr r6, [r1]\n"
    "  ldr r7, [r1, r2]\n"
    "  add r1, r1, r2, lsl #1\n"
    "  pkhbt r8, r6, r7, lsl #16\n"
    "  pkhtb r9, r7, r6, asr #16\n"
    "  sxtab16 r6, r10, r8\n"
    "  sxtab16 r7, r10, r8, ror #8\n"
    "  sxtab16 r8, r10, r9\n"
    "  sxtab16 r9, r10, r9, ror #8\n"
    "  str r7, [r0, #(2 * \\P)]\n"
    "  str r8, [r0, #(4 * \\P)]\n"
    "  str r9, [r0, #(6 * \\P)]\n"
    "  str r6, [r0], #4\n"
    "3:\n"
    "  tst r4, #2\n"
    "  beq 4f\n"
    "  ldr r6, [r1]\n"
    "  add r1, r1, r2\n"
    "  sxtab16 r7, r10, r6\n"
    "  sxtab16 r8, r10, r6, ror #8\n"
    "  strh r7, [r0]\n"
    "  strh r8, [r0, #(2 * \\P)]\n"
    "  lsr r7, r7, #16\n"
    "  lsr r8, r8, #16\n"
    "  strh r7, [r0, #(4 * \\P)]\n"
    "  strh r8, [r0, #(6 * \\P)]\n"
    "  add r0, r0, #2\n"
    "4:\n"
    "  ldrd r4, r5, [sp, #4]\n"
    "  add r0, r0, r4\n"
    "  add r1, r1, r5\n"
    "  subs r12, r12, #1\n"
    "  bne 0b\n"
    "  add sp, sp, #16\n"
    "  pop {r4-r11, pc}\n"
    "  .size \\name, . - \\name\n"
    "  .endm\n"
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
    /* Rows of one channel's sums (4 outputs per iteration, then a pair where the frame says so):
     * called by mdt_dw_run on its frame with r0-r5 the weights, r11 t, r12 acc. */
    "  .macro MDT_DW_ROWS name, stride, RS\n"
    "  MDT_DW_FN \\name\n"
    "  str lr, [sp, #68]\n"
    "  ldr lr, [sp, #24]\n"
    "  add lr, r12, lr\n"       /* end of the first row's iterations */
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
    "  ldr r6, [sp, #32]\n"
    "  cbz r6, 2f\n"
    "  ldrd r6, r7, [sp]\n"
    "  .if \\stride == 1\n"
    "  MDT_DW_S1PROW 0, r0, r1\n"
    "  MDT_DW_S1PROW \\RS, r2, r3\n"
    "  MDT_DW_S1PROW (2 * \\RS), r4, r5\n"
    "  add r11, r11, #4\n"
    "  .else\n"
    "  MDT_DW_S2PROW 0, r0, r1\n"
    "  MDT_DW_S2PROW \\RS, r2, r3\n"
    "  MDT_DW_S2PROW (2 * \\RS), r4, r5\n"
    "  add r11, r11, #8\n"
    "  .endif\n"
    "  strd r6, r7, [r12], #8\n"
    "2:\n"
    "  ldrd r10, lr, [sp, #16]\n" /* next row */
    "  add r11, r11, r10\n"
    "  add r12, r12, lr\n"
    "  ldrd r10, lr, [sp, #24]\n"
    "  cmp r12, lr\n"
    "  add lr, r12, r10\n"
    "  bne 1b\n"
    "  ldr pc, [sp, #68]\n"
    "  .size \\name, . - \\name\n"
    "  .endm\n"
    "  MDT_DW_TR mdt_dw_tr_16, 16\n"
    "  MDT_DW_TR mdt_dw_tr_32, 32\n"
    "  MDT_DW_TR mdt_dw_tr_64, 64\n"
    "  MDT_DW_TR mdt_dw_tr_128, 128\n"
    "  MDT_DW_ROWS mdt_dw_s1_16, 1, 128\n"
    "  MDT_DW_ROWS mdt_dw_s1_32, 1, 256\n"
    "  MDT_DW_ROWS mdt_dw_s1_64, 1, 512\n"
    "  MDT_DW_ROWS mdt_dw_s1_128, 1, 1024\n"
    "  MDT_DW_ROWS mdt_dw_s2_16, 2, 128\n"
    "  MDT_DW_ROWS mdt_dw_s2_32, 2, 256\n"
    "  MDT_DW_ROWS mdt_dw_s2_64, 2, 512\n"
    "  MDT_DW_ROWS mdt_dw_s2_128, 2, 1024\n"
    /* Requantisation of [r0, r3) (sums) to r1, r1 + r2, ... (r2 = C) with r4 m, r5 2^(e-1) +
     * off 2^e, r6 e (1..22); a subroutine of the two drivers below (returns through sp+68 of their
     * frames; r12 3C, lr the end of the 4-output iterations). The 4-output iterations have one copy
     * per e, the shift folded into SSAT's (5 instructions an output). */
    "  .macro MDT_DW_RQ4 e\n"
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
    "  ssat r7, #8, r7, asr #\\e\n"
    "  ssat r8, #8, r8, asr #\\e\n"
    "  ssat r9, #8, r9, asr #\\e\n"
    "  ssat r10, #8, r10, asr #\\e\n"
    "  strb r7, [r1]\n"
    "  strb r8, [r1, r2]\n"
    "  strb r9, [r1, r2, lsl #1]\n"
    "  strb r10, [r1, r12]\n"
    "  add r1, r1, r2, lsl #2\n"
    "  cmp r0, lr\n"
    "  bne 1b\n"
    "  b 7f\n"
    "  .endm\n"
    "  .p2align 2\n"
    "mdt_dw_rq:\n"
    "  str lr, [sp, #68]\n"
    "  add r12, r2, r2, lsl #1\n"
    "  sub lr, r3, r0\n"
    "  bic lr, lr, #15\n"
    "  add lr, r0, lr\n"
    "  cmp r0, lr\n"
    "  beq 7f\n"
    "  sub r9, r6, #1\n"
    "  tbh [pc, r9, lsl #1]\n"
    "20:\n"
    "  .irp e, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22\n"
    "  .hword (mdt_dw_rq4_\\e - 20b) / 2\n"
    "  .endr\n"
    "  .irp e, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22\n"
    "mdt_dw_rq4_\\e:\n"
    "  MDT_DW_RQ4 \\e\n"
    "  .endr\n"
    "7:\n"
    "  cmp r0, r3\n"
    "  beq 9f\n"
    "8:\n"
    "  ldr r7, [r0], #4\n"
    "  add r11, r5, r7, asr #31\n"
    "  smmlar r7, r7, r4, r11\n"
    "  asr r7, r7, r6\n"
    "  ssat r7, #8, r7\n"
    "  strb r7, [r1]\n"
    "  add r1, r1, r2\n"
    "  cmp r0, r3\n"
    "  bne 8b\n"
    "9:\n"
    "  ldr pc, [sp, #68]\n"
    /* mdt_dw_run: n channels from C-prepared jobs, each its rows of sums then (job[13] = e != 0)
     * the requantisation of [acc, end) to out, out + C, ...; then the next job, t + geo[6] bytes,
     * out + 1. Frame: sp+0 bias x 4, +16 t advance, +20 acc advance, +24 acc bytes of a row's
     * 4-output iterations, +28 end, +32 pair flag, +36 C, +40 rows routine, +44 t stride, +48 acc,
     * +52 out, +56 job, +60 t, +64 n, +68 the rows routine's return. */
    "  MDT_DW_FN mdt_dw_run\n"
    "  push {r4-r11, lr}\n"
    "  sub sp, sp, #72\n"
    "  ldrd r4, r5, [sp, #108]\n"
    "  str r4, [sp, #28]\n"
    "  str r5, [sp, #64]\n"
    "  strd r1, r3, [sp, #48]\n"
    "  strd r2, r0, [sp, #56]\n"
    "  ldr r4, [r2, #40]\n"
    "  ldm r4, {r4-r10}\n"      /* geo: t advance, acc advance, acc bytes, pair, C, rows, t stride */
    "  add r11, sp, #16\n"
    "  stm r11, {r4-r6}\n"
    "  add r11, sp, #32\n"
    "  stm r11, {r7-r10}\n"
    "10:\n"
    "  ldr r2, [sp, #56]\n"
    "  ldm r2!, {r3-r6}\n"
    "  stm sp, {r3-r6}\n"
    "  ldm r2, {r0-r5}\n"       /* weights */
    "  ldr r11, [sp, #60]\n"
    "  ldr r12, [sp, #48]\n"
    "  ldr r6, [sp, #40]\n"
    "  blx r6\n"
    "  ldr r2, [sp, #56]\n"
    "  ldr r6, [r2, #52]\n"
    "  cbz r6, 11f\n"
    "  ldrd r4, r5, [r2, #44]\n"
    "  ldr r2, [sp, #36]\n"
    "  ldrd r0, r1, [sp, #48]\n"
    "  ldr r3, [sp, #28]\n"
    "  bl mdt_dw_rq\n"
    "11:\n"
    "  ldr r4, [sp, #64]\n"
    "  subs r4, r4, #1\n"
    "  beq 12f\n"
    "  str r4, [sp, #64]\n"
    "  ldrd r5, r6, [sp, #52]\n"
    "  add r5, r5, #1\n"
    "  add r6, r6, #56\n"
    "  strd r5, r6, [sp, #52]\n"
    "  ldr r5, [sp, #60]\n"
    "  ldr r6, [sp, #44]\n"
    "  add r5, r5, r6\n"
    "  str r5, [sp, #60]\n"
    "  b 10b\n"
    "12:\n"
    "  add sp, sp, #72\n"
    "  pop {r4-r11, pc}\n"
    "  .size mdt_dw_run, . - mdt_dw_run\n"
    /* mdt_dw_band(const dw_band *b): all groups of a band, the common case (full int8 range, every
     * channel's e in 1..22, m >= 0, |bias| < 2^29). Per group the transposition (when b->tr),
     * then per chunk of rows (its sums all in acc) and channel k: the weights (2 w0 | 2 w1),
     * (2 w1 | 2 w2) per kernel row and 2 bias straight from the layer's arrays, the rows of sums,
     * m, e = -shift, (2 off + 1) 2^(e-1) and the requantisation. The frame from sp+16 is a copy of
     * the dw_band: +16 t advance, +20 acc advance, +24 acc bytes of a row's 4-output iterations,
     * +28 end, +32 pair flag (the rows routine's), +36 C, +40 rows routine, +44 t stride, +48 acc,
     * +52 channel 0's output at the chunk, +56 filter, +60 channel 0's rows at the chunk, +64 k,
     * +68 the subroutines' return, +72 bias (or NULL), +76 multiplier, +80 shift, +84 2 off + 1, +88
     * channels, +92 transposition routine, +96 its job (or NULL), +100 its destination, +104 its
     * source, +108 rows per chunk, +112 rows, +116 acc bytes per row, +120 t and +124 out bytes
     * per chunk, +128 t and +132 out at the band, +136 rows left; sp+0 bias x 4. */
    "  MDT_DW_FN mdt_dw_band\n"
    "  push {r4-r11, lr}\n"
    "  sub sp, sp, #144\n"
    "  add r1, sp, #16\n"
    "  ldm r0!, {r3-r9}\n"
    "  stm r1!, {r3-r9}\n"
    "  ldm r0!, {r3-r9}\n"
    "  stm r1!, {r3-r9}\n"
    "  ldm r0!, {r3-r9}\n"
    "  stm r1!, {r3-r9}\n"
    "  ldm r0!, {r3-r9}\n"
    "  stm r1!, {r3-r9}\n"
    "  ldm r0!, {r3-r5}\n"
    "  stm r1!, {r3-r5}\n"
    "30:\n"                      /* group: transposition of channels k..k+3 */
    "  ldr r2, [sp, #96]\n"
    "  cbz r2, 33f\n"
    "  ldr r0, [sp, #100]\n"
    "  ldr r1, [sp, #104]\n"
    "  ldr r3, [sp, #64]\n"
    "  add r1, r1, r3\n"
    "  ldr r3, [sp, #92]\n"
    "  blx r3\n"
    "33:\n"
    "  ldrd r0, r1, [sp, #128]\n"
    "  ldr r2, [sp, #112]\n"
    "  str r0, [sp, #60]\n"
    "  str r1, [sp, #52]\n"
    "  str r2, [sp, #136]\n"
    "34:\n"                      /* chunk: end = acc + its rows x acc bytes per row */
    "  ldrd r0, r1, [sp, #108]\n"
    "  ldr r2, [sp, #136]\n"
    "  cmp r2, r0\n"
    "  it lt\n"
    "  movlt r0, r2\n"
    "  ldr r1, [sp, #116]\n"
    "  ldr r2, [sp, #48]\n"
    "  mla r0, r0, r1, r2\n"
    "  str r0, [sp, #28]\n"
    "10:\n"                      /* channel k */
    "  ldr r8, [sp, #64]\n"
    "  ldr r11, [sp, #36]\n"
    "  ldr r12, [sp, #56]\n"
    "  add r10, r11, r11, lsl #1\n"
    "  add r12, r12, r8\n"
    "  ldrsb r0, [r12]\n"
    "  ldrsb r1, [r12, r11]\n"
    "  ldrsb r2, [r12, r11, lsl #1]\n"
    "  add r12, r12, r10\n"
    "  lsl r0, r0, #1\n"
    "  pkhbt r0, r0, r1, lsl #17\n"
    "  lsl r1, r1, #1\n"
    "  pkhbt r1, r1, r2, lsl #17\n"
    "  ldrsb r2, [r12]\n"
    "  ldrsb r3, [r12, r11]\n"
    "  ldrsb r4, [r12, r11, lsl #1]\n"
    "  add r12, r12, r10\n"
    "  lsl r2, r2, #1\n"
    "  pkhbt r2, r2, r3, lsl #17\n"
    "  lsl r3, r3, #1\n"
    "  pkhbt r3, r3, r4, lsl #17\n"
    "  ldrsb r4, [r12]\n"
    "  ldrsb r5, [r12, r11]\n"
    "  ldrsb r6, [r12, r11, lsl #1]\n"
    "  lsl r4, r4, #1\n"
    "  pkhbt r4, r4, r5, lsl #17\n"
    "  lsl r5, r5, #1\n"
    "  pkhbt r5, r5, r6, lsl #17\n"
    "  ldr r7, [sp, #72]\n"
    "  mov r6, #0\n"
    "  cbz r7, 31f\n"
    "  ldr r6, [r7, r8, lsl #2]\n"
    "  lsl r6, r6, #1\n"
    "31:\n"
    "  strd r6, r6, [sp]\n"
    "  strd r6, r6, [sp, #8]\n"
    "  ldr r11, [sp, #60]\n"
    "  ldr r7, [sp, #44]\n"
    "  and r9, r8, #3\n"
    "  mla r11, r7, r9, r11\n"  /* t: the channel's rows in the group's buffer */
    "  ldr r12, [sp, #48]\n"
    "  ldr r6, [sp, #40]\n"
    "  blx r6\n"
    "  ldr r8, [sp, #64]\n"
    "  ldrd r7, r9, [sp, #76]\n"
    "  ldr r4, [r7, r8, lsl #2]\n"
    "  ldrsb r6, [r9, r8]\n"
    "  mvn r9, r6\n"             /* e - 1 = -shift - 1 */
    "  ldr r5, [sp, #84]\n"
    "  lsl r5, r5, r9\n"         /* (2 off + 1) 2^(e-1) */
    "  rsb r6, r6, #0\n"
    "  ldr r2, [sp, #36]\n"
    "  ldr r0, [sp, #48]\n"
    "  ldr r1, [sp, #52]\n"
    "  add r1, r1, r8\n"
    "  ldr r3, [sp, #28]\n"
    "  bl mdt_dw_rq\n"
    "  ldr r8, [sp, #64]\n"
    "  add r8, r8, #1\n"
    "  str r8, [sp, #64]\n"
    "  tst r8, #3\n"
    "  bne 10b\n"
    "  ldrd r0, r1, [sp, #108]\n" /* the group's next chunk: k back 4, t and out on */
    "  ldr r2, [sp, #136]\n"
    "  subs r2, r2, r0\n"
    "  ble 35f\n"
    "  str r2, [sp, #136]\n"
    "  sub r8, r8, #4\n"
    "  str r8, [sp, #64]\n"
    "  ldrd r0, r1, [sp, #120]\n"
    "  ldr r2, [sp, #60]\n"
    "  ldr r3, [sp, #52]\n"
    "  add r2, r2, r0\n"
    "  add r3, r3, r1\n"
    "  str r2, [sp, #60]\n"
    "  str r3, [sp, #52]\n"
    "  b 34b\n"
    "35:\n"
    "  ldr r9, [sp, #88]\n"
    "  cmp r8, r9\n"
    "  bne 30b\n"
    "  add sp, sp, #144\n"
    "  pop {r4-r11, pc}\n"
    "  .size mdt_dw_band, . - mdt_dw_band\n"
    /* The direct path, for few outputs per channel: mdt_dw_direct_s<stride>(const dw_direct *d)
     * runs every group of 4 channels over the whole output: the input rows of the group
     * channel-interleaved into the buffer (per column the words (c0 | c2), (c1 | c3) of the input +
     * offset; the C zeroed the padding), the doubled weights (w0 | w2), (w1 | w3) of each tap and
     * the doubled biases into the frame, then per output pixel 9 taps of one LDRD of the pixel, one
     * of the weights and 4 SMLAxy (channel ch's sums at acc + 128 ch), then the requantisation of
     * the 4 channels (m, e = -shift, (2 off + 1) 2^(e-1) from the layer's arrays). Frame: sp+0
     * bias x 4, +16 the weights (9 x 2 words; the requantisation's return slot +68 among them,
     * free by then), +88 rows left, +92 the current buffer row, +96 the channel being requantised,
     * +100 the end of channel 0's sums, +104 a copy of the dw_direct. */
    "  .macro MDT_DW_DTAP base, woff, xoff, post\n"
    "  .if \\post\n"
    "  ldrd r4, r5, [\\base], #\\xoff\n"
    "  .else\n"
    "  ldrd r4, r5, [\\base, #\\xoff]\n"
    "  .endif\n"
    "  ldrd r6, r7, [sp, #\\woff]\n"
    "  smlabb r0, r4, r6, r0\n"
    "  smlatt r2, r4, r6, r2\n"
    "  smlabb r1, r5, r7, r1\n"
    "  smlatt r3, r5, r7, r3\n"
    "  .endm\n"
    /* one kernel row's 3 taps' weights from r0 (r2 = C), doubled, to r1 */
    "  .macro MDT_DW_DW3\n"
    "  ldr r4, [r0]\n"
    "  ldr r6, [r0, r2]\n"
    "  ldr r8, [r0, r2, lsl #1]\n"
    "  add r0, r0, r3\n"
    "  sxtb16 r5, r4, ror #8\n"
    "  sxtb16 r4, r4\n"
    "  sxtb16 r7, r6, ror #8\n"
    "  sxtb16 r6, r6\n"
    "  sxtb16 r9, r8, ror #8\n"
    "  sxtb16 r8, r8\n"
    "  sadd16 r4, r4, r4\n"
    "  sadd16 r5, r5, r5\n"
    "  sadd16 r6, r6, r6\n"
    "  sadd16 r7, r7, r7\n"
    "  sadd16 r8, r8, r8\n"
    "  sadd16 r9, r9, r9\n"
    "  stm r1!, {r4-r9}\n"
    "  .endm\n"
    "  .macro MDT_DW_DIRECT name, STEP\n"
    "  MDT_DW_FN \\name\n"
    "  push {r4-r11, lr}\n"
    "  sub sp, sp, #192\n"
    "  add r1, sp, #104\n"
    "  ldm r0!, {r2-r8}\n"
    "  stm r1!, {r2-r8}\n"
    "  ldm r0!, {r2-r8}\n"
    "  stm r1!, {r2-r8}\n"
    "  ldm r0!, {r2-r8}\n"
    "  stm r1!, {r2-r8}\n"
    "50:\n"                     /* group k: its input rows */
    "  ldr r0, [sp, #160]\n"
    "  ldr r3, [sp, #184]\n"
    "  add r0, r0, r3\n"
    "  ldr r1, [sp, #168]\n"
    "  ldr r2, [sp, #132]\n"
    "  ldr r10, [sp, #180]\n"
    "  ldr r12, [sp, #172]\n"
    "  cmp r12, #0\n"
    "  beq 55f\n"
    "51:\n"
    "  ldr r4, [sp, #176]\n"
    "  mov r5, r0\n"
    "  mov r6, r1\n"
    "  subs r4, r4, #2\n"
    "  blt 53f\n"
    "52:\n"
    "  ldr r7, [r5]\n"
    "  ldr r8, [r5, r2]\n"
    "  add r5, r5, r2, lsl #1\n"
    "  sxtab16 r9, r10, r7\n"
    "  sxtab16 r7, r10, r7, ror #8\n"
    "  sxtab16 r11, r10, r8\n"
    "  sxtab16 r8, r10, r8, ror #8\n"
    "  strd r9, r7, [r6], #8\n"
    "  strd r11, r8, [r6], #8\n"
    "  subs r4, r4, #2\n"
    "  bge 52b\n"
    "53:\n"
    "  adds r4, r4, #2\n"
    "  beq 54f\n"
    "  ldr r7, [r5]\n"
    "  sxtab16 r9, r10, r7\n"
    "  sxtab16 r7, r10, r7, ror #8\n"
    "  strd r9, r7, [r6]\n"
    "54:\n"
    "  ldr r4, [sp, #164]\n"
    "  add r0, r0, r4\n"
    "  ldr r4, [sp, #108]\n"
    "  add r1, r1, r4\n"
    "  subs r12, r12, #1\n"
    "  bne 51b\n"
    "55:\n"                     /* its weights and biases */
    "  ldr r0, [sp, #136]\n"
    "  ldr r2, [sp, #184]\n"
    "  add r0, r0, r2\n"
    "  ldr r2, [sp, #132]\n"
    "  add r3, r2, r2, lsl #1\n"
    "  add r1, sp, #16\n"
    "  MDT_DW_DW3\n"
    "  MDT_DW_DW3\n"
    "  MDT_DW_DW3\n"
    "  ldr r0, [sp, #140]\n"
    "  movs r4, #0\n"
    "  movs r5, #0\n"
    "  movs r6, #0\n"
    "  movs r7, #0\n"
    "  cbz r0, 56f\n"
    "  ldr r2, [sp, #184]\n"
    "  add r0, r0, r2, lsl #2\n"
    "  ldm r0, {r4-r7}\n"
    "  lsl r4, r4, #1\n"
    "  lsl r5, r5, #1\n"
    "  lsl r6, r6, #1\n"
    "  lsl r7, r7, #1\n"
    "56:\n"
    "  stm sp, {r4-r7}\n"
    "  ldr r2, [sp, #104]\n"    /* its sums: rows of output pixels */
    "  ldr r5, [sp, #116]\n"
    "  ldr r11, [sp, #124]\n"
    "  str r2, [sp, #92]\n"
    "  str r5, [sp, #88]\n"
    "40:\n"
    "  ldr r8, [sp, #92]\n"
    "  ldr lr, [sp, #108]\n"
    "  add r9, r8, lr\n"
    "  add r10, r9, lr\n"
    "  ldr lr, [sp, #120]\n"
    "  add r12, r11, lr\n"
    "1:\n"
    "  ldm sp, {r0-r3}\n"
    "  MDT_DW_DTAP r8, 16, \\STEP, 1\n"
    "  MDT_DW_DTAP r8, 24, (8 - \\STEP), 0\n"
    "  MDT_DW_DTAP r8, 32, (16 - \\STEP), 0\n"
    "  MDT_DW_DTAP r9, 40, \\STEP, 1\n"
    "  MDT_DW_DTAP r9, 48, (8 - \\STEP), 0\n"
    "  MDT_DW_DTAP r9, 56, (16 - \\STEP), 0\n"
    "  MDT_DW_DTAP r10, 64, \\STEP, 1\n"
    "  MDT_DW_DTAP r10, 72, (8 - \\STEP), 0\n"
    "  MDT_DW_DTAP r10, 80, (16 - \\STEP), 0\n"
    "  str r1, [r11, #128]\n"
    "  str r2, [r11, #256]\n"
    "  str r3, [r11, #384]\n"
    "  str r0, [r11], #4\n"
    "  cmp r11, r12\n"
    "  bne 1b\n"
    "  ldr r0, [sp, #88]\n"
    "  subs r0, r0, #1\n"
    "  beq 41f\n"
    "  str r0, [sp, #88]\n"
    "  ldr r8, [sp, #92]\n"
    "  ldr lr, [sp, #112]\n"
    "  add r8, r8, lr\n"
    "  str r8, [sp, #92]\n"
    "  b 40b\n"
    "41:\n"                     /* requantisation of channels k..k+3 */
    "  str r11, [sp, #100]\n"
    "  mov r10, #0\n"
    "  str r10, [sp, #96]\n"
    "42:\n"
    "  ldr r8, [sp, #184]\n"
    "  add r8, r8, r10\n"       /* c */
    "  ldrd r7, r9, [sp, #144]\n"
    "  ldr r4, [r7, r8, lsl #2]\n"
    "  ldrsb r6, [r9, r8]\n"
    "  mvn r9, r6\n"
    "  ldr r5, [sp, #152]\n"
    "  lsl r5, r5, r9\n"
    "  rsb r6, r6, #0\n"
    "  ldr r0, [sp, #124]\n"
    "  add r0, r0, r10, lsl #7\n"
    "  ldr r3, [sp, #100]\n"
    "  add r3, r3, r10, lsl #7\n"
    "  ldr r1, [sp, #128]\n"
    "  add r1, r1, r8\n"
    "  ldr r2, [sp, #132]\n"
    "  bl mdt_dw_rq\n"
    "  ldr r10, [sp, #96]\n"
    "  add r10, r10, #1\n"
    "  str r10, [sp, #96]\n"
    "  cmp r10, #4\n"
    "  bne 42b\n"
    "  ldr r8, [sp, #184]\n"    /* next group */
    "  ldr r9, [sp, #156]\n"
    "  add r8, r8, #4\n"
    "  str r8, [sp, #184]\n"
    "  cmp r8, r9\n"
    "  bne 50b\n"
    "  add sp, sp, #192\n"
    "  pop {r4-r11, pc}\n"
    "  .size \\name, . - \\name\n"
    "  .endm\n"
    "  MDT_DW_DIRECT mdt_dw_direct_s1, 8\n"
    "  MDT_DW_DIRECT mdt_dw_direct_s2, 16\n"
    "  .popsection\n");

typedef void mdt_dw_tr_fn(int16_t *d, const int8_t *s, const int32_t *job);
typedef void mdt_dw_rows_fn(void); /* custom convention: called by mdt_dw_run / mdt_dw_band only */
mdt_dw_tr_fn mdt_dw_tr_16, mdt_dw_tr_32, mdt_dw_tr_64, mdt_dw_tr_128;
mdt_dw_rows_fn mdt_dw_s1_16, mdt_dw_s1_32, mdt_dw_s1_64, mdt_dw_s1_128;
mdt_dw_rows_fn mdt_dw_s2_16, mdt_dw_s2_32, mdt_dw_s2_64, mdt_dw_s2_128;
void mdt_dw_run(const int16_t *t, int32_t *acc, const int32_t *job, int8_t *out, int32_t *end, int32_t n);

/* mdt_dw_band's argument; its layout is the asm frame's from sp+16 */
typedef struct {
    int32_t tadv, aadv, grp;  /* t and acc advances per row after the 4-output iterations; their acc bytes */
    int32_t *end;             /* the acc address after the last row */
    int32_t pair, C;          /* a pair of outputs after each row's 4-output iterations */
    mdt_dw_rows_fn *rows;
    int32_t tstride;          /* bytes between a group's channels in the transposed rows */
    int32_t *acc;
    int8_t *out;              /* (the asm's: channel 0's output at the chunk) */
    const int8_t *filter;
    const int16_t *t0;        /* (the asm's: channel 0's rows at the chunk) */
    int32_t k, ret;           /* (the asm's: channel, return) */
    const int32_t *bias;      /* or NULL */
    const int32_t *mult;
    const int8_t *shift;
    int32_t off21, channels;  /* 2 output offset + 1; channels (a multiple of 4) */
    mdt_dw_tr_fn *tr_fn;
    const int32_t *tr;        /* the transposition's job (NULL: no input rows in the band) */
    int16_t *d;               /* its destination and source (at channel 0) */
    const int8_t *s;
    int32_t chunk, rows_n;    /* rows per call of the rows routine (their sums all in acc); the band's */
    int32_t row_acc, chunk_t, chunk_out; /* acc bytes per row; t and out bytes per chunk */
    const int16_t *t_band;    /* (channel 0 at the band's first row) */
    int8_t *out_band;
    int32_t left;             /* (the asm's: rows left) */
} dw_band;
void mdt_dw_band(const dw_band *b);

/* The direct path's argument (mdt_dw_direct_s1 / _s2); its layout is the asm frame's from sp+104 */
typedef struct {
    const int16_t *buf;       /* the first buffer row (4 int16 per column) */
    int32_t rb, row_step;     /* bytes per buffer row; per output row */
    int32_t nrows, ow4;       /* output rows; 4 out_w */
    int32_t *acc;             /* channel ch's sums at acc + DW_DS ch */
    int8_t *out;              /* channel 0's output */
    int32_t C;
    const int8_t *filter;
    const int32_t *bias;      /* or NULL */
    const int32_t *mult;
    const int8_t *shift;
    int32_t off21, channels;  /* 2 output offset + 1; channels (a multiple of 4) */
    const int8_t *src;        /* the first input row in the buffer, channel 0 */
    int32_t src_row;          /* bytes per input row */
    int16_t *dst;             /* its place in the buffer (column pad_w) */
    int32_t trows, tpx;       /* input rows and pixels per row to the buffer */
    int32_t off2;             /* input offset in both halves */
    int32_t k;                /* (the asm's: the group's first channel) */
} dw_direct;
void mdt_dw_direct_s1(const dw_direct *d);
void mdt_dw_direct_s2(const dw_direct *d);

/* by pitch 16, 32, 64, 128 (and [stride - 1]) */
static mdt_dw_tr_fn *const dw_tr_tab[4] = {mdt_dw_tr_16, mdt_dw_tr_32, mdt_dw_tr_64, mdt_dw_tr_128};
static mdt_dw_rows_fn *const dw_rows_tab[2][4] = {
    {mdt_dw_s1_16, mdt_dw_s1_32, mdt_dw_s1_64, mdt_dw_s1_128},
    {mdt_dw_s2_16, mdt_dw_s2_32, mdt_dw_s2_64, mdt_dw_s2_128},
};

/* (bottom half of a, bottom half of b) in one PKHBT */
static inline int32_t pk_bb(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* two words to a word-aligned address in one STRD */
static inline void st64(int16_t *d, int32_t a, int32_t b)
{
    __asm__ volatile("strd %1, %2, [%0]" : : "r"(d), "r"(a), "r"(b) : "memory");
}

/* (top half of a, top half of b) in one PKHTB */
static inline int32_t pk_tt(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(b), "r"(a));
    return r;
}

/* Transposes npx pixels (sx bytes apart) of channels c..c+n-1 from s into d + ch * pitch, input
 * offset added (the last group's channels past C: one at a time). */
static void transpose_row_n(int16_t *d, const int8_t *s, int32_t sx, int32_t n, int32_t npx, int32_t in_off,
                            int32_t pitch)
{
    int32_t i, ch;
    for (i = 0; i < npx; ++i) {
        for (ch = 0; ch < n; ++ch) {
            d[ch * pitch] = (int16_t)(s[ch] + in_off);
        }
        d += 1;
        s += sx;
    }
}

/* Zeroes halfwords [c0, c1) of rows r0..r1-1 of all 4 channels (a few stores each: no memset). */
static void zero_cols(int16_t *buf, int32_t pitch, int32_t r0, int32_t r1, int32_t c0, int32_t c1)
{
    int16_t *row = buf + r0 * GROUP * pitch + c0, *const end = buf + r1 * GROUP * pitch + c0;
    for (; row != end; row += pitch) {
        int16_t *q = row, *const qe = row + (c1 - c0);
        while (q != qe) {
            *q++ = 0;
            __asm__("" : "+r"(q));
        }
    }
}

/* Zeroes whole rows r0..r1-1 of all 4 channels (pitch words of each are int16 pairs). */
static void zero_rows(int16_t *buf, int32_t pitch, int32_t r0, int32_t r1)
{
    int32_t *q = (int32_t *)(void *)(buf + r0 * GROUP * pitch);
    int32_t *const end = (int32_t *)(void *)(buf + r1 * GROUP * pitch);
    while (q != end) {
        q[0] = 0;
        q[1] = 0;
        q += 2;
        __asm__("" : "+r"(q));
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

/* What the C path of a call's groups shares: a channel's job, the geometry the asm reads, sums. */
typedef struct {
    int32_t job[DW_JOB];
    int32_t geo[7];
    int32_t acc[DW_ACC + 4];
    int32_t chunk, full, pitch, trow; /* output rows per asm call; int16 per output row */
} dw_ctx;

/* 1 when every channel takes the asm requantisation of doubled sums (the full int8 range, C a
 * multiple of 4, m >= 0, a right shift e of 1..22, |bias| < 2^29): mdt_dw_band runs the layer. */
static __attribute__((noinline)) int dw_all_fast(const mdt_dwconv_params *p)
{
    const int8_t *sh = p->shift, *const end = p->shift + p->in_c;
    const int32_t *m = p->multiplier, *bias = p->bias;
    int32_t bad = 0;
    uint32_t bad_bias = 0;
    if (p->act_min != -128 || p->act_max != 127 || (p->in_c & 3) != 0) {
        return 0;
    }
    for (; sh != end; ++sh, ++m) {
        const int32_t e = -*sh;
        bad |= (e - 1) | (22 - e) | *m; /* a sign bit where e < 1, e > 22 or m < 0 */
    }
    if (bias) {
        const int32_t *const bend = bias + p->in_c;
        for (; bias != bend; ++bias) {
            bad_bias |= (uint32_t)*bias + DW_BIAS_MAX;
        }
    }
    return bad >= 0 && bad_bias < 2u * DW_BIAS_MAX;
}

/* The group of n channels from c0 over nrows output rows, one channel at a time (a layer outside
 * mdt_dw_band's case): its job (bias x 4 and the packed weights, both times 2 when every bias of
 * the group allows it; then, after the geometry pointer, m, 2^(e-1) + off 2^e and e for the asm
 * requantisation, e = 0 for a channel it does not take: the C requantises that one), then the asm
 * passes per chunk of rows. t0: channel c0's first row at the first output's first tap. */
static __attribute__((noinline)) void dw_group(const mdt_dwconv_params *p, dw_ctx *x, int32_t c0, int32_t n,
                                               const int16_t *t0, int8_t *o0, int32_t nrows)
{
    const int32_t C = p->in_c, off = p->output_offset, out_w = p->out_w;
    const int8_t *f = p->filter + c0;
    int32_t *const j = x->job;
    int32_t ch, k, dbl = 1;
    if (p->bias) {
        for (ch = 0; ch < n; ++ch) {
            dbl &= (uint32_t)p->bias[c0 + ch] + DW_BIAS_MAX < 2u * DW_BIAS_MAX;
        }
    }
    for (ch = 0; ch < n; ++ch) {
        const int32_t c = c0 + ch, mult = p->multiplier[c], e = -p->shift[c];
        const int fast = x->full && dbl && mult >= 0 && (uint32_t)(e - 1) < 22u;
        const uint32_t ef = fast ? (uint32_t)e : 1u;
        const int16_t *t = t0 + ch * x->pitch;
        int8_t *o = o0 + ch;
        int32_t r;
        for (k = 0; k < 3; ++k) {
            const int32_t w0 = f[3 * k * C + ch] * (1 + dbl), w1 = f[(3 * k + 1) * C + ch] * (1 + dbl);
            const int32_t w2 = f[(3 * k + 2) * C + ch] * (1 + dbl);
            j[4 + 2 * k] = pk_bb(w0, w1);
            j[5 + 2 * k] = pk_bb(w1, w2);
        }
        j[0] = j[1] = j[2] = j[3] = p->bias ? (int32_t)((uint32_t)p->bias[c] << dbl) : 0;
        j[11] = mult;
        j[12] = (int32_t)((1u << (ef - 1)) + ((uint32_t)off << ef));
        j[13] = fast ? e : 0;
        for (r = 0; r < nrows; r += x->chunk) {
            const int32_t no = (nrows - r < x->chunk ? nrows - r : x->chunk) * out_w;
            mdt_dw_run(t, x->acc, j, o, x->acc + no, 1);
            if (!fast) {
                dw_store_c(x->acc, no, dbl, mult, p->shift[c], p, o);
            }
            t += x->chunk * x->trow;
            o += no * C;
        }
    }
}

/* The direct path (mdt_dw_direct_s*): layers of at most DW_DIRECT_MAX outputs per channel, all
 * channels in the fast requantisation's case; the whole output at once. */
static __attribute__((noinline)) int dw_direct_layer(const mdt_dwconv_params *p, const int8_t *input,
                                                      int8_t *output, int16_t *buf, int32_t *acc)
{
    dw_direct d;
    const int32_t C = p->in_c, in_h = p->in_h, in_w = p->in_w, out_h = p->out_h, out_w = p->out_w;
    const int32_t stride = p->stride_w, stride_h = p->stride_h, pad_w = p->pad_w;
    const int32_t ncols = (out_w - 1) * stride + 3, rows = (out_h - 1) * stride_h + 3;
    const int32_t ix_end = ncols - pad_w < in_w ? ncols - pad_w : in_w;
    const int32_t iy0 = -p->pad_h, r_lo = iy0 >= 0 ? 0 : (-iy0 < rows ? -iy0 : rows);
    const int32_t r_hi = in_h - iy0 < r_lo ? r_lo : (in_h - iy0 < rows ? in_h - iy0 : rows);
    int32_t b;
    if (ix_end < 1 || rows * ncols * GROUP > DW_BUF) {
        return 0;
    }
    d.buf = buf;
    d.rb = 8 * ncols;
    d.row_step = stride_h * d.rb;
    d.nrows = out_h;
    d.ow4 = 4 * out_w;
    d.acc = acc;
    d.C = C;
    d.filter = p->filter;
    d.bias = p->bias;
    d.mult = p->multiplier;
    d.shift = p->shift;
    d.off21 = 2 * p->output_offset + 1;
    d.channels = C;
    d.src_row = in_w * C;
    d.dst = buf + (r_lo * ncols + pad_w) * GROUP;
    d.trows = r_hi - r_lo;
    d.tpx = ix_end;
    d.off2 = (int32_t)(((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset);
    /* padding (the columns and rows no input lands on) stays 0 */
    {
        int32_t *q = (int32_t *)(void *)buf;
        int32_t *const end = q + rows * ncols * 2;
        while (q != end) {
            q[0] = 0;
            q[1] = 0;
            q += 2;
            __asm__("" : "+r"(q)); /* a few stores: no memset call */
        }
    }
    for (b = 0; b < p->batches; ++b) {
        d.src = input + (b * in_h + iy0 + r_lo) * in_w * C;
        d.out = output + b * out_h * out_w * C;
        d.k = 0;
        (stride == 1 ? mdt_dw_direct_s1 : mdt_dw_direct_s2)(&d);
    }
    return 1;
}

/* A call's descriptors, in the scratch with the sums (off the stack: the asm routines' own frames
 * come on top of the caller's) */
typedef struct {
    dw_ctx x;
    dw_band bd;
    int32_t tr[7]; /* the transposition's job */
} dw_call;

/* scratch.py sizes dw_call by this (C99: a negative array size fails the build) */
typedef char dw_call_size_check[sizeof(dw_call) == 764 ? 1 : -1];

int mdt_dw3x3_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output, mdt_scratch s)
{
    int16_t *buf;
    dw_call *const call = (dw_call *)mdt_scratch_take(&s, (int32_t)sizeof(dw_call));
    dw_ctx *const x = call != NULL ? &call->x : NULL;
    dw_band *const bd = call != NULL ? &call->bd : NULL;
    int32_t *const tr = call != NULL ? call->tr : NULL;
    const int32_t C = p->in_c, in_h = p->in_h, in_w = p->in_w, out_h = p->out_h, out_w = p->out_w;
    const int32_t stride = p->stride_w, stride_h = p->stride_h, pad_w = p->pad_w, pad_h = p->pad_h;
    const int32_t in_off = p->input_offset;
    /* 4-output iterations per row, and a pair for widths 4k + 1, 4k + 2 (k >= 1; 4k + 3 and
     * widths up to 2: one more 4) */
    const int32_t rem = out_w & 3, pair = out_w > 4 && (rem == 1 || rem == 2);
    const int32_t nq = (out_w + (pair ? 0 : 3)) / 4;
    /* columns the row's outputs read from the first tap; lead puts input column 0 on a word */
    const int32_t lead = pad_w & 1;
    const int32_t reach = stride == 1 ? 4 * nq + (pair ? 4 : 2) : 8 * nq + (pair ? 6 : 2);
    const int32_t ncols = lead + reach;
    const int32_t ix_end = ncols - lead - pad_w < in_w ? ncols - lead - pad_w : in_w;
    const int32_t pi = ncols <= 16 ? 0 : (ncols <= 32 ? 1 : (ncols <= 64 ? 2 : 3));
    const int32_t pitch = 16 << pi, rs = 8 * pitch;
    const int32_t rows_cap = DW_BUF / (GROUP * pitch);
    /* output rows per band: their input rows all in the buffer at once; the layer's rows spread
     * evenly over as few bands as the buffer allows (the same bands, transposes and calls as full
     * bands with a short last one, in fewer buffer rows: scratch.py sizes the buffer the same way) */
    const int32_t band_max = (rows_cap - 3) / (stride_h > 0 ? stride_h : 1) + 1;
    const int32_t nbands = out_h > 0 ? (out_h + band_max - 1) / band_max : 1;
    const int32_t band = (out_h + nbands - 1) / nbands;
    int32_t b, c0, oy, fast;
    if (p->k_h != 3 || p->k_w != 3 || p->depth_multiplier != 1 || p->dil_h != 1 || p->dil_w != 1 ||
        (stride != 1 && stride != 2) || stride_h < 1 || out_w < 1 || out_w > DW_ACC || out_h < 1 ||
        pad_w < 0 || ix_end < 1 || pitch > DW_COLS || ncols > pitch) {
        return 0;
    }
    if (call == NULL) {
        return 0;
    }
    fast = dw_all_fast(p);
    if (fast && out_h * out_w <= DW_DIRECT_MAX) {
        /* the direct path's interleaved rows: (out_h - 1) * stride_h + 3 rows of its ncols columns */
        const int32_t dcols = (out_w - 1) * stride + 3, drows = (out_h - 1) * stride_h + 3;
        if (drows * dcols * GROUP <= DW_BUF) {
            mdt_scratch d = s;
            buf = (int16_t *)mdt_scratch_take(&d, drows * dcols * GROUP * (int32_t)sizeof(int16_t));
            if (buf != NULL && dw_direct_layer(p, input, output, buf, x->acc)) {
                MDT_PATH(MDT_PATH_DW3_DIRECT);
                return 1;
            }
        }
    }
    {
        /* the padding columns of the rows in use: zero for the whole call (the transposes only
         * write the others); the bands use no more rows than these */
        const int32_t used = (band - 1) * stride_h + 3;
        buf = (int16_t *)mdt_scratch_take(&s, used * GROUP * pitch * (int32_t)sizeof(int16_t));
        if (buf == NULL) {
            return 0;
        }
        MDT_PATH(fast ? MDT_PATH_DW3_BAND : MDT_PATH_DW3_C);
        zero_cols(buf, pitch, 0, used, 0, lead + pad_w);
        zero_cols(buf, pitch, 0, used, lead + pad_w + ix_end, ncols);
    }
    x->chunk = DW_ACC / out_w;
    x->full = p->act_min == -128 && p->act_max == 127;
    x->pitch = pitch;
    x->trow = stride_h * GROUP * pitch;
    x->geo[0] = bd->tadv = stride_h * rs - (stride == 1 ? 8 : 16) * nq - (pair ? 4 * stride : 0);
    x->geo[1] = bd->aadv = 4 * out_w - 16 * nq - 8 * pair;
    x->geo[2] = bd->grp = 16 * nq;
    x->geo[3] = bd->pair = pair;
    x->geo[4] = bd->C = C;
    bd->rows = dw_rows_tab[stride - 1][pi];
    x->geo[5] = (int32_t)(intptr_t)bd->rows;
    x->geo[6] = bd->tstride = 2 * pitch;
    x->job[10] = (int32_t)(intptr_t)x->geo;
    bd->acc = x->acc;
    bd->filter = p->filter;
    bd->bias = p->bias;
    bd->mult = p->multiplier;
    bd->shift = p->shift;
    bd->off21 = 2 * p->output_offset + 1;
    bd->channels = C;
    bd->tr_fn = dw_tr_tab[pi];
    bd->chunk = x->chunk;
    bd->row_acc = 4 * out_w;
    bd->chunk_t = 2 * x->chunk * x->trow;
    bd->chunk_out = x->chunk * out_w * C;
    bd->t_band = buf + lead;
    tr[0] = C;
    tr[1] = rs - 2 * ix_end;
    tr[2] = in_w * C - ix_end * C;
    tr[3] = (ix_end & ~3) * C;
    tr[4] = ((ix_end >> 1) & 1) | ((ix_end & 1) << 1);
    tr[6] = (int32_t)(((uint32_t)(uint16_t)in_off << 16) | (uint16_t)in_off);
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * in_h * in_w * C;
        int8_t *out_b = output + b * out_h * out_w * C;
        for (oy = 0; oy < out_h; oy += band) {
            const int32_t nrows = out_h - oy < band ? out_h - oy : band;
            const int32_t iy0 = oy * stride_h - pad_h, rows = (nrows - 1) * stride_h + 3;
            /* the band's buffer rows [r_lo, r_hi) hold input rows; the others are padding: zero
             * for all its groups */
            const int32_t r_lo = iy0 >= 0 ? 0 : (-iy0 < rows ? -iy0 : rows);
            const int32_t r_hi = in_h - iy0 < r_lo ? r_lo : (in_h - iy0 < rows ? in_h - iy0 : rows);
            int16_t *const d = buf + r_lo * GROUP * pitch + lead + pad_w;
            const int8_t *const s = in_b + (iy0 + r_lo) * in_w * C;
            zero_rows(buf, pitch, 0, r_lo);
            zero_rows(buf, pitch, r_hi, rows);
            tr[5] = r_hi - r_lo;
            if (fast) {
                bd->k = 0;
                bd->tr = r_hi > r_lo ? tr : NULL;
                bd->d = d;
                bd->s = s;
                bd->rows_n = nrows;
                bd->out_band = out_b + oy * out_w * C;
                mdt_dw_band(bd);
                continue;
            }
            for (c0 = 0; c0 < C; c0 += GROUP) {
                const int32_t n = C - c0 < GROUP ? C - c0 : GROUP;
                if (r_hi > r_lo) {
                    if (n == GROUP) {
                        dw_tr_tab[pi](d, s + c0, tr);
                    } else {
                        int32_t r;
                        for (r = 0; r < r_hi - r_lo; ++r) {
                            transpose_row_n(d + r * GROUP * pitch, s + c0 + r * in_w * C, C, n, ix_end, in_off,
                                            pitch);
                        }
                    }
                }
                dw_group(p, x, c0, n, buf + lead, out_b + oy * out_w * C + c0, nrows);
            }
        }
    }
    return 1;
}

#else

typedef int mdt_dsp_dw_unused; /* keeps the translation unit non-empty without the DSP extension */

#endif /* MDT_DSP */
