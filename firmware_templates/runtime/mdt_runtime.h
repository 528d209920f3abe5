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
} mdt_add_params;

typedef struct {
    int32_t batches, in_h, in_w, channels, out_h, out_w;
    int32_t k_h, k_w, stride_h, stride_w, pad_h, pad_w;
    int32_t act_min, act_max;
} mdt_pool_params;

/* MEAN over H and W of an NHWC tensor; the path mirrors the one TFLite's reference picks. */
/* MDT_MEAN_FOLD: 1/count folded into the multiplier at compile time (TF 2.19's reference takes
 * this path for every int8 MEAN, keep_dims or not, equal parameters or not: the compiler emits only
 * it); MDT_MEAN_SAME_QUANT: the truncating integer mean of older releases. Other axes: mdt_reduce. */
enum { MDT_MEAN_SAME_QUANT = 1, MDT_MEAN_FOLD = 2 };
typedef struct {
    int32_t batches, in_h, in_w, channels, mode;
    int32_t input_zero_point, output_zero_point, multiplier, shift;
} mdt_mean_params;

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

void mdt_conv2d(const mdt_conv_params *p, const int8_t *input, int8_t *output);
void mdt_depthwise_conv2d(const mdt_dwconv_params *p, const int8_t *input, int8_t *output);
void mdt_fully_connected(const mdt_fc_params *p, const int8_t *input, int8_t *output);
void mdt_add(const mdt_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);
void mdt_avg_pool(const mdt_pool_params *p, const int8_t *input, int8_t *output);
void mdt_max_pool(const mdt_pool_params *p, const int8_t *input, int8_t *output);
void mdt_mean_hw(const mdt_mean_params *p, const int8_t *input, int8_t *output);
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
