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

/* Working memory: every fast path takes its buffers and per-call tables from the mdt_scratch region
 * the compiler reserves in the arena for the layer's step (microt_deploy/compiler/scratch.py sizes
 * it for the path that shape takes, mirroring the checks below), not from the stack or statics; a
 * path that finds the region too small returns 0 and the portable kernel runs. What stays on the
 * stack is their frames, under 300 bytes each (gcc -fstack-usage, -O2): a whole inference of the
 * MLPerf Tiny models paints under 1 KB (tests/compiler/test_scratch.py).
 *
 * Largest im2col depth (k_h * k_w * in_c) of the general conv and input depth of the FC fast path.
 * No longer a stack bound: it caps the arena those paths claim (the conv's widened im2col is 12 bytes
 * per depth element, the FC's 2), so that a deep layer runs the portable kernel in place of growing
 * the arena by tens of KB; and the conv's fast requantisation needs |bias| + depth * 255 * 128 < 2^30
 * (bias < 2^29), which holds up to a depth of 16448. */
#ifndef MDT_DSP_MAX_K
#define MDT_DSP_MAX_K 640
#endif

/* Columns of the depthwise fast path's transposed rows: its asm passes exist for pitches of 16, 32,
 * 64 and 128 int16 (row offsets are immediates); wider output rows take the general DSP path. */
#ifndef MDT_DSP_DW_COLS
#define MDT_DSP_DW_COLS 128
#endif

#if MDT_DSP
int mdt_add_dsp(const mdt_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output, mdt_scratch s);
int mdt_conv2d_small_dsp(const mdt_conv_params *p, const int8_t *input, int8_t *output, mdt_scratch s);
int mdt_fc_rows3_dsp(const mdt_fc_params *p, const int8_t *input, int8_t *output, mdt_scratch s);
int mdt_dw3x3_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output, mdt_scratch s);
int mdt_conv2d_dsp(const mdt_conv_params *p, const int8_t *input, int8_t *output, mdt_scratch s);
int mdt_depthwise_conv2d_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output);
#endif

#endif /* MDT_DSP_H */
