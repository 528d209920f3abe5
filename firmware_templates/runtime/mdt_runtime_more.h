/*
 * mdt_runtime_more.h - params and entry points of the element-wise, data-movement and float
 * boundary kernels (included by mdt_runtime.h). Same rules: integer-only except the float32
 * QUANTIZE / DEQUANTIZE at a graph's edges, no heap, C99.
 */
#ifndef MDT_RUNTIME_MORE_H
#define MDT_RUNTIME_MORE_H

#include <stdint.h>

/* MUL int8 with broadcasting (strides 0 where an input is broadcast). */
typedef struct {
    int32_t dims[4];
    int32_t stride1[4], stride2[4];
    int32_t input1_offset, input2_offset, output_offset;
    int32_t output_multiplier, output_shift, act_min, act_max;
} mdt_mul_params;

/* LOGISTIC / HARD_SWISH: a 256-entry table indexed by the input byte as uint8. */
typedef struct {
    int32_t size;
    const int8_t *table;
} mdt_lut_params;

/* QUANTIZE float32 -> int8 and DEQUANTIZE int8 -> float32 (graph edges of float-I/O models). */
typedef struct {
    int32_t size, zero_point;
    float scale;
} mdt_affine_params;

/* TRANSPOSE: output dims (rank 4, leading 1s) and the input element stride of each output dim. */
typedef struct {
    int32_t out_dims[4], in_strides[4];
} mdt_transpose_params;

/* CONCATENATION: for each of `outer` slices, copy chunks[i] bytes of input i in turn. */
typedef struct {
    int32_t outer, count, out_chunk;
    const int32_t *chunks;
} mdt_concat_params;

/* RESIZE_NEAREST_NEIGHBOR: source row / column of every output row / column, computed offline. */
typedef struct {
    int32_t batches, in_h, in_w, channels, out_h, out_w;
    const int32_t *ys, *xs;
} mdt_resize_params;

/* MEAN / SUM over any axes (mdt_reduce.c): out_dims are the kept dims (reduced ones 1), red_dims the
 * reduced dims (kept ones 1), both rank 4 with leading 1s; strides are the input's element strides. */
typedef struct {
    int32_t out_dims[4], red_dims[4], strides[4];
    int32_t count, input_zero_point, output_zero_point, multiplier, shift;
} mdt_reduce_params;

void mdt_reduce(const mdt_reduce_params *p, const int8_t *input, int8_t *output);
void mdt_mul(const mdt_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);
void mdt_lookup(const mdt_lut_params *p, const int8_t *input, int8_t *output);
/* input / output point at 4-byte aligned float32 data inside the arena */
void mdt_quantize_f32(const mdt_affine_params *p, const int8_t *input, int8_t *output);
void mdt_dequantize_f32(const mdt_affine_params *p, const int8_t *input, int8_t *output);
void mdt_transpose(const mdt_transpose_params *p, const int8_t *input, int8_t *output);
void mdt_concat(const mdt_concat_params *p, const int8_t *const *inputs, int8_t *output);
void mdt_resize_nearest(const mdt_resize_params *p, const int8_t *input, int8_t *output);
/* in-place row-by-row conv / depthwise (mdt_inplace.c): the scratch's first out_w * out_c bytes hold
 * one output row, the rest is the row kernel's working memory */
void mdt_conv2d_rows(const mdt_conv_params *p, int32_t rows_per_call, const int8_t *input, int8_t *output,
                     mdt_scratch scratch);
void mdt_dwconv_rows(const mdt_dwconv_params *p, int32_t rows_per_call, const int8_t *input, int8_t *output,
                     mdt_scratch scratch);

/* fused conv + residual add (mdt_fused.c) */
#include "mdt_fused.h"

#endif /* MDT_RUNTIME_MORE_H */
