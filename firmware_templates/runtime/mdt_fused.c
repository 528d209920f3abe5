/* mdt_fused.c - CONV_2D fused with the ADD that consumes it (a residual block's last conv and its
 * skip connection). The conv's output never exists whole: each output row is computed a few pixels
 * at a time into a small scratch (the ordinary conv kernel, fast paths included, on a window of the
 * input), requantized to int8 with the conv's own params exactly as TFLite does, then added to the
 * skip with the ADD's arithmetic. Output element i reads skip element i only, so the output may take
 * the skip's place (the compiler decides); the layer then needs its conv input, the skip and a
 * scratch of chunk_w * out_c bytes and the conv's working memory. Bit-exact with TFLite's reference
 * Conv then Add. */
#include <stddef.h>

#include "mdt_dsp.h"
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"
#if MDT_DSP
#include "mdt_dsp_add.h"
#include "mdt_dsp_rq.h"
#endif

#if MDT_DSP
/* The element loop with both operands' forms fixed (constants at each call site: no per-element
 * branches) and every constant in a local. */
static inline __attribute__((always_inline)) void add_loop(const mdt_add_params *a, const mdt_rqs *r1,
                                                           const mdt_rqs *r2, const int8_t *conv, const int8_t *skip,
                                                           int8_t *out, int32_t n, int plain1, int plain2)
{
    const mdt_rqf r = mdt_rqf_make(a->output_multiplier, a->output_shift, a->output_offset);
    const int64_t k = mdt_rqf_k(&r), k1 = r1->k, k2 = r2->k;
    const int32_t m1 = r1->m, sh1 = r1->sh, l1 = r1->left, m2 = r2->m, sh2 = r2->sh, l2 = r2->left;
    const int32_t off1 = a->input1_offset, off2 = a->input2_offset, lo = a->act_min, hi = a->act_max;
    int32_t j;
    for (j = 0; j < n; ++j) {
        const int32_t s = mdt_wrap_add(mdt_rqs_apply(k1, m1, sh1, l1, plain1, off1 + conv[j]),
                                       mdt_rqs_apply(k2, m2, sh2, l2, plain2, off2 + skip[j]));
        out[j] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, r.m, r.sh, s) + r.post, 0, lo, hi);
    }
}
#endif

/* out[j] = ADD(conv[j], skip[j]), element by element: from the compiler's operand tables where it
 * wrote them (flash: no SRAM; none in the scratch, whose 2 KB would outweigh what the fusion saves),
 * else from the reference's integers: each operand rescaled, summed, the output rescaling, offset
 * and clamp; on the DSP build all three in the folded forms where the multipliers allow it. out may
 * be skip. */
/* (out of line: its constants stay off the frame under the conv's calls) */
static __attribute__((noinline)) void add_chunk(const mdt_add_params *a, const int8_t *conv, const int8_t *skip,
                                                int8_t *out, int32_t n)
{
    int32_t j;
#if MDT_DSP
    mdt_rqs r1, r2;
    if (a->input1_table != NULL && a->input2_table != NULL && mdt_rqf_ok(a->output_multiplier, a->output_shift)) {
        MDT_PATH(MDT_PATH_ADD_TABLES_CONST);
        MDT_PATH(MDT_PATH_FUSED_ADD_DSP);
        const mdt_rqf r = mdt_rqf_make(a->output_multiplier, a->output_shift, a->output_offset);
        mdt_add_tables(conv, skip, out, n, a->input1_table, a->input2_table, &r, a->act_min, a->act_max);
        return;
    }
    if (mdt_rqf_ok(a->output_multiplier, a->output_shift) &&
        mdt_rqs_ok(a->input1_multiplier, a->input1_shift, a->left_shift) &&
        mdt_rqs_ok(a->input2_multiplier, a->input2_shift, a->left_shift)) {
        MDT_PATH(MDT_PATH_FUSED_ADD_DSP);
        r1 = mdt_rqs_make(a->input1_multiplier, a->input1_shift, a->left_shift);
        r2 = mdt_rqs_make(a->input2_multiplier, a->input2_shift, a->left_shift);
        if (r1.plain) {
            if (r2.plain) {
                add_loop(a, &r1, &r2, conv, skip, out, n, 1, 1);
            } else {
                add_loop(a, &r1, &r2, conv, skip, out, n, 1, 0);
            }
        } else if (r2.plain) {
            add_loop(a, &r1, &r2, conv, skip, out, n, 0, 1);
        } else {
            add_loop(a, &r1, &r2, conv, skip, out, n, 0, 0);
        }
        return;
    }
#endif
    for (j = 0; j < n; ++j) {
        /* skip[j] is read before out[j] is written: in place is safe */
        const int32_t s1 = mdt_mbqm(mdt_wrap_shl(a->input1_offset + conv[j], a->left_shift), a->input1_multiplier,
                                    a->input1_shift);
        const int32_t s2 = mdt_mbqm(mdt_wrap_shl(a->input2_offset + skip[j], a->left_shift), a->input2_multiplier,
                                    a->input2_shift);
        const int32_t o = mdt_mbqm(mdt_wrap_add(s1, s2), a->output_multiplier, a->output_shift) + a->output_offset;
        out[j] = (int8_t)mdt_clamp(o, a->act_min, a->act_max);
    }
}

/* The region: the chunk's conv outputs first, then the conv kernel's working memory (its keyed tables
 * reused by the chunks after the first: keep). */
void mdt_conv2d_add(const mdt_conv_add_params *p, const int8_t *input, const int8_t *skip, int8_t *output,
                    mdt_scratch scratch)
{
    const mdt_conv_params *c = &p->conv;
    const mdt_add_params *a = &p->add;
    const int32_t in_row = c->in_w * c->in_c;
    const int32_t out_row = c->out_w * c->out_c;
    int8_t *const chunk = mdt_scratch_head(&scratch, p->chunk_w * c->out_c);
    mdt_conv_params q = *c;
    int32_t r, x0;
    if (chunk == NULL) {
        return; /* the compiler always reserves the chunk: not reached */
    }
    q.out_h = 1;
    scratch.keep = 0;
    for (r = 0; r < c->out_h; ++r) {
        /* the input rows output row r reads: the first stored one and the top padding left */
        const int32_t top = mdt_row_window(r, 1, c->stride_h, c->pad_h, c->k_h, c->dil_h, c->in_h, &q.pad_h, &q.in_h);
        for (x0 = 0; x0 < c->out_w; x0 += p->chunk_w) {
            /* pixels x0 .. x0 + n - 1 of the row: the same input rows, and a left padding of what
             * remains of pad_w at column x0 (negative: input columns before the first one read) */
            const int32_t n = c->out_w - x0 < p->chunk_w ? c->out_w - x0 : p->chunk_w;
            const int32_t base = r * out_row + x0 * c->out_c;
            q.out_w = n;
            q.pad_w = c->pad_w - x0 * c->stride_w;
            mdt_conv2d(&q, input + top * in_row, chunk, scratch);
            scratch.keep = 1;
            add_chunk(a, chunk, skip + base, output + base, n * c->out_c);
        }
    }
}
