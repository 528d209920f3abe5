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

/* MEAN / SUM over any axes (mdt_reduce.c), H x W means included: out_dims / out_strides iterate the
 * kept axes in output order, red_dims / red_strides the reduced ones (the innermost loop over
 * red_dims[1]); input element strides, unused slots dim 1. Two of each suffice up to 4-D: the compiler
 * merges contiguous axes, after which kept and reduced ones alternate.
 * MEAN has 1/count folded into the multiplier at compile time: the path TF 2.19's reference takes for
 * every int8 MEAN, keep_dims or not, equal parameters or not (the truncating integer mean of older
 * releases differs on about half the outputs). */
typedef struct {
    int32_t out_dims[2], out_strides[2], red_dims[2], red_strides[2];
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
/* The window of input rows that output rows r .. r + n - 1 of a convolution read (stride, top padding
 * pad, k kernel rows dil apart, in_h input rows): its first stored row is returned, *win_pad is the top
 * padding left above it and *win_h the rows from it the window reaches, clipped to the input (a kernel
 * run on `input + first * row bytes` with pad_h = *win_pad and in_h = *win_h computes those rows).
 * The one form of it: the row kernels (mdt_inplace.c), the fused conv + ADD (mdt_fused.c), and at
 * compile time scratch.py's row_window (the patch stages' regions and the row calls' scratch). */
static inline int32_t mdt_row_window(int32_t r, int32_t n, int32_t stride, int32_t pad, int32_t k, int32_t dil,
                                     int32_t in_h, int32_t *win_pad, int32_t *win_h)
{
    const int32_t y0 = r * stride - pad;
    const int32_t top = y0 > 0 ? y0 : 0;
    int32_t rows = y0 + (n - 1) * stride + (k - 1) * dil + 1 - top;
    if (rows > in_h - top) {
        rows = in_h - top;
    }
    *win_pad = top - y0;
    *win_h = rows > 0 ? rows : 0;
    return top;
}

/* in-place row-by-row conv / depthwise (mdt_inplace.c): the scratch's first out_w * out_c bytes hold
 * one output row, the rest is the row kernel's working memory */
void mdt_conv2d_rows(const mdt_conv_params *p, int32_t rows_per_call, const int8_t *input, int8_t *output,
                     mdt_scratch scratch);
void mdt_dwconv_rows(const mdt_dwconv_params *p, int32_t rows_per_call, const int8_t *input, int8_t *output,
                     mdt_scratch scratch);

/* fused conv + residual add (mdt_fused.c) */
#include "mdt_fused.h"

#endif /* MDT_RUNTIME_MORE_H */
