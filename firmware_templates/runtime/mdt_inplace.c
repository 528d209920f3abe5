/* mdt_inplace.c - CONV_2D / DEPTHWISE_CONV_2D run a few output rows at a time into a scratch of that
 * many rows, each chunk then copied to an output that overlaps the input. The compiler places the
 * output at an offset where every copied row only lands on input rows no later row reads (checked
 * for every row, so any chunk size keeps it), so the layer needs its input, the chunk and the overlap
 * slack instead of input + output; it picks the largest chunk that does not raise the program's peak
 * (fewer calls: each call of a fast path re-reads the window's edge rows). The row kernels are the
 * ordinary ones (fast paths included) on a window of the input: pad_h / in_h describe the window. */
#include <string.h>

#include "mdt_runtime.h"

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

/* What the shared row loop needs of a layer (either kind): its output rows, the geometry of its input
 * rows' windows (mdt_row_window), the bytes of an input and an output row, and where the caller's copy
 * of the params keeps the three fields each call sets. */
typedef struct {
    int32_t out_h, stride, pad, k, dil, in_h, in_row, out_row;
    int32_t *q_out_h, *q_pad_h, *q_in_h;
} rows_geom;

/* The layer's kernel on the copy q. Through a pointer so that one loop serves both param types: one
 * indirect call per chunk of up to 8 rows, next to a kernel call's thousands of instructions. */
typedef void (*rows_kernel)(const void *q, const int8_t *input, int8_t *output, mdt_scratch s);

static void conv_kernel(const void *q, const int8_t *input, int8_t *output, mdt_scratch s)
{
    mdt_conv2d((const mdt_conv_params *)q, input, output, s);
}

static void dw_kernel(const void *q, const int8_t *input, int8_t *output, mdt_scratch s)
{
    mdt_depthwise_conv2d((const mdt_dwconv_params *)q, input, output, s);
}

/* The region: the chunk's output rows first, then the kernel's working memory, which the calls after
 * the first may reuse (keep: the layer's constant tables, keyed, stay valid within its step). */
static inline __attribute__((always_inline)) void rows(const rows_geom *g, rows_kernel kernel, const void *q,
                                                     int32_t rows_per_call, const int8_t *input,
                 int8_t *output, mdt_scratch scratch)
{
    const int32_t chunk = rows_per_call > 1 ? rows_per_call : 1;
    int8_t *const row = mdt_scratch_head(&scratch, chunk * g->out_row);
    int32_t r, n;
    if (row == 0) {
        return; /* the compiler always reserves the rows: not reached */
    }
    scratch.keep = 0;
    for (r = 0; r < g->out_h; r += n) {
        int32_t top;
        n = g->out_h - r < chunk ? g->out_h - r : chunk;
        top = mdt_row_window(r, n, g->stride, g->pad, g->k, g->dil, g->in_h, g->q_pad_h, g->q_in_h);
        *g->q_out_h = n;
        kernel(q, input + top * g->in_row, row, scratch);
        scratch.keep = 1;
        put_row(row, output + r * g->out_row, n * g->out_row);
    }
}

void mdt_conv2d_rows(const mdt_conv_params *p, int32_t rows_per_call, const int8_t *input, int8_t *output,
                     mdt_scratch scratch)
{
    mdt_conv_params q = *p;
    const rows_geom g = {p->out_h, p->stride_h, p->pad_h, p->k_h, p->dil_h, p->in_h, p->in_w * p->in_c,
                         p->out_w * p->out_c, &q.out_h, &q.pad_h, &q.in_h};
    rows(&g, conv_kernel, &q, rows_per_call, input, output, scratch);
}

void mdt_dwconv_rows(const mdt_dwconv_params *p, int32_t rows_per_call, const int8_t *input, int8_t *output,
                     mdt_scratch scratch)
{
    mdt_dwconv_params q = *p;
    const rows_geom g = {p->out_h, p->stride_h, p->pad_h, p->k_h, p->dil_h, p->in_h, p->in_w * p->in_c,
                         p->out_w * p->out_c, &q.out_h, &q.pad_h, &q.in_h};
    rows(&g, dw_kernel, &q, rows_per_call, input, output, scratch);
}
