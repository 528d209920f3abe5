/*
 * mdt_runtime.h - portable int8 kernels for ahead-of-time compiled TFLite graphs.
 *
 * Every kernel reproduces TFLite's reference int8 kernel bit for bit. All quantisation
 * parameters (multipliers, shifts, offsets, activation ranges) are computed at compile time
 * and passed in const params structs; the kernels only do integer arithmetic. No heap, C99.
 */
#ifndef MDT_RUNTIME_H
#define MDT_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Alignment of the generated constant arrays (weights, biases, multipliers, tables): the DSP fast
 * paths read weights as 32-bit words (LDR; LDRD, which faults on an unaligned address), and gcc gives
 * an int8 array 1-byte alignment at -Os. codegen.py writes MDT_ALIGN(MDT_CONST_ALIGN) on each. */
#ifndef MDT_CONST_ALIGN
#define MDT_CONST_ALIGN 4
#endif
#ifndef MDT_ALIGN
#if defined(__GNUC__) || defined(__clang__)
#define MDT_ALIGN(n) __attribute__((aligned(n)))
#else
#define MDT_ALIGN(n)
#endif
#endif

/* Fused activations are folded into [act_min, act_max] at compile time. */

typedef struct {
    int32_t batches, in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
    int32_t input_offset, output_offset, act_min, act_max;
    const int8_t *filter;      /* [out_c][k_h][k_w][in_c] */
    const int32_t *bias;       /* [out_c] or NULL */
    const int32_t *multiplier; /* [out_c] */
    const int8_t *shift;       /* [out_c], TFLite convention: > 0 shifts left */
    /* [out_c] 1 where the filter row is all zero (the channel's output is the requantised bias at every
     * pixel), or NULL: a hint the compiler derives from the weights; honouring it is optional. */
    const uint8_t *zero_rows;
    /* [out_c] 16-byte channel records of the DSP conv path (mdt_dsp_chan.h's chan_t, exactly what its
     * chan_table_fill makes of the fields above), or NULL: the compiler writes them to flash so the
     * kernel does not rebuild them in the scratch at every call (it then reserves no room for them). */
    const void *chan_table;
    /* [out_c][4 * ceil(k_h * k_w * in_c / 4)] int16, or NULL: the filter sign-extended to int16, each
     * row zero-padded to whole groups of 4, as the few-input-channel DSP path (mdt_dsp.c conv_nat)
     * reads it; written to flash by the compiler so the kernel neither widens the filter per call nor
     * keeps the widened rows in the scratch (it then reserves no room for them). */
    const void *nat_weights;
} mdt_conv_params;

typedef struct {
    int32_t batches, in_h, in_w, in_c, out_h, out_w, out_c, depth_multiplier;
    int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
    int32_t input_offset, output_offset, act_min, act_max;
    const int8_t *filter;      /* [k_h][k_w][out_c] */
    const int32_t *bias;       /* [out_c] or NULL */
    const int32_t *multiplier; /* [out_c] */
    const int8_t *shift;       /* [out_c] */
} mdt_dwconv_params;

typedef struct {
    int32_t batches, in_depth, out_depth, per_channel;
    int32_t input_offset, output_offset, act_min, act_max;
    const int8_t *filter;      /* [out_depth][in_depth] */
    const int32_t *bias;       /* [out_depth] or NULL */
    const int32_t *multiplier; /* [out_depth] if per_channel else [1] */
    const int8_t *shift;
} mdt_fc_params;

typedef struct {
    int32_t dims[4];                 /* output dims, padded to rank 4 */
    int32_t stride1[4], stride2[4];  /* element strides per output dim; 0 where broadcast */
    int32_t input1_offset, input2_offset, output_offset, left_shift;
    int32_t input1_multiplier, input2_multiplier, output_multiplier;
    int32_t input1_shift, input2_shift, output_shift;
    int32_t act_min, act_max;
    /* [256] each, or NULL: input k's rescaling, mdt_mbqm(mdt_wrap_shl(inputk_offset + v, left_shift),
     * inputk_multiplier, inputk_shift) at [(uint8_t)v], tabulated by the compiler into flash (it depends
     * on constants only) so that the DSP paths index it in place of rescaling each element or
     * building the tables in the scratch at every call. */
    const int32_t *input1_table, *input2_table;
} mdt_add_params;

typedef struct {
    int32_t batches, in_h, in_w, channels, out_h, out_w;
    int32_t k_h, k_w, stride_h, stride_w, pad_h, pad_w;
    int32_t act_min, act_max;
} mdt_pool_params;

typedef struct {
    int32_t in_dims[4], out_dims[4], pad_before[4];
    int32_t pad_value;
} mdt_pad_params;

typedef struct {
    int32_t outer, depth, input_multiplier, input_left_shift, diff_min;
} mdt_softmax_params;

/* QUANTIZE int8 -> int8 and standalone RELU / RELU6 / RELU_N1_TO_1 (a requantize and a clamp). */
typedef struct {
    int32_t size, input_zero_point, output_zero_point, multiplier, shift, act_min, act_max;
} mdt_requant_params;

/* A kernel's working memory: a region of the arena the compiler reserved for this layer's step
 * (microt_deploy/compiler/scratch.py sizes it per layer shape, exactly what the path the kernel
 * picks will take), so that the fast paths keep no large arrays on the stack. A fast path that finds
 * the region too small returns 0 and the portable kernel runs (same bytes). `keep`: 1 only where the
 * caller (a row / chunk kernel) called the same kernel on the same region earlier in this layer's
 * step, so per-call tables a key says are still valid may be reused; 0 everywhere else (the region
 * holds whatever other steps left there). */
typedef struct {
    int8_t *ptr;
    int32_t size;
    int32_t keep;
} mdt_scratch;

#define MDT_NO_SCRATCH ((mdt_scratch){0, 0, 0})
/* Every piece taken from a region starts on this boundary (LDRD / word loads) */
#define MDT_SCRATCH_ALIGN 8

/* n bytes from the front of `s`, MDT_SCRATCH_ALIGN-aligned (n rounded up to it), `s` advanced past
 * them; NULL, `s` unchanged, where the region is too small. */
static inline void *mdt_scratch_take(mdt_scratch *s, int32_t n)
{
    const uintptr_t a = MDT_SCRATCH_ALIGN - 1;
    const uintptr_t base = (uintptr_t)s->ptr, start = (base + a) & ~a;
    const int32_t need = (int32_t)(start - base) + (int32_t)(((uintptr_t)n + a) & ~a);
    if (s->ptr == 0 || n < 0 || need > s->size) {
        return 0;
    }
    s->ptr += need;
    s->size -= need;
    return (void *)start;
}

/* The first n bytes of `s` as they are (a row kernel's output row, a fused kernel's chunk), and `s`
 * the rest; NULL where the region is shorter. */
static inline int8_t *mdt_scratch_head(mdt_scratch *s, int32_t n)
{
    int8_t *const head = s->ptr;
    if (s->ptr == 0 || n > s->size) {
        return 0;
    }
    s->ptr += n;
    s->size -= n;
    return head;
}

void mdt_conv2d(const mdt_conv_params *p, const int8_t *input, int8_t *output, mdt_scratch scratch);
void mdt_depthwise_conv2d(const mdt_dwconv_params *p, const int8_t *input, int8_t *output, mdt_scratch scratch);
void mdt_fully_connected(const mdt_fc_params *p, const int8_t *input, int8_t *output, mdt_scratch scratch);
void mdt_add(const mdt_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output,
             mdt_scratch scratch);
void mdt_avg_pool(const mdt_pool_params *p, const int8_t *input, int8_t *output);
void mdt_max_pool(const mdt_pool_params *p, const int8_t *input, int8_t *output);
void mdt_pad(const mdt_pad_params *p, const int8_t *input, int8_t *output);
void mdt_softmax(const mdt_softmax_params *p, const int8_t *input, int8_t *output);
void mdt_requantize(const mdt_requant_params *p, const int8_t *input, int8_t *output);
void mdt_copy(int32_t size, const int8_t *input, int8_t *output);

/* element-wise, data-movement and float32-boundary kernels */
#include "mdt_runtime_more.h"

#ifdef __cplusplus
}
#endif

#endif /* MDT_RUNTIME_H */
