/* mdt_inplace.c - CONV_2D / DEPTHWISE_CONV_2D run a few output rows at a time into a scratch of that
 * many rows, each chunk then copied to an output that overlaps the input. The compiler places the
 * output at an offset where every copied row only lands on input rows no later row reads (checked
 * for every row, so any chunk size keeps it), so the layer needs its input, the chunk and the overlap
 * slack instead of input + output; it picks the largest chunk that does not raise the program's peak
 * (fewer calls: each call of a fast path re-reads the window's edge rows). The row kernels are the
 * ordinary ones (fast paths included) on a window of the input: pad_h / in_h describe the window. */
#include <string.h>

#include "mdt_runtime.h"

/* The window of input rows output rows r .. r + n - 1 read: its first stored row and the top padding
 * left. */
static const int8_t *window(int32_t r, int32_t n, int32_t stride, int32_t pad, int32_t k, int32_t dil, int32_t in_h,
                            int32_t in_row, const int8_t *input, int32_t *win_pad, int32_t *win_h)
{
    const int32_t y0 = r * stride - pad;
    const int32_t top = y0 > 0 ? y0 : 0;
    int32_t rows = y0 + (n - 1) * stride + (k - 1) * dil + 1 - top;
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

/* The region: the chunk's output rows first, then the kernel's working memory, which the calls after
 * the first may reuse (keep: the layer's constant tables, keyed, stay valid within its step). */
void mdt_conv2d_rows(const mdt_conv_params *p, int32_t rows_per_call, const int8_t *input, int8_t *output,
                     mdt_scratch scratch)
{
    const int32_t in_row = p->in_w * p->in_c;
    const int32_t out_row = p->out_w * p->out_c;
    const int32_t chunk = rows_per_call > 1 ? rows_per_call : 1;
    int8_t *const row = mdt_scratch_head(&scratch, chunk * out_row);
    mdt_conv_params q = *p;
    int32_t r;
    if (row == 0) {
        return; /* the compiler always reserves the rows: not reached */
    }
    scratch.keep = 0;
    for (r = 0; r < p->out_h; r += q.out_h) {
        const int8_t *win;
        q.out_h = p->out_h - r < chunk ? p->out_h - r : chunk;
        win = window(r, q.out_h, p->stride_h, p->pad_h, p->k_h, p->dil_h, p->in_h, in_row, input, &q.pad_h, &q.in_h);
        mdt_conv2d(&q, win, row, scratch);
        scratch.keep = 1;
        put_row(row, output + r * out_row, q.out_h * out_row);
    }
}

void mdt_dwconv_rows(const mdt_dwconv_params *p, int32_t rows_per_call, const int8_t *input, int8_t *output,
                     mdt_scratch scratch)
{
    const int32_t in_row = p->in_w * p->in_c;
    const int32_t out_row = p->out_w * p->out_c;
    const int32_t chunk = rows_per_call > 1 ? rows_per_call : 1;
    int8_t *const row = mdt_scratch_head(&scratch, chunk * out_row);
    mdt_dwconv_params q = *p;
    int32_t r;
    if (row == 0) {
        return; /* the compiler always reserves the rows: not reached */
    }
    scratch.keep = 0;
    for (r = 0; r < p->out_h; r += q.out_h) {
        const int8_t *win;
        q.out_h = p->out_h - r < chunk ? p->out_h - r : chunk;
        win = window(r, q.out_h, p->stride_h, p->pad_h, p->k_h, p->dil_h, p->in_h, in_row, input, &q.pad_h, &q.in_h);
        mdt_depthwise_conv2d(&q, win, row, scratch);
        scratch.keep = 1;
        put_row(row, output + r * out_row, q.out_h * out_row);
    }
}
