/* mdt_inplace.c - CONV_2D / DEPTHWISE_CONV_2D run one output row at a time into a one-row scratch,
 * each row then copied to an output that overlaps the input. The compiler places the output at an
 * offset where every copied row only lands on input rows no later row reads, so the layer needs
 * its input, a row and the overlap slack instead of input + output. The row kernels are the
 * ordinary ones (fast paths included) on a window of the input: pad_h / in_h describe the window. */
#include <string.h>

#include "mdt_runtime.h"

/* The window of input rows output row r reads: its first stored row and the top padding left. */
static const int8_t *window(int32_t r, int32_t stride, int32_t pad, int32_t k, int32_t dil, int32_t in_h,
                            int32_t in_row, const int8_t *input, int32_t *win_pad, int32_t *win_h)
{
    const int32_t y0 = r * stride - pad;
    const int32_t top = y0 > 0 ? y0 : 0;
    int32_t rows = y0 + (k - 1) * dil + 1 - top;
    if (rows > in_h - top) {
        rows = in_h - top;
    }
    *win_pad = top - y0;
    *win_h = rows > 0 ? rows : 0;
    return input + top * in_row;
}

/* A word at a time (4-byte memcpy compiles to one load and one store where the core allows unaligned
 * words, byte moves elsewhere); the scratch row never overlaps the output. */
static void put_row(const int8_t *scratch, int8_t *dst, int32_t n)
{
    int32_t k;
    for (k = 0; k + 4 <= n; k += 4) {
        uint32_t v;
        memcpy(&v, scratch + k, 4);
        memcpy(dst + k, &v, 4);
    }
    for (; k < n; ++k) {
        dst[k] = scratch[k];
    }
}

void mdt_conv2d_rows(const mdt_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch)
{
    const int32_t in_row = p->in_w * p->in_c;
    const int32_t out_row = p->out_w * p->out_c;
    mdt_conv_params q = *p;
    int32_t r;
    q.out_h = 1;
    for (r = 0; r < p->out_h; ++r) {
        const int8_t *win = window(r, p->stride_h, p->pad_h, p->k_h, p->dil_h, p->in_h, in_row, input, &q.pad_h,
                                   &q.in_h);
        mdt_conv2d(&q, win, scratch);
        put_row(scratch, output + r * out_row, out_row);
    }
}

void mdt_dwconv_rows(const mdt_dwconv_params *p, const int8_t *input, int8_t *output, int8_t *scratch)
{
    const int32_t in_row = p->in_w * p->in_c;
    const int32_t out_row = p->out_w * p->out_c;
    mdt_dwconv_params q = *p;
    int32_t r;
    q.out_h = 1;
    for (r = 0; r < p->out_h; ++r) {
        const int8_t *win = window(r, p->stride_h, p->pad_h, p->k_h, p->dil_h, p->in_h, in_row, input, &q.pad_h,
                                   &q.in_h);
        mdt_depthwise_conv2d(&q, win, scratch);
        put_row(scratch, output + r * out_row, out_row);
    }
}
