/* mdt_fused.c - CONV_2D fused with the ADD that consumes it (a residual block's last conv and its
 * skip connection). The conv's output never exists whole: each output row is computed a few pixels
 * at a time into a small scratch (the ordinary conv kernel, fast paths included, on a window of the
 * input), requantized to int8 with the conv's own params exactly as TFLite does, then added to the
 * skip with the ADD's arithmetic. Output element i reads skip element i only, so the output may take
 * the skip's place (the compiler decides); the layer then needs its conv input, the skip and a
 * scratch of chunk_w * out_c bytes. Bit-exact with TFLite's reference Conv then Add. */
#include "mdt_dsp.h"
#include "mdt_fixedpoint.h"
#include "mdt_runtime.h"
#if MDT_DSP
#include "mdt_dsp_rq.h"
#endif

/* One ADD operand's rescaling, (offset + v) << left_shift then MultiplyByQuantizedMultiplier, for
 * every int8 v: it depends on that one byte, so a table replaces two multiplies per element. */
static void add_table(int32_t *t, int32_t offset, int32_t left_shift, int32_t mult, int32_t shift)
{
    int32_t v;
    for (v = -128; v < 128; ++v) {
        t[v + 128] = mdt_mbqm(mdt_wrap_shl(offset + v, left_shift), mult, shift);
    }
}

/* out[j] = ADD(conv[j], skip[j]) from the operands' tables: the reference's sum, output rescaling
 * (folded on the DSP build where the output multiplier allows it), offset and clamp. out may be skip. */
static void add_chunk(const mdt_add_params *a, const int32_t *t_conv, const int32_t *t_skip, const int8_t *conv,
                      const int8_t *skip, int8_t *out, int32_t n)
{
    int32_t j;
#if MDT_DSP
    if (mdt_rqf_ok(a->output_multiplier, a->output_shift)) {
        const mdt_rqf r = mdt_rqf_make(a->output_multiplier, a->output_shift, a->output_offset);
        const int64_t k = mdt_rqf_k(&r);
        MDT_PATH(MDT_PATH_FUSED_ADD_DSP);
        for (j = 0; j < n; ++j) {
            const int32_t s = mdt_wrap_add(t_conv[conv[j]], t_skip[skip[j]]);
            out[j] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, r.m, r.sh, s) + r.post, 0, a->act_min, a->act_max);
        }
        return;
    }
#endif
    for (j = 0; j < n; ++j) {
        /* skip[j] is read before out[j] is written: in place is safe */
        const int32_t s = mdt_wrap_add(t_conv[conv[j]], t_skip[skip[j]]);
        const int32_t o = mdt_mbqm(s, a->output_multiplier, a->output_shift) + a->output_offset;
        out[j] = (int8_t)mdt_clamp(o, a->act_min, a->act_max);
    }
}

void mdt_conv2d_add(const mdt_conv_add_params *p, const int8_t *input, const int8_t *skip, int8_t *output,
                    int8_t *scratch)
{
    const mdt_conv_params *c = &p->conv;
    const mdt_add_params *a = &p->add;
    const int32_t in_row = c->in_w * c->in_c;
    const int32_t out_row = c->out_w * c->out_c;
    int32_t t_conv[256], t_skip[256];
    mdt_conv_params q = *c;
    int32_t r, x0;
    add_table(t_conv, a->input1_offset, a->left_shift, a->input1_multiplier, a->input1_shift);
    add_table(t_skip, a->input2_offset, a->left_shift, a->input2_multiplier, a->input2_shift);
    q.out_h = 1;
    for (r = 0; r < c->out_h; ++r) {
        /* the input rows output row r reads: the first stored one and the top padding left */
        const int32_t y0 = r * c->stride_h - c->pad_h;
        const int32_t top = y0 > 0 ? y0 : 0;
        int32_t rows = y0 + (c->k_h - 1) * c->dil_h + 1 - top;
        if (rows > c->in_h - top) {
            rows = c->in_h - top;
        }
        q.pad_h = top - y0;
        q.in_h = rows > 0 ? rows : 0;
        for (x0 = 0; x0 < c->out_w; x0 += p->chunk_w) {
            /* pixels x0 .. x0 + n - 1 of the row: the same input rows, and a left padding of what
             * remains of pad_w at column x0 (negative: input columns before the first one read) */
            const int32_t n = c->out_w - x0 < p->chunk_w ? c->out_w - x0 : p->chunk_w;
            const int32_t base = r * out_row + x0 * c->out_c;
            q.out_w = n;
            q.pad_w = c->pad_w - x0 * c->stride_w;
            mdt_conv2d(&q, input + top * in_row, scratch);
            add_chunk(a, t_conv + 128, t_skip + 128, scratch, skip + base, output + base, n * c->out_c);
        }
    }
}
