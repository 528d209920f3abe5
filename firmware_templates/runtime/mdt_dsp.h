/*
 * mdt_dsp.h - Cortex-M4/M7 DSP-extension fast paths of the int8 kernels (internal to the runtime).
 *
 * Built only where the compiler targets what they really use and MDT_NO_DSP is not defined: the
 * DSP extension's instructions (SMLAD, SMLABB/TT, SADD16, SSAT, PKHBT/TB: __ARM_FEATURE_DSP) and the
 * ARMv6 SIMD ones (SXTB16, SXTAB16: __ARM_FEATURE_SIMD32), in Thumb-2 inline assembly (post-indexed
 * LDR / LDRD, IT blocks, r0-r12 and lr: __thumb2__) that loads words from unaligned addresses
 * (__ARM_FEATURE_UNALIGNED; gcc leaves it undefined under -mno-unaligned-access). That is Cortex-M4,
 * M7, M33 / M35P with the DSP extension and M55 / M85; elsewhere (M0 / M0+ / M23, M3, an M33 built
 * +nodsp, RISC-V, the host) MDT_DSP is 0 and the portable kernels run alone. Each fast path returns 1 when
 * it handled the layer and 0 when the layer's shape is outside what it covers (the caller then runs
 * the portable kernel): both give the same bytes as TFLite's reference kernels.
 */
#ifndef MDT_DSP_H
#define MDT_DSP_H

#include "mdt_runtime.h"
#include "mdt_trace.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && defined(__thumb2__) && \
    defined(__ARM_FEATURE_UNALIGNED) && !defined(MDT_NO_DSP)
#define MDT_DSP 1
#else
#define MDT_DSP 0
#endif

/* Largest im2col depth (k_h * k_w * in_c) and FC input depth the stack scratch holds. Stack use of
 * the fast paths at the defaults (each its own frame, never nested): conv 6 pixels x 161 groups x 8
 * bytes of widened im2col + a 768-byte short-pass buffer = 8.5 KB; conv over few input channels 4.3 KB
 * of widened rows and patches; small-depth conv 2.3 KB; depthwise 7.5 KB of transposed rows + 0.5 KB
 * of sums; ADD 2 KB of tables; FC 1.3 KB. Static (kept between the calls of a layer run row by
 * row): the conv's 128-channel constant table, 2 KB, and 5 KB of widened few-channel weights. */
#ifndef MDT_DSP_MAX_K
#define MDT_DSP_MAX_K 640
#endif

/* Columns of the depthwise fast path's transposed rows (its stack buffer is 4 channels x 7.5 rows of
 * this many int16, 7.5 KB at the default); wider output rows take the general DSP path. */
#ifndef MDT_DSP_DW_COLS
#define MDT_DSP_DW_COLS 128
#endif

#if MDT_DSP
int mdt_add_dsp(const mdt_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);
int mdt_conv2d_small_dsp(const mdt_conv_params *p, const int8_t *input, int8_t *output);
int mdt_fc_rows3_dsp(const mdt_fc_params *p, const int8_t *input, int8_t *output);
int mdt_dw3x3_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output);
int mdt_conv2d_dsp(const mdt_conv_params *p, const int8_t *input, int8_t *output);
int mdt_depthwise_conv2d_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output);
#endif

#endif /* MDT_DSP_H */
