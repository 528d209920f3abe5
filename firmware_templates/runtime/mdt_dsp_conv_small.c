/*
 * mdt_dsp_conv_small.c - Cortex-M4 fast path of CONV_2D for small depths (k_h * k_w * in_c <= 16,
 * e.g. pointwise convs over 4..16 channels), bit-exact with TFLite's reference ConvPerChannel.
 *
 * At these depths a channel's dot product is 2..8 SMLADs, so the requantisation and the loop
 * around them are most of the work. Here the loop is pixel-major and written in Thumb-2 assembly:
 * one pixel's inputs, widened with the input offset, stay in registers (4 words at depth <= 8, 8 at
 * <= 16) while a per-call table walks the output channels. Each channel's table entry holds its
 * widened weights, bias and requantisation constants, and ends with the address of the code that
 * requantises it; the LDM that loads the next channel's entry also loads that address into PC, so
 * one instruction fetches the constants and takes the loop branch (the entry after the last
 * channel points at the pixel epilogue). Depth 8: 10 instructions per output, depth 16: 17.
 *
 * Requantisation (TFLite MultiplyByQuantizedMultiplier, double rounding, then the output offset):
 * weights and bias are doubled in the table, so the accumulator is a = 2 acc (exact: the table
 * takes |bias| <= 2^28 and a depth-16 sum is below 2^20), and for m >= 0 and a right shift e >= 1
 *   SMMLAR(a, m, R - [acc < 0]) >> e,   R = 2^(e-1) + off 2^e
 * is exactly floor((srdhm(acc, m) + 2^(e-1) - [acc < 0]) / 2^e) + off: SMMLAR adds 2^31 to the
 * 64-bit product before taking the high word, floor((2 acc m + 2^31) / 2^32) = floor((acc m +
 * 2^30) / 2^31) = srdhm(acc, m) for m >= 0 (mdt_dsp_rq.h), and the rounding shift's tie rule is the
 * -[srdhm < 0], for which [acc < 0] stands (they differ only where srdhm is 0, which rounds to 0
 * either way). [acc < 0] is acc's sign bit, one ADD with ASR #31. The offset folds into R while
 * e <= 23 (R stays below 2^30 + 2^22, the sum below 2^31); above, it is added after the shift
 * (it rides in bits 8.. of the shift word: ASR by register reads only the low byte). A multiplier of
 * 0 is e = 1, m = 0. Channels outside this (a left shift or none, a negative multiplier, a bias
 * above 2^28) are skipped by the loop and computed afterwards by the reference formula.
 */
#include "mdt_dsp.h"

#if MDT_DSP

#include <arm_acle.h>
#include <stddef.h>

#include "mdt_fixedpoint.h"
#include "mdt_dsp_intrin.h"

#if defined(__thumb2__)

/* Output channels per table (one table per block of channels, rebuilt every call: in-place layers
 * call once per output row) and pixels per gathered chunk. Both live in the layer's scratch: the
 * table S words per channel of a block + the end entry (S = 9 / 13 at depth <= 8 / 16; the end
 * entry's words up to its PC word: 9 / 4), the chunk nb bytes per pixel of a pass where the input is
 * not streamed; the frames that remain are the table builder's and the loop's (about 200 bytes). */
#define SMALL_CB 32
#define SMALL_PIX 16

/* What the assembly loop reads, copied whole to its frame. `in` walks pixels of 8 (depth <= 8) or 16
 * bytes (the im2col row, padded with -input_offset, which widens to 0). */
typedef struct {
    const int8_t *in;
    const uint32_t *tbl;
    const int8_t *in_end;
    int32_t off2;   /* the input offset in both halfwords */
    int32_t lo, hi; /* activation range, for the clamping bodies */
    int8_t *out;    /* first pixel's first output of the block */
} small_job;

/* Entry points and the bodies the table's PC words name (defined in the assembly below). */
void mdt_small_k8(const small_job *job);
void mdt_small_k16(const small_job *job);
void mdt_small_k8_full(void);
void mdt_small_k8_post(void);
void mdt_small_k8_clamp(void);
void mdt_small_k8_skip(void);
void mdt_small_k8_end(void);
void mdt_small_k8_end_skip(void);
void mdt_small_k16_full(void);
void mdt_small_k16_post(void);
void mdt_small_k16_clamp(void);
void mdt_small_k16_skip(void);
void mdt_small_k16_end(void);
void mdt_small_k16_end_skip(void);

/* What the assembly table builders read (bias not NULL). */
typedef struct {
    const int8_t *f;
    const int32_t *mult;
    const int8_t *shift;
    const int32_t *bias;
    uint32_t off;  /* output offset */
    uint32_t body; /* the FULL or CLAMP body */
} tbl_src;

int mdt_small_tbl8(uint32_t *t, uint32_t *end, const tbl_src *src);
int mdt_small_tbl16(uint32_t *t, uint32_t *end, const tbl_src *src);

/*
 * Registers, depth <= 8: r0-r3 the pixel's 4 input words, r12 the table, lr the output; an entry is
 * {w0, w1, w2, w3, 2 bias, R, m, shift word, body} loaded into r4-r11 and PC (shift word: e, plus
 * the output offset << 8 where it is added after the shift).
 * Depth <= 16: r0-r7 the 8 input words, r8-r11 for the entry {2 bias, w0, w1, body | w2, w3, w4 |
 * w5, w6, w7 | R, m, shift word}, its first four words loaded by the previous channel's last LDM.
 * The frame (sp) is the small_job. The end entry's first word is out_skip (out_c - channels in the
 * table), added to the output pointer after each pixel.
 */
__asm__(
    "\t.pushsection .text.mdt_small_k8,\"ax\",%progbits\n"
    "\t.syntax unified\n"
    "\t.thumb\n"
    "\t.balign 4\n"

    /* requantise r8 (2 acc) with R in r9, m in r10, shift word in r11 */
    "\t.macro mdt_small_rq\n"
    "\tadd r9, r9, r8, asr #31\n"
    "\tsmmlar r8, r8, r10, r9\n"
    "\tasr r8, r8, r11\n"
    "\t.endm\n"
    /* add the offset left after the shift (0 when folded into R), clamp r8 to [lo, hi] from the
     * frame; \a and \b free */
    "\t.macro mdt_small_clamp a, b\n"
    "\tadd r8, r8, r11, asr #8\n"
    "\tldrd \\a, \\b, [sp, #16]\n"
    "\tcmp r8, \\a\n"
    "\tit lt\n"
    "\tmovlt r8, \\a\n"
    "\tcmp r8, \\b\n"
    "\tit gt\n"
    "\tmovgt r8, \\b\n"
    "\t.endm\n"
    "\t.macro mdt_small_fn name\n"
    "\t.global \\name\n"
    "\t.type \\name, %function\n"
    "\t.thumb_func\n"
    "\\name:\n"
    "\t.endm\n"

    /* ---- depth <= 8 ---- */
    "\tmdt_small_fn mdt_small_k8\n"
    "\tpush {r4-r11, lr}\n"
    "\tsub sp, sp, #28\n"
    "\tldm r0, {r1-r7}\n"
    "\tstm sp, {r1-r7}\n"
    "\tmov lr, r7\n"
    "\tldm sp, {r4-r7}\n"
    ".Lmdt_small_k8_pix:\n" /* r4 in, r5 tbl, r6 in_end, r7 off2 */
    "\tldr r9, [r4, #4]\n"
    "\tldr r10, [r4], #8\n"
    "\tstr r4, [sp]\n"
    "\tsxtab16 r0, r7, r10\n"
    "\tsxtab16 r1, r7, r10, ror #8\n"
    "\tsxtab16 r2, r7, r9\n"
    "\tsxtab16 r3, r7, r9, ror #8\n"
    "\tmov r12, r5\n"
    "\tldm r12!, {r4-r11, pc}\n"
    "\t.size mdt_small_k8, .-mdt_small_k8\n"

    "\tmdt_small_fn mdt_small_k8_full\n"
    "\tsmlad r8, r0, r4, r8\n"
    "\tsmlad r8, r1, r5, r8\n"
    "\tsmlad r8, r2, r6, r8\n"
    "\tsmlad r8, r3, r7, r8\n"
    "\tmdt_small_rq\n"
    "\tssat r8, #8, r8\n"
    "\tstrb r8, [lr], #1\n"
    "\tldm r12!, {r4-r11, pc}\n"
    "\t.size mdt_small_k8_full, .-mdt_small_k8_full\n"

    "\tmdt_small_fn mdt_small_k8_post\n"
    "\tsmlad r8, r0, r4, r8\n"
    "\tsmlad r8, r1, r5, r8\n"
    "\tsmlad r8, r2, r6, r8\n"
    "\tsmlad r8, r3, r7, r8\n"
    "\tmdt_small_rq\n"
    "\tadd r8, r8, r11, asr #8\n"
    "\tssat r8, #8, r8\n"
    "\tstrb r8, [lr], #1\n"
    "\tldm r12!, {r4-r11, pc}\n"
    "\t.size mdt_small_k8_post, .-mdt_small_k8_post\n"

    "\tmdt_small_fn mdt_small_k8_clamp\n"
    "\tsmlad r8, r0, r4, r8\n"
    "\tsmlad r8, r1, r5, r8\n"
    "\tsmlad r8, r2, r6, r8\n"
    "\tsmlad r8, r3, r7, r8\n"
    "\tmdt_small_rq\n"
    "\tmdt_small_clamp r4, r5\n"
    "\tstrb r8, [lr], #1\n"
    "\tldm r12!, {r4-r11, pc}\n"
    "\t.size mdt_small_k8_clamp, .-mdt_small_k8_clamp\n"

    "\tmdt_small_fn mdt_small_k8_skip\n"
    "\tadd lr, lr, #1\n"
    "\tldm r12!, {r4-r11, pc}\n"
    "\t.size mdt_small_k8_skip, .-mdt_small_k8_skip\n"

    "\tmdt_small_fn mdt_small_k8_end_skip\n"
    "\tadd lr, lr, r4\n" /* the end entry's first word: out_skip */
    "\tmdt_small_fn mdt_small_k8_end\n"
    "\tldm sp, {r4-r7}\n"
    "\tcmp r4, r6\n"
    "\tbne .Lmdt_small_k8_pix\n"
    "\tadd sp, sp, #28\n"
    "\tpop {r4-r11, pc}\n"
    "\t.size mdt_small_k8_end, .-mdt_small_k8_end\n"
    "\t.size mdt_small_k8_end_skip, .-mdt_small_k8_end_skip\n"

    /* ---- depth <= 16 ---- */
    "\tmdt_small_fn mdt_small_k16\n"
    "\tpush {r4-r11, lr}\n"
    "\tsub sp, sp, #28\n"
    "\tldm r0, {r1-r7}\n"
    "\tstm sp, {r1-r7}\n"
    "\tmov lr, r7\n"
    "\tldm sp, {r8-r11}\n"
    ".Lmdt_small_k16_pix:\n" /* r8 in, r9 tbl, r10 in_end, r11 off2 */
    "\tldr r3, [r8, #4]\n"
    "\tldr r5, [r8, #8]\n"
    "\tldr r7, [r8, #12]\n"
    "\tldr r1, [r8], #16\n"
    "\tstr r8, [sp]\n"
    "\tsxtab16 r0, r11, r1\n"
    "\tsxtab16 r1, r11, r1, ror #8\n"
    "\tsxtab16 r2, r11, r3\n"
    "\tsxtab16 r3, r11, r3, ror #8\n"
    "\tsxtab16 r4, r11, r5\n"
    "\tsxtab16 r5, r11, r5, ror #8\n"
    "\tsxtab16 r6, r11, r7\n"
    "\tsxtab16 r7, r11, r7, ror #8\n"
    "\tmov r12, r9\n"
    "\tldm r12!, {r8-r10, pc}\n"
    "\t.size mdt_small_k16, .-mdt_small_k16\n"

    "\t.macro mdt_small_sums16\n"
    "\tsmlad r8, r0, r9, r8\n"
    "\tsmlad r8, r1, r10, r8\n"
    "\tldm r12!, {r9-r11}\n"
    "\tsmlad r8, r2, r9, r8\n"
    "\tsmlad r8, r3, r10, r8\n"
    "\tsmlad r8, r4, r11, r8\n"
    "\tldm r12!, {r9-r11}\n"
    "\tsmlad r8, r5, r9, r8\n"
    "\tsmlad r8, r6, r10, r8\n"
    "\tsmlad r8, r7, r11, r8\n"
    "\tldm r12!, {r9-r11}\n"
    "\t.endm\n"

    "\tmdt_small_fn mdt_small_k16_full\n"
    "\tmdt_small_sums16\n"
    "\tmdt_small_rq\n"
    "\tssat r8, #8, r8\n"
    "\tstrb r8, [lr], #1\n"
    "\tldm r12!, {r8-r10, pc}\n"
    "\t.size mdt_small_k16_full, .-mdt_small_k16_full\n"

    "\tmdt_small_fn mdt_small_k16_post\n"
    "\tmdt_small_sums16\n"
    "\tmdt_small_rq\n"
    "\tadd r8, r8, r11, asr #8\n"
    "\tssat r8, #8, r8\n"
    "\tstrb r8, [lr], #1\n"
    "\tldm r12!, {r8-r10, pc}\n"
    "\t.size mdt_small_k16_post, .-mdt_small_k16_post\n"

    "\tmdt_small_fn mdt_small_k16_clamp\n"
    "\tmdt_small_sums16\n"
    "\tmdt_small_rq\n"
    "\tmdt_small_clamp r9, r10\n"
    "\tstrb r8, [lr], #1\n"
    "\tldm r12!, {r8-r10, pc}\n"
    "\t.size mdt_small_k16_clamp, .-mdt_small_k16_clamp\n"

    "\tmdt_small_fn mdt_small_k16_skip\n"
    "\tadd r12, r12, #36\n"
    "\tadd lr, lr, #1\n"
    "\tldm r12!, {r8-r10, pc}\n"
    "\t.size mdt_small_k16_skip, .-mdt_small_k16_skip\n"

    "\tmdt_small_fn mdt_small_k16_end_skip\n"
    "\tadd lr, lr, r8\n" /* the end entry's first word: out_skip */
    "\tmdt_small_fn mdt_small_k16_end\n"
    "\tldm sp, {r8-r11}\n"
    "\tcmp r8, r10\n"
    "\tbne .Lmdt_small_k16_pix\n"
    "\tadd sp, sp, #28\n"
    "\tpop {r4-r11, pc}\n"
    "\t.size mdt_small_k16_end, .-mdt_small_k16_end\n"
    "\t.size mdt_small_k16_end_skip, .-mdt_small_k16_end_skip\n"

    /* ---- tables at depth 8 and 16: r0 the first entry, r1 the end, r2 the tbl_src; the common
     * channels only (m >= 0, e = 1..23 or m == 0, |bias| <= 2^28): returns 1 at any other, and the
     * C builder redoes the table ---- */
    /* r3 mult, r4 shift, r6 off -> r9 R, r10 m, r11 e (r12 clobbered) */
    "\t.macro mdt_small_tbl_rq\n"
    "\tldr r10, [r3], #4\n"
    "\tldrsb r11, [r4], #1\n"
    "\tcmp r10, #0\n"
    "\tblt .Lmdt_small_tbl_fail\n"
    "\trsb r11, r11, #0\n"
    "\tit eq\n"
    "\tmoveq r11, #1\n"
    "\tsub r9, r11, #1\n"
    "\tcmp r9, #22\n"
    "\tbhi .Lmdt_small_tbl_fail\n"
    "\tmov r12, #1\n"
    "\tlsl r9, r12, r9\n"
    "\tlsl r12, r6, r11\n"
    "\tadd r9, r9, r12\n"
    "\t.endm\n"
    /* r5 bias -> r8 2 bias (r12 clobbered) */
    "\t.macro mdt_small_tbl_bias\n"
    "\tldr r8, [r5], #4\n"
    "\tadd r12, r8, #0x10000000\n"
    "\tcmp r12, #0x20000000\n"
    "\tbhi .Lmdt_small_tbl_fail\n"
    "\tlsl r8, r8, #1\n"
    "\t.endm\n"

    "\tmdt_small_fn mdt_small_tbl8\n"
    "\tpush {r4-r11, lr}\n"
    "\tldm r2, {r2-r7}\n" /* r2 f, r3 mult, r4 shift, r5 bias, r6 off, r7 body */
    ".Lmdt_small_tbl8_ch:\n"
    "\tldr r8, [r2], #4\n"
    "\tldr r9, [r2], #4\n"
    "\tsxtb16 r10, r8\n"
    "\tsxtb16 r11, r8, ror #8\n"
    "\tsxtb16 r12, r9\n"
    "\tsxtb16 lr, r9, ror #8\n"
    "\tsadd16 r10, r10, r10\n"
    "\tsadd16 r11, r11, r11\n"
    "\tsadd16 r12, r12, r12\n"
    "\tsadd16 lr, lr, lr\n"
    "\tstm r0!, {r10-r12, lr}\n" /* w0 .. w3 */
    "\tmdt_small_tbl_rq\n"
    "\tmdt_small_tbl_bias\n"
    "\tmov r12, r7\n"
    "\tstm r0!, {r8-r12}\n" /* 2 bias, R, m, e, body */
    "\tcmp r0, r1\n"
    "\tbne .Lmdt_small_tbl8_ch\n"
    "\tmovs r0, #0\n"
    "\tpop {r4-r11, pc}\n"
    ".Lmdt_small_tbl_fail:\n"
    "\tmovs r0, #1\n"
    "\tpop {r4-r11, pc}\n"
    "\t.size mdt_small_tbl8, .-mdt_small_tbl8\n"

    "\tmdt_small_fn mdt_small_tbl16\n"
    "\tpush {r4-r11, lr}\n"
    "\tldm r2, {r2-r7}\n"
    ".Lmdt_small_tbl16_ch:\n"
    "\tldr r12, [r2], #4\n"
    "\tsxtb16 r9, r12\n"
    "\tsxtb16 r10, r12, ror #8\n"
    "\tsadd16 r9, r9, r9\n"
    "\tsadd16 r10, r10, r10\n"
    "\tmdt_small_tbl_bias\n"
    "\tmov r11, r7\n"
    "\tstm r0!, {r8-r11}\n" /* 2 bias, w0, w1, body */
    "\tldr r12, [r2], #4\n"
    "\tldr lr, [r2], #4\n"
    "\tsxtb16 r8, r12\n"
    "\tsxtb16 r9, r12, ror #8\n"
    "\tsxtb16 r10, lr\n"
    "\tsxtb16 r11, lr, ror #8\n"
    "\tldr lr, [r2], #4\n"
    "\tsxtb16 r12, lr\n"
    "\tsxtb16 lr, lr, ror #8\n"
    "\tsadd16 r8, r8, r8\n"
    "\tsadd16 r9, r9, r9\n"
    "\tsadd16 r10, r10, r10\n"
    "\tsadd16 r11, r11, r11\n"
    "\tsadd16 r12, r12, r12\n"
    "\tsadd16 lr, lr, lr\n"
    "\tstm r0!, {r8-r12, lr}\n" /* w2 .. w7 */
    "\tmdt_small_tbl_rq\n"
    "\tstm r0!, {r9-r11}\n" /* R, m, e */
    "\tcmp r0, r1\n"
    "\tbne .Lmdt_small_tbl16_ch\n"
    "\tmovs r0, #0\n"
    "\tpop {r4-r11, pc}\n"
    "\t.size mdt_small_tbl16, .-mdt_small_tbl16\n"

    "\t.purgem mdt_small_tbl_rq\n"
    "\t.purgem mdt_small_tbl_bias\n"
    "\t.purgem mdt_small_rq\n"
    "\t.purgem mdt_small_clamp\n"
    "\t.purgem mdt_small_fn\n"
    "\t.purgem mdt_small_sums16\n"
    "\t.popsection\n");

enum { B_FULL, B_POST, B_SKIP, B_END, B_END_SKIP, B_N };

/* [wide][full activation range]: the bodies of B_FULL .. B_END_SKIP */
static void (*const bodies[2][2][B_N])(void) = {
    {{mdt_small_k8_clamp, mdt_small_k8_clamp, mdt_small_k8_skip, mdt_small_k8_end, mdt_small_k8_end_skip},
     {mdt_small_k8_full, mdt_small_k8_post, mdt_small_k8_skip, mdt_small_k8_end, mdt_small_k8_end_skip}},
    {{mdt_small_k16_clamp, mdt_small_k16_clamp, mdt_small_k16_skip, mdt_small_k16_end, mdt_small_k16_end_skip},
     {mdt_small_k16_full, mdt_small_k16_post, mdt_small_k16_skip, mdt_small_k16_end, mdt_small_k16_end_skip}},
};

/* a Thumb symbol's address: bit 0 set, as LDM into PC needs */
#define ADDR(f) ((uint32_t)(uintptr_t)(f))

/* One group of 4 weight bytes as the two doubled halfword words the loop multiplies with the
 * widened inputs (bytes 0 and 2, then 1 and 3). */
static inline __attribute__((always_inline)) void wpair(int32_t v, uint32_t *w)
{
    const int32_t e = __sxtb16(v), o = sxtb16_ror8(v);
    w[0] = (uint32_t)__sadd16(e, e);
    w[1] = (uint32_t)__sadd16(o, o);
}

/* The table of channels oc0 .. oc0 + n - 1 in the layout of the k8 (wide == 0) or k16 loop; returns
 * whether a channel is left to the reference (its body is SKIP). `body`: the FULL (or CLAMP), POST
 * (or CLAMP), SKIP, END and END_SKIP addresses. Rebuilt every call (in-place layers call once per
 * output row): depth 8 and 16 with the common channels take the assembly builders, the rest this C. */
static __attribute__((noinline)) int build_table(uint32_t *t, const mdt_conv_params *p, int32_t depth, int wide,
                                                 int32_t oc0, int32_t n, void (*const *body)(void))
{
    const int32_t S = wide ? 13 : 9; /* words per entry */
    uint32_t *const end = t + n * S;
    const int8_t *f = p->filter + oc0 * depth;
    const uint32_t off = (uint32_t)p->output_offset;
    int bad = 0;
    int32_t oc;
    /* the entry after the last channel: out_skip (the rest of its data words unread), its PC word */
    end[0] = (uint32_t)(p->out_c - n);
    end[wide ? 3 : 8] = ADDR(body[n == p->out_c ? B_END : B_END_SKIP]);
    if (p->bias && (depth == 8 || depth == 16)) {
        const tbl_src src = {f, p->multiplier + oc0, p->shift + oc0, p->bias + oc0, off, ADDR(body[B_FULL])};
        if ((depth == 8 ? mdt_small_tbl8 : mdt_small_tbl16)(t, end, &src) == 0) {
            return 0;
        }
    }
    for (oc = oc0; oc < oc0 + n; ++oc, f += depth, t += S) {
        const int32_t m = p->multiplier[oc];
        const uint32_t b = p->bias ? (uint32_t)p->bias[oc] : 0u;
        const uint32_t e = m != 0 ? (uint32_t)-p->shift[oc] : 1u;
        uint32_t w[8], r, sh, pc;
        int32_t g, i;
        if (e <= 23) {
            r = (1u << ((e - 1) & 31)) + (off << e);
            sh = e;
            pc = ADDR(body[B_FULL]);
        } else {
            r = 1u << ((e - 1) & 31);
            sh = e | (off << 8);
            pc = ADDR(body[B_POST]);
        }
        /* m < 0, a shift outside -31..-1 (unless m == 0), or |bias| > 2^28 (the doubled
         * accumulator could pass 2^30): left to the reference */
        if (m < 0 || e - 1u >= 31u || b + (1u << 28) > (1u << 29)) {
            pc = ADDR(body[B_SKIP]);
            bad = 1;
        }
        for (g = 0; g < 4; ++g) {
            int8_t q[4];
            for (i = 0; i < 4; ++i) {
                q[i] = 4 * g + i < depth ? f[4 * g + i] : 0;
            }
            wpair(ld32(q), w + 2 * g);
        }
        if (!wide) {
            for (i = 0; i < 4; ++i) {
                t[i] = w[i];
            }
            t[4] = 2u * b;
            t[5] = r;
            t[6] = (uint32_t)m;
            t[7] = sh;
            t[8] = pc;
        } else {
            t[0] = 2u * b;
            t[1] = w[0];
            t[2] = w[1];
            t[3] = pc;
            for (i = 2; i < 8; ++i) {
                t[i + 2] = w[i];
            }
            t[10] = r;
            t[11] = (uint32_t)m;
            t[12] = sh;
        }
    }
    return bad;
}

/* One pixel's im2col bytes into dst (nb bytes; padding and the positions past the depth get
 * -input_offset, which the loop widens to 0). */
static void gather(int8_t *dst, int32_t nb, const int8_t *in_b, int32_t oy, int32_t ox, const mdt_conv_params *p)
{
    const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
    const int8_t pad = (int8_t)(-p->input_offset);
    int32_t ky, kx, c, n = 0;
    for (ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = iy0 + p->dil_h * ky;
        for (kx = 0; kx < p->k_w; ++kx) {
            const int32_t ix = ix0 + p->dil_w * kx;
            const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
            const int8_t *src = in_b + (iy * p->in_w + ix) * p->in_c;
            for (c = 0; c < p->in_c; ++c) {
                dst[n++] = inside ? src[c] : pad;
            }
        }
    }
    for (; n < nb; ++n) {
        dst[n] = pad;
    }
}

/* The reference formula for one skipped channel over the whole image. */
static void ref_channel(const mdt_conv_params *p, const int8_t *in_b, int32_t oc, int8_t *out_b)
{
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    int8_t col[16];
    int32_t pix, i;
    MDT_PATH(MDT_PATH_SMALL_REFCHAN);
    for (pix = 0; pix < p->out_h * p->out_w; ++pix) {
        int32_t acc = p->bias ? p->bias[oc] : 0;
        gather(col, depth, in_b, pix / p->out_w, pix % p->out_w, p);
        for (i = 0; i < depth; ++i) {
            /* a padded position holds -input_offset and adds 0, as the reference skips it */
            acc = mdt_wrap_add(acc, (int32_t)p->filter[oc * depth + i] * ((int32_t)col[i] + p->input_offset));
        }
        out_b[pix * p->out_c + oc] =
            (int8_t)mdt_clamp(mdt_mbqm(acc, p->multiplier[oc], p->shift[oc]) + p->output_offset, p->act_min,
                              p->act_max);
    }
}

/* The layer once the depth is known to fit (the frame with the table is only set up here). */
static __attribute__((noinline)) void small_conv(const mdt_conv_params *p, const int8_t *input, int8_t *output,
                                                 int32_t depth, uint32_t *tbl, int8_t *chunk)
{
    const int wide = depth > 8;
    const int32_t nb = wide ? 16 : 8; /* bytes per pixel the loop reads */
    const int32_t S = wide ? 13 : 9;  /* words per table entry */
    const int32_t npix_total = p->out_h * p->out_w, out_c = p->out_c;
    void (*const *const body)(void) = bodies[wide][p->act_min == -128 && p->act_max == 127];
    void (*const run)(const small_job *) = wide ? mdt_small_k16 : mdt_small_k8;
    /* a pointwise conv over whole pixels: read straight from the input at stride 1 (stream), else
     * gathered by words */
    const int pointwise = p->in_c == nb && p->k_h == 1 && p->k_w == 1;
    const int stream = pointwise && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 && p->pad_w == 0 &&
                       p->in_h == p->out_h && p->in_w == p->out_w;
    small_job job;
    int32_t oc0, b;
    if (npix_total <= 0) {
        return; /* the loop runs at least one pixel */
    }
    job.tbl = tbl;
    job.off2 = (int32_t)(((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset);
    job.lo = p->act_min;
    job.hi = p->act_max;
    for (oc0 = 0; oc0 < out_c; oc0 += SMALL_CB) {
        const int32_t n = out_c - oc0 < SMALL_CB ? out_c - oc0 : SMALL_CB;
        const int skipped = build_table(tbl, p, depth, wide, oc0, n, body);
        for (b = 0; b < p->batches; ++b) {
            const int8_t *in_b = input + b * p->in_h * p->in_w * p->in_c;
            int8_t *out_b = output + b * npix_total * out_c;
            if (stream) {
                job.in = in_b;
                job.in_end = in_b + npix_total * nb;
                job.out = out_b + oc0;
                run(&job);
            } else {
                int32_t pix, s;
                for (pix = 0; pix < npix_total; pix += SMALL_PIX) {
                    const int32_t npix = npix_total - pix < SMALL_PIX ? npix_total - pix : SMALL_PIX;
                    for (s = 0; s < npix; ++s) {
                        const int32_t oy = (pix + s) / p->out_w, ox = pix + s - oy * p->out_w;
                        const int32_t iy = oy * p->stride_h - p->pad_h, ix = ox * p->stride_w - p->pad_w;
                        int8_t *const dst = chunk + s * nb;
                        if (pointwise && iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w) {
                            const int8_t *const src = in_b + (iy * p->in_w + ix) * nb;
                            int32_t k;
                            for (k = 0; k < nb; k += 4) {
                                st32(dst + k, ld32(src + k));
                            }
                        } else {
                            gather(dst, nb, in_b, oy, ox, p);
                        }
                    }
                    job.in = chunk;
                    job.in_end = chunk + npix * nb;
                    job.out = out_b + pix * out_c + oc0;
                    run(&job);
                }
            }
            if (skipped) {
                int32_t i;
                for (i = 0; i < n; ++i) {
                    if (tbl[i * S + (wide ? 3 : 8)] == ADDR(body[B_SKIP])) {
                        ref_channel(p, in_b, oc0 + i, out_b);
                    }
                }
            }
        }
    }
}

int mdt_conv2d_small_dsp(const mdt_conv_params *p, const int8_t *input, int8_t *output, mdt_scratch s)
{
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    const int wide = depth > 8;
    const int32_t nb = wide ? 16 : 8, S = wide ? 13 : 9;
    const int32_t npix_total = p->out_h * p->out_w;
    const int32_t cb = p->out_c < SMALL_CB ? p->out_c : SMALL_CB;
    /* the streamed pointwise case (small_conv) reads the input in place: no chunk */
    const int stream = p->in_c == nb && p->k_h == 1 && p->k_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
                       p->pad_h == 0 && p->pad_w == 0 && p->in_h == p->out_h && p->in_w == p->out_w;
    uint32_t *tbl;
    int8_t *chunk = NULL;
    if (depth > 16 || depth < 1 || p->input_offset < -127 || p->input_offset > 128 || p->output_offset < -128 ||
        p->output_offset > 128) {
        return 0;
    }
    if (npix_total > 0) {
        tbl = (uint32_t *)mdt_scratch_take(&s, 4 * (cb * S + (wide ? 4 : 9)));
        if (!stream) {
            chunk = (int8_t *)mdt_scratch_take(&s, (npix_total < SMALL_PIX ? npix_total : SMALL_PIX) * nb);
        }
        if (tbl == NULL || (!stream && chunk == NULL)) {
            return 0;
        }
    } else {
        tbl = NULL; /* small_conv returns before it reads anything */
    }
    MDT_PATH(MDT_PATH_CONV_SMALL);
    small_conv(p, input, output, depth, tbl, chunk);
    return 1;
}

#else /* not Thumb-2: the general DSP path */

int mdt_conv2d_small_dsp(const mdt_conv_params *p, const int8_t *input, int8_t *output, mdt_scratch s)
{
    (void)p;
    (void)input;
    (void)output;
    (void)s;
    return 0;
}

#endif /* __thumb2__ */

#else

typedef int mdt_dsp_conv_small_unused; /* keeps the translation unit non-empty without the DSP extension */

#endif /* MDT_DSP */
