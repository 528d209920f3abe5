/*
 * mdt_dsp.c - Cortex-M4/M7 fast paths (SMLAD dual 16-bit MACs, SXTB16 byte unpacking): the general
 * CONV_2D (passes of 6/4/3/2/1 output pixels over an im2col scratch, per-channel records from the
 * compiler's flash table or built per call, the folded requantisation of mdt_dsp_rq.h per channel,
 * the reference for channels outside it), and the first-round DEPTHWISE_CONV_2D path that takes the
 * kernel sizes mdt_dsp_dw.c's 3x3 one leaves; bit-exact with TFLite's reference int8 kernels.
 *
 * Why it is exact: products and sums are the same int32 integers as the reference's, only added in
 * another order (int32 addition is associative), and both requantisations here are exact rewrites
 * of MultiplyByQuantizedMultiplier (double rounding), both of mdt_dsp_rq.h: mdt_rqs_* (non-negative
 * multipliers, any shift; checked per layer by the first-round path), mdt_rqf_* per channel.
 *
 * Layout trick: SXTB16 of a word (b0 b1 b2 b3) gives the halfwords (b0, b2) and SXTB16 of the word
 * rotated by 8 gives (b1, b3). Inputs and weights are both unpacked that way, so SMLAD pairs
 * matching elements. Inputs are widened once into the layer's scratch (offset already added)
 * and reused for every output channel; weights stay int8 in flash.
 */
#include "mdt_dsp.h"

#if MDT_DSP

#include <arm_acle.h>
#include <stddef.h>
#include <string.h>

#include "mdt_dsp_rq.h"
#include "mdt_fixedpoint.h"
#include "mdt_dsp_intrin.h"
#include "mdt_dsp_chan.h"

#define PIX 6 /* output pixels per pass of the convolution core (slots of the im2col scratch) */

static int multipliers_ok(const int32_t *mult, const int8_t *shift, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        if (!mdt_rqs_ok(mult[i], shift[i], 0)) {
            return 0;
        }
    }
    return 1;
}

/* One channel of the first-round depthwise path: MultiplyByQuantizedMultiplier in mdt_rqs's form
 * (m >= 0, any shift), + offset, clamped. */
static inline int8_t rqs_out(int32_t mult, int32_t shift, int32_t acc, int32_t out_off, int32_t lo, int32_t hi)
{
    const mdt_rqs r = mdt_rqs_make(mult, shift, 0);
    return (int8_t)mdt_clamp(mdt_rqs_apply(r.k, r.m, r.sh, r.left, r.plain, acc) + out_off, lo, hi);
}

/* Widen n4 groups of 4 int8 (+ offset) into the interleaved scratch: group g of pixel p lands in
 * words [(g * PIX + p) * 2, +1]. */
static inline void widen(uint32_t *dst, const int8_t *src, int32_t n4, int32_t off2)
{
    int32_t g;
    for (g = 0; g < n4; ++g) {
        const int32_t v = ld32(src + 4 * g);
        dst[0] = (uint32_t)__sxtab16(off2, v);
        dst[1] = (uint32_t)sxtab16_ror8(off2, v);
        dst += 2 * PIX;
    }
}

static inline void zero_groups(uint32_t *dst, int32_t n4)
{
    int32_t g;
    for (g = 0; g < n4; ++g) {
        dst[0] = 0u;
        dst[1] = 0u;
        dst += 2 * PIX;
    }
}

/* ---- folded-requantisation core (mdt_dsp_rq.h): every channel within mdt_rqf_ok ---- */

/* The weights of one group of 4 depth elements: int8 in the layer's filter (unpacked like the inputs,
 * (w0 w2)(w1 w3)), or already widened to int16 pairs in natural order ((w0 w1)(w2 w3), conv_nat). */
#define MAC_W8 \
    "ldr %[wb], [%[w]], #4\n\t" \
    "sxtb16 %[wa], %[wb]\n\t" \
    "sxtb16 %[wb], %[wb], ror #8\n\t"
#define MAC_W16 \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"

/* Those 4 weights x one pixel of the scratch (its two words at byte `off` from x) into accumulator
 * `acc`; the last pixel of a group (slot 0) loads with post-increment, stepping x by `step` to the
 * next group. */
#define MAC_PX(off, acc) \
    "ldrd %[x0], %[x1], [%[x], #" #off "]\n\t" \
    "smlad %[" #acc "], %[wa], %[x0], %[" #acc "]\n\t" \
    "smlad %[" #acc "], %[wb], %[x1], %[" #acc "]\n\t"
#define MAC_PX0(step) \
    "ldrd %[x0], %[x1], [%[x]], #" #step "\n\t" \
    "smlad %[a0], %[wa], %[x0], %[a0]\n\t" \
    "smlad %[a0], %[wb], %[x1], %[a0]\n\t"

/* Those 4 weights x 6 pixels of the scratch: 24 MACs in 18 instructions. */
#define MAC6_X MAC_PX(8, a1) MAC_PX(16, a2) MAC_PX(24, a3) MAC_PX(32, a4) MAC_PX(40, a5) MAC_PX0(48)

/* The same over conv_nat's scratch, where each pixel's patch is contiguous: pixel p at byte
 * p * NAT_SLOT_BYTES (192: the LDRD offsets are immediates). */
#define MAC6_XN MAC_PX(192, a1) MAC_PX(384, a2) MAC_PX(576, a3) MAC_PX(768, a4) MAC_PX(960, a5) MAC_PX0(8)

/* 6 pixels x one output channel over `ng` >= 0 groups of 4 depth elements, two groups per loop
 * iteration (an odd group first); the loop count lives in the asm. 13 registers: all the M4 has
 * besides SP and PC (and LR). Inputs: the interleaved widened scratch, PIX pixel slots per group.
 * W is MAC_W8 or MAC_W16, X MAC6_X or MAC6_XN. */
#define MAC6_LOOP(W, X)                                                                                       \
    __asm__ volatile("tst %[n], #1\n\t"                                                                     \
                     "beq 2f\n\t" W X "\n2:\n\t"                                                        \
                     "lsrs %[n], %[n], #1\n\t"                                                              \
                     "beq 3f\n"                                                                             \
                     "1:\n\t" W X W X "subs %[n], %[n], #1\n\t"                                               \
                     "bne 1b\n"                                                                             \
                     "3:"                                                                                   \
                     : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [a4] "+r"(a4), [a5] "+r"(a5), \
                       [w] "+r"(w), [x] "+r"(x), [n] "+r"(ng), [wa] "=&r"(wa), [wb] "=&r"(wb), [x0] "=&r"(x0),  \
                       [x1] "=&r"(x1)                                                                       \
                     :                                                                                      \
                     : "cc", "memory")

/* mac6 over the interleaved scratch and the layer's int8 weights (natural == 0), or over conv_nat's
 * pixel-major scratch and weights widened to natural int16 pairs (natural == 1, a constant at each
 * call site). */
static inline __attribute__((always_inline)) void mac6_any(const void *x, const void *w, int32_t ng, int32_t *a,
                                                           const int natural)
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
    int32_t wa, wb, x0, x1;
    if (natural) {
        MAC6_LOOP(MAC_W16, MAC6_XN);
    } else {
        MAC6_LOOP(MAC_W8, MAC6_X);
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
    a[4] = a4;
    a[5] = a5;
}

static inline __attribute__((always_inline)) void mac6(const uint32_t *x, const int8_t *w, int32_t ng, int32_t *a)
{
    mac6_any(x, w, ng, a, 0);
}

static inline __attribute__((always_inline)) void mac6n(const int16_t *x, const int16_t *w, int32_t ng, int32_t *a)
{
    mac6_any(x, w, ng, a, 1);
}

/* One group per iteration over `ng` >= 1 groups, the loop count in the asm (SUBS/BNE); X: the pixels
 * (MAC_PX ... MAC_PX0), then the operands of their accumulators past a0 (each after a comma). */
#define MAC_LOOP1(X, ...)                                                                             \
    __asm__ volatile("1:\n\t" MAC_W8 X "subs %[n], %[n], #1\n\t"                                         \
                     "bne 1b"                                                                         \
                     : [a0] "+r"(a0) __VA_ARGS__, [w] "+r"(w), [x] "+r"(x), [n] "+r"(ng), [wa] "=&r"(wa), \
                       [wb] "=&r"(wb), [x0] "=&r"(x0), [x1] "=&r"(x1)                                 \
                     :                                                                                \
                     : "cc", "memory")

/* npix (1..4, a constant at each call site) pixels x one output channel over `ng` >= 1 groups of 4
 * depth elements. Inputs: the interleaved widened scratch, PIX pixel slots per group. Each width is
 * its own asm statement only because an operand takes a register whether the text uses it or not:
 * one statement for all widths (the pixels past npix left out by .if) held 4 accumulators in
 * registers for 1..3 pixels, and the spills around it cost 0.2-0.4 % of such a layer (in_c 3,
 * dilation 2, 7x7 .. 9x9 outputs). */
static inline __attribute__((always_inline)) void mac_n(const uint32_t *x, const int8_t *w, int32_t ng, int32_t *a,
                                                        const int npix)
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    int32_t wa, wb, x0, x1;
    if (npix == 4) {
        MAC_LOOP1(MAC_PX(8, a1) MAC_PX(16, a2) MAC_PX(24, a3) MAC_PX0(48),
                  , [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3));
    } else if (npix == 3) {
        MAC_LOOP1(MAC_PX(8, a1) MAC_PX(16, a2) MAC_PX0(48), , [a1] "+r"(a1), [a2] "+r"(a2));
    } else if (npix == 2) {
        MAC_LOOP1(MAC_PX(8, a1) MAC_PX0(48), , [a1] "+r"(a1));
    } else {
        MAC_LOOP1(MAC_PX0(48), );
    }
    a[0] = a0;
    if (npix > 1) {
        a[1] = a1;
    }
    if (npix > 2) {
        a[2] = a2;
    }
    if (npix > 3) {
        a[3] = a3;
    }
}

/* Output channels whose constants are tabulated at once (16 bytes each, in the layer's scratch). */
#define CHUNK_OC 128

/* chan_t and chan_table_fill: mdt_dsp_chan.h (the compiler builds the same bytes, ops/conv.py) */

/* The front of the conv's scratch: what the tables behind it were made of. The table of the last
 * chunk is kept between calls where the caller says the region is still this layer's (mdt_scratch
 * keep: a layer run row by row, mdt_conv2d_rows, calls the kernel once per output row with the same
 * constants, and rebuilding the table every row cost up to 8 % of a model, KWS), keyed by everything
 * it is made of (the layer's arrays, in flash, and the fields chan_table_fill reads); likewise
 * conv_nat's widened weights. Without keep both keys are cleared first: the region holds whatever
 * the steps before left there. */
typedef struct {
    const int32_t *multiplier, *bias;
    const int8_t *shift;
    const uint8_t *zero_rows;
    const int8_t *nat_filter; /* NULL: no widened weights behind the table */
    int32_t oc0, n, out_c, depth, output_offset, act_min, act_max;
    int32_t nat_oc0, nat_n, nat_depth;
} conv_cache;

/* scratch.py sizes the front by this on the 32-bit cores (C99: a negative array size fails the build) */
typedef char conv_cache_size_check[sizeof(conv_cache) == 60 ? 1 : -1];

/* The front of the region: the keys and the channel table for min(out_c, CHUNK_OC) channels; NULL
 * where the region is too small. */
static chan_t *conv_front(const mdt_conv_params *p, mdt_scratch *s, conv_cache **key)
{
    const int32_t nt = p->out_c < CHUNK_OC ? p->out_c : CHUNK_OC;
    conv_cache *const k = (conv_cache *)mdt_scratch_take(s, (int32_t)sizeof(conv_cache));
    /* the compiler's table in flash: no room taken for one (chan_table() then reads it) */
    chan_t *const t = p->chan_table != NULL ? (chan_t *)(uintptr_t)p->chan_table
                                            : (chan_t *)mdt_scratch_take(s, nt * (int32_t)sizeof(chan_t));
    if (k == NULL || t == NULL) {
        return NULL;
    }
    if (!s->keep) {
        k->multiplier = NULL; /* a conv's multipliers are never NULL: no key matches */
        k->nat_filter = NULL;
    }
    *key = k;
    return t;
}

static const chan_t *chan_table(const mdt_conv_params *p, int32_t oc0, int32_t n, conv_cache *k, chan_t *t)
{
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    if (p->chan_table != NULL) {
        /* the whole layer's records, built at compile time: nothing to fill */
        MDT_PATH(MDT_PATH_CONV_CHAN_CONST);
        return (const chan_t *)p->chan_table + oc0;
    }
    if (k->multiplier != p->multiplier || k->bias != p->bias || k->shift != p->shift ||
        k->zero_rows != p->zero_rows || k->oc0 != oc0 || k->n != n || k->out_c != p->out_c ||
        k->depth != depth || k->output_offset != p->output_offset || k->act_min != p->act_min ||
        k->act_max != p->act_max) {
        chan_table_fill(t, p, oc0, n);
        k->multiplier = p->multiplier;
        k->bias = p->bias;
        k->shift = p->shift;
        k->zero_rows = p->zero_rows;
        k->oc0 = oc0;
        k->n = n;
        k->out_c = p->out_c;
        k->depth = depth;
        k->output_offset = p->output_offset;
        k->act_min = p->act_min;
        k->act_max = p->act_max;
    }
    return t;
}

/* One pass: npix (1..PIX) pixels x the n output channels from oc0, with the `core` of 6, 4, 3, 2 or
 * 1 pixels (the scratch's slots up to the core's width filled; the extra ones are computed, not
 * stored). The scratch holds ng_all = ceil(depth / 4) groups, the last one zero past the depth, so
 * every channel but the layer's last runs whole groups (its weight word over-reads into the next
 * channel's row, multiplied by 0); the last channel runs the whole groups only and adds the
 * depth % 4 tail from `tail`. `core` and `full` are constants at each inlined call site. */
static inline __attribute__((always_inline)) void conv_pass_f(const uint32_t *cols, const int16_t tail[PIX][4],
                                                              int32_t depth, int32_t npix, int core, int full,
                                                              const mdt_conv_params *p, const chan_t *t,
                                                              int32_t oc0, int32_t n, int8_t *out)
{
    const int32_t out_c = p->out_c, out_off = p->output_offset, lo = p->act_min, hi = p->act_max;
    const int32_t n4 = depth / 4, nt = depth % 4, ng_all = (depth + 3) / 4;
    const int8_t *w = p->filter + oc0 * depth;
    const chan_t *const t_end = t + n;
    out += oc0;
    for (; t != t_end; ++t) {
        int32_t a[PIX];
        const int last_tail = nt != 0 && t + 1 == t_end && oc0 + n == out_c;
        const int32_t ng = last_tail ? n4 : ng_all;
        int32_t i;
        if (t->mode == RQ_CONST) {
            for (i = 0; i < npix; ++i) {
                out[i * out_c] = (int8_t)t->post;
            }
            out += 1;
            w += depth;
            continue;
        }
        a[0] = a[1] = a[2] = a[3] = a[4] = a[5] = t->bias;
        if (ng > 0) {
            if (core == 6) {
                mac6(cols, w, ng, a);
            } else {
                mac_n(cols, w, ng, a, core);
            }
        }
        if (last_tail) {
            int32_t j;
            for (j = 0; j < nt; ++j) {
                const int32_t wj = w[4 * n4 + j];
                for (i = 0; i < npix; ++i) {
                    a[i] += wj * tail[i][j];
                }
            }
        }
        if (t->mode == RQ_FOLD) {
            const int64_t k = chan_k(t);
            for (i = 0; i < npix; ++i) {
                out[i * out_c] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, t->m, t->sh, a[i]), full, lo, hi);
            }
        } else if (t->mode == RQ_POST) {
            /* right shifts of 24..31: the offset after the shift */
            const int64_t k = chan_k(t);
            for (i = 0; i < npix; ++i) {
                out[i * out_c] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, t->m, t->sh, a[i]) + t->post, full, lo, hi);
            }
        } else {
            /* outside the folded form (a left shift): the reference */
            for (i = 0; i < npix; ++i) {
                out[i * out_c] = (int8_t)mdt_clamp(mdt_mbqm(a[i], t->m, t->sh) + out_off, lo, hi);
            }
        }
        out += 1;
        w += depth;
    }
}

/* The 6-pixel pass over a run of channels, as one assembly function: gcc cannot keep the loop's state
 * in registers around the 13-register MAC core, and spilled ~35 instructions per channel. Channels
 * with `fast` run the MAC core (two groups per iteration, an odd group first) and a requantisation
 * in 6-7 instructions per output: with s the sum, e the right shift and K = 2^(e-1) + zp 2^e,
 * SMMLAR(2s, m, K + [s<0]) >> e, saturated to int8, equals TFLite's double-rounding
 * MultiplyByQuantizedMultiplier(s, m, -e) + zp (the same single floor of
 * (2 s m + 2^31 + 2^(31+e) - [s<0] 2^32) / 2^(32+e) as mdt_dsp_rq.h, with 2s < 2^31 guaranteed by
 * chan_table); RQ_CONST channels store their constant. The depth must be a multiple of 4 (the
 * weight pointer runs on from one channel's row into the next). Returns how many channels it did:
 * it stops at the first channel that is neither.
 * r0 cols, r1 w, r2 t, r3 n, [sp] out, [sp+4] out_c, [sp+8] ng, [sp+12] depth (+48 once pushed). */
int32_t mdt_pass6_run(const uint32_t *cols, const int8_t *w, const chan_t *t, int32_t n, int8_t *out, int32_t out_c,
                      int32_t ng, int32_t depth);
/* The same over 5 pixels (scratch slots 0..4: a row 5 pixels wide run row by row, KWS's 25 x 5 maps'
 * last pass): one pass of 6 for 5 outputs did a sixth more MACs. */
int32_t mdt_pass5_run(const uint32_t *cols, const int8_t *w, const chan_t *t, int32_t n, int8_t *out, int32_t out_c,
                      int32_t ng, int32_t depth);
/* The same over 4 pixels (scratch slots 0..3; the 4-pixel tail of a layer, 3x3 maps' last pass). */
int32_t mdt_pass4_run(const uint32_t *cols, const int8_t *w, const chan_t *t, int32_t n, int8_t *out, int32_t out_c,
                      int32_t ng, int32_t depth);
__asm__(
    ".pushsection .text.mdt_pass_run, \"ax\", %progbits\n"
    ".syntax unified\n"
    ".thumb\n"
    "@ the weights of one group of 4: r3 = (w0 w2), r10 = (w1 w3)\n"
    ".macro MDT_W8\n"
    "    ldr r10, [r1], #4\n"
    "    sxtb16 r3, r10\n"
    "    sxtb16 r10, r10, ror #8\n"
    ".endm\n"
    "@ those weights x pixel k's inputs (scratch words [8k], [8k+4]) into accumulator acc\n"
    ".macro MDT_X k, acc\n"
    "    ldrd r11, r12, [r0, #8*\\k]\n"
    "    smlad \\acc, r3, r11, \\acc\n"
    "    smlad \\acc, r10, r12, \\acc\n"
    ".endm\n"
    "@ one group x npix pixels, the scratch pointer stepped to the next group (48 bytes)\n"
    ".macro MDT_GROUP npix\n"
    "    MDT_W8\n"
    "    MDT_X 1, r5\n"
    "    .if \\npix > 2\n"
    "    MDT_X 2, r6\n"
    "    .endif\n"
    "    .if \\npix > 3\n"
    "    MDT_X 3, r7\n"
    "    .endif\n"
    "    .if \\npix > 4\n"
    "    MDT_X 4, r8\n"
    "    .endif\n"
    "    .if \\npix > 5\n"
    "    MDT_X 5, r9\n"
    "    .endif\n"
    "    ldrd r11, r12, [r0], #48\n"
    "    smlad r4, r3, r11, r4\n"
    "    smlad r4, r10, r12, r4\n"
    ".endm\n"
    "@ requantise accumulator acc (r3 = K, r10 = m, r11 = e), store at r0, step r0 by r2 unless last\n"
    ".macro MDT_RQ acc, last\n"
    "    add r12, r3, \\acc, asr #31\n"
    "    add \\acc, \\acc, \\acc\n"
    "    smmlar r12, \\acc, r10, r12\n"
    "    asr r12, r12, r11\n"
    "    ssat r12, #8, r12\n"
    "    strb r12, [r0]\n"
    "    .if \\last == 0\n"
    "    add r0, r0, r2\n"
    "    .endif\n"
    ".endm\n"
    ".macro MDT_PASS name, npix\n"
    ".align 2\n"
    ".global \\name\n"
    ".type \\name, %function\n"
    ".thumb_func\n"
    "\\name:\n"
    "    push {r4-r11, lr}\n"
    "    sub sp, sp, #12\n"
    "    str r0, [sp, #0]\n"
    "    str r3, [sp, #4]\n"
    "    str r3, [sp, #8]\n"
    "    mov lr, r2\n"
    ".Lchan\\@:\n"
    "    ldrb r12, [lr, #13]\n"
    "    cmp r12, #3\n"
    "    beq .Lconst\\@\n"
    "    ldrb r12, [lr, #14]\n"
    "    cmp r12, #0\n"
    "    beq .Ldone\\@\n"
    "    ldr r4, [lr, #0]\n"
    "    mov r5, r4\n"
    "    mov r6, r4\n"
    "    mov r7, r4\n"
    "    .if \\npix > 4\n"
    "    mov r8, r4\n"
    "    .endif\n"
    "    .if \\npix > 5\n"
    "    mov r9, r4\n"
    "    .endif\n"
    "    ldr r0, [sp, #0]\n"
    "    ldr r2, [sp, #56]\n"
    "    tst r2, #1\n"
    "    beq 2f\n"
    "    MDT_GROUP \\npix\n"
    "2:\n"
    "    lsrs r2, r2, #1\n"
    "    beq 3f\n"
    "1:\n"
    "    MDT_GROUP \\npix\n"
    "    MDT_GROUP \\npix\n"
    "    subs r2, r2, #1\n"
    "    bne 1b\n"
    "3:\n"
    "    ldr r0, [sp, #48]\n"
    "    ldr r2, [sp, #52]\n"
    "    ldr r3, [lr, #8]\n"
    "    lsl r3, r3, #1\n"
    "    ldr r10, [lr, #4]\n"
    "    ldrsb r11, [lr, #12]\n"
    "    add r11, r11, #1\n"
    "    MDT_RQ r4, 0\n"
    "    MDT_RQ r5, 0\n"
    "    MDT_RQ r6, 0\n"
    "    .if \\npix > 5\n"
    "    MDT_RQ r7, 0\n"
    "    MDT_RQ r8, 0\n"
    "    MDT_RQ r9, 1\n"
    "    .elseif \\npix > 4\n"
    "    MDT_RQ r7, 0\n"
    "    MDT_RQ r8, 1\n"
    "    .else\n"
    "    MDT_RQ r7, 1\n"
    "    .endif\n"
    ".Lnext\\@:\n"
    "    ldr r0, [sp, #48]\n"
    "    add r0, r0, #1\n"
    "    str r0, [sp, #48]\n"
    "    add lr, lr, #16\n"
    "    ldr r0, [sp, #4]\n"
    "    subs r0, r0, #1\n"
    "    str r0, [sp, #4]\n"
    "    bne .Lchan\\@\n"
    ".Ldone\\@:\n"
    "    ldr r0, [sp, #4]\n"
    "    ldr r1, [sp, #8]\n"
    "    sub r0, r1, r0\n"
    "    add sp, sp, #12\n"
    "    pop {r4-r11, pc}\n"
    ".Lconst\\@:\n"
    "    ldrsb r12, [lr, #15]\n"
    "    ldr r0, [sp, #48]\n"
    "    ldr r2, [sp, #52]\n"
    "    .rept \\npix - 1\n"
    "    strb r12, [r0]\n"
    "    add r0, r0, r2\n"
    "    .endr\n"
    "    strb r12, [r0]\n"
    "    ldr r0, [sp, #60]\n"
    "    add r1, r1, r0\n"
    "    b .Lnext\\@\n"
    ".size \\name, .-\\name\n"
    ".endm\n"
    "MDT_PASS mdt_pass6_run, 6\n"
    "MDT_PASS mdt_pass5_run, 5\n"
    "MDT_PASS mdt_pass4_run, 4\n"
    ".popsection\n"
);

/* The common pass: 6 pixels of one channel in the folded form (mode RQ_FOLD or RQ_POST) and no depth
 * tail. The sums stay in registers and the constants in locals (an int8 store may alias anything, so
 * fields read through `t` would be reloaded after every store). */
static inline __attribute__((always_inline)) void chan6(const uint32_t *cols, const int8_t *w, int32_t ng,
                                                        const chan_t *t, int8_t *out, int32_t out_c, int full,
                                                        int32_t lo, int32_t hi)
{
    int32_t a[PIX];
    const int64_t k = chan_k(t);
    const int32_t m = t->m, sh = t->sh, post = t->post;
    a[0] = a[1] = a[2] = a[3] = a[4] = a[5] = t->bias;
    mac6(cols, w, ng, a);
    out[0] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, a[0]) + post, full, lo, hi);
    out += out_c;
    out[0] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, a[1]) + post, full, lo, hi);
    out += out_c;
    out[0] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, a[2]) + post, full, lo, hi);
    out += out_c;
    out[0] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, a[3]) + post, full, lo, hi);
    out += out_c;
    out[0] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, a[4]) + post, full, lo, hi);
    out += out_c;
    out[0] = (int8_t)mdt_rqf_clamp(mdt_rqf_apply(k, m, sh, a[5]) + post, full, lo, hi);
}

/* One output of rq6: the folded requantisation (mdt_dsp_rq.h) with k's low word 2^30 (right shifts of
 * 2..23), a full int8 range (one SSAT), the byte stored and the pointer stepped to the next pixel. */
#define RQ6_ONE(A)                                    \
    "and %[tp], %[" #A "], #0x80000000\n\t"           \
    "rsbs %[tp], %[tp], #0x40000000\n\t"              \
    "sbc %[t1], %[khi], #0\n\t"                       \
    "smlal %[tp], %[t1], %[" #A "], %[m]\n\t"         \
    "asr %[t1], %[t1], %[sh]\n\t"                     \
    "ssat %[t1], #8, %[t1]\n\t"                       \
    "strb %[t1], [%[out]]\n\t"                        \
    "add %[out], %[out], %[oc]\n\t"

/* The six sums of a chan6 pass requantised and stored in 8 instructions each: gcc, left to itself,
 * spills the constants around the byte stores (13 registers are live). */
static inline __attribute__((always_inline)) void rq6(int32_t a0, int32_t a1, int32_t a2, int32_t a3, int32_t a4,
                                                      int32_t a5, const chan_t *t, int8_t *out, int32_t out_c)
{
    int32_t khi, m, sh, t1;
    const chan_t *tp = t;
    __asm__ volatile("ldr %[khi], [%[tp], %[o_khi]]\n\t"
                     "ldr %[m], [%[tp], %[o_m]]\n\t"
                     "ldrsb %[sh], [%[tp], %[o_sh]]\n\t" RQ6_ONE(a0) RQ6_ONE(a1) RQ6_ONE(a2) RQ6_ONE(a3) RQ6_ONE(a4)
                         RQ6_ONE(a5)
                     : [tp] "+r"(tp), [out] "+r"(out), [khi] "=&r"(khi), [m] "=&r"(m), [sh] "=&r"(sh), [t1] "=&r"(t1)
                     : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [a4] "r"(a4), [a5] "r"(a5),
                       [oc] "r"(out_c), [o_khi] "i"(offsetof(chan_t, k_hi)), [o_m] "i"(offsetof(chan_t, m)),
                       [o_sh] "i"(offsetof(chan_t, sh))
                     : "cc", "memory");
}

/* chan6 for the channels rq6 takes (mode RQ_FOLD with k_lo == 2^30, full int8 range). */
static inline __attribute__((always_inline)) void chan6_fast(const uint32_t *cols, const int8_t *w, int32_t ng,
                                                             const chan_t *t, int8_t *out, int32_t out_c)
{
    int32_t a[PIX];
    a[0] = a[1] = a[2] = a[3] = a[4] = a[5] = t->bias;
    mac6(cols, w, ng, a);
    rq6(a[0], a[1], a[2], a[3], a[4], a[5], t, out, out_c);
}

/* A whole pass of 6 pixels: chan6 for the channels it takes, the general pass for the others (a
 * channel outside the folded form, the layer's last channel when the depth has a tail). */
static inline __attribute__((always_inline)) void pass6_f(const uint32_t *cols, const int16_t tail[PIX][4],
                                                          int32_t depth, const mdt_conv_params *p, const chan_t *t,
                                                          int32_t oc0, int32_t n, int8_t *out, int full)
{
    const int32_t out_c = p->out_c, lo = p->act_min, hi = p->act_max, ng_all = (depth + 3) / 4;
    const int tail_last = (depth % 4) != 0 && oc0 + n == out_c;
    const int8_t *w = p->filter + oc0 * depth;
    int32_t i;
    for (i = 0; i < n; ++i) {
        if (full && depth % 4 == 0 && (t[i].fast || t[i].mode == RQ_CONST)) {
            const int32_t done = mdt_pass6_run(cols, w, &t[i], n - i, out + oc0 + i, out_c, ng_all, depth);
            i += done;
            w += done * depth;
            if (i == n) {
                break;
            }
        }
        if (t[i].mode == RQ_CONST) {
            int8_t *o = out + oc0 + i;
            const int8_t v = (int8_t)t[i].post;
            o[0] = v;
            o[out_c] = v;
            o[2 * out_c] = v;
            o[3 * out_c] = v;
            o[4 * out_c] = v;
            o[5 * out_c] = v;
        } else if (tail_last && i == n - 1) {
            conv_pass_f(cols, tail, depth, PIX, 6, full, p, &t[i], oc0 + i, 1, out);
        } else if (full && t[i].mode == RQ_FOLD && chan_klo(&t[i]) == 0x40000000u) {
            chan6_fast(cols, w, ng_all, &t[i], out + oc0 + i, out_c);
        } else if (t[i].mode != RQ_REF) {
            chan6(cols, w, ng_all, &t[i], out + oc0 + i, out_c, full, lo, hi);
        } else {
            conv_pass_f(cols, tail, depth, PIX, 6, full, p, &t[i], oc0 + i, 1, out);
        }
        w += depth;
    }
}

/* conv_pass_f with its core a constant at each inlined site (`full` one at the caller's) */
static inline __attribute__((always_inline)) void conv_pass_c(const uint32_t *cols, const int16_t tail[PIX][4],
                                                              int32_t depth, int32_t npix, int32_t core, int full,
                                                              const mdt_conv_params *p, const chan_t *t,
                                                              int32_t oc0, int32_t n, int8_t *out)
{
    if (core == 6) {
        conv_pass_f(cols, tail, depth, npix, 6, full, p, t, oc0, n, out);
    } else if (core == 4) {
        conv_pass_f(cols, tail, depth, npix, 4, full, p, t, oc0, n, out);
    } else if (core == 3) {
        conv_pass_f(cols, tail, depth, npix, 3, full, p, t, oc0, n, out);
    } else if (core == 2) {
        conv_pass_f(cols, tail, depth, npix, 2, full, p, t, oc0, n, out);
    } else {
        conv_pass_f(cols, tail, depth, npix, 1, full, p, t, oc0, n, out);
    }
}

/* The core for a pass of npix pixels: its own width, but 5 runs the 6-pixel core (one unused). */
static int32_t core_for(int32_t npix)
{
    return npix == 5 ? 6 : npix;
}

static __attribute__((noinline)) void conv_pass(const uint32_t *cols, const int16_t tail[PIX][4], int32_t depth,
                                                int32_t npix, const mdt_conv_params *p, const chan_t *t,
                                                int32_t oc0, int32_t n, int8_t *out, int8_t *buf)
{
    const int32_t core = core_for(npix);
    if (npix < PIX && depth % 4 == 0 && p->act_min == -128 && p->act_max == 127 && n <= CHUNK_OC) {
        /* a short pass (a row narrower than 6 pixels, the last pass): 4 or 5 pixels by the 4- or
         * 5-pixel assembly, fewer into `buf` (PIX x n bytes of the scratch, taken for those only) by
         * the 4-pixel one (the scratch's spare slots repeat the last pixel), then the real pixels
         * copied out */
        const int8_t *w = p->filter + oc0 * depth;
        const int32_t ng = (depth + 3) / 4;
        int32_t i, q;
        for (i = 0; i < n && (t[i].fast || t[i].mode == RQ_CONST); ++i) {
        }
        if (i == n && npix >= 4 &&
            (npix == 4 ? mdt_pass4_run : mdt_pass5_run)(cols, w, t, n, out + oc0, p->out_c, ng, depth) == n) {
            return;
        }
        if (i == n && npix < 4 && buf != NULL && mdt_pass4_run(cols, w, t, n, buf, n, ng, depth) == n) {
            for (q = 0; q < npix; ++q) {
                int8_t *dst = out + q * p->out_c + oc0;
                for (i = 0; i < n; ++i) {
                    dst[i] = buf[q * n + i];
                }
            }
            return;
        }
    }
    if (npix == PIX) {
        if (p->act_min == -128 && p->act_max == 127) {
            pass6_f(cols, tail, depth, p, t, oc0, n, out, 1);
        } else {
            pass6_f(cols, tail, depth, p, t, oc0, n, out, 0);
        }
        return;
    }
    if (p->act_min == -128 && p->act_max == 127) {
        conv_pass_c(cols, tail, depth, npix, core, 1, p, t, oc0, n, out);
    } else {
        conv_pass_c(cols, tail, depth, npix, core, 0, p, t, oc0, n, out);
    }
}

/* im2col of one output pixel for any in_c into slot `slot`: bytes first (padding = the input zero
 * point, rows inside the image copied a word at a time), widened over ceil(depth / 4) groups with
 * the last group's positions past the depth zero; the depth % 4 tail also goes to `tail`. `row`:
 * depth + 8 bytes of the scratch for the bytes. */
static void gather_bytes_f(uint32_t *cols, int16_t tail[4], int32_t slot, const int8_t *in_b, int32_t oy,
                           int32_t ox, const mdt_conv_params *p, int32_t off2, int8_t *row)
{
    const int32_t iy0 = oy * p->stride_h - p->pad_h;
    const int32_t ix0 = ox * p->stride_w - p->pad_w;
    const int32_t in_c = p->in_c, k_w = p->k_w, dil_w = p->dil_w;
    const int32_t seg = k_w * in_c;
    const int32_t depth = p->k_h * seg;
    const int8_t pad = (int8_t)(-p->input_offset);
    const int row_inside = ix0 >= 0 && ix0 + dil_w * (k_w - 1) < p->in_w && dil_w == 1;
    int32_t ky, kx, c, n = 0;
    for (ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = iy0 + p->dil_h * ky;
        if (row_inside && iy >= 0 && iy < p->in_h) {
            /* a contiguous run of k_w * in_c bytes: words, then the rest (the empty asm hides the
             * copy from gcc, which would otherwise call memcpy for these few bytes) */
            const int8_t *src = in_b + (iy * p->in_w + ix0) * in_c;
            int8_t *dst = row + n;
            int8_t *const wend = dst + (seg & ~3);
            int32_t j;
            while (dst != wend) {
                int32_t v = ld32(src);
                __asm__("" : "+r"(v));
                memcpy(dst, &v, 4);
                dst += 4;
                src += 4;
            }
            for (j = 0; j < (seg & 3); ++j) {
                int32_t v = src[j];
                __asm__("" : "+r"(v));
                dst[j] = (int8_t)v;
            }
            n += seg;
        } else {
            for (kx = 0; kx < k_w; ++kx) {
                const int32_t ix = ix0 + dil_w * kx;
                const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
                const int8_t *src = in_b + (iy * p->in_w + ix) * in_c;
                for (c = 0; c < in_c; ++c) {
                    row[n++] = inside ? src[c] : pad;
                }
            }
        }
    }
    row[depth] = row[depth + 1] = row[depth + 2] = pad; /* (pad + offset) == 0 past the depth */
    widen(cols + 2 * slot, row, (depth + 3) / 4, off2);
    for (c = 0; c < depth % 4; ++c) {
        tail[c] = (int16_t)(row[(depth / 4) * 4 + c] + p->input_offset);
    }
}

/* im2col of one output pixel into slot `slot` of the scratch (in_c a multiple of 4: whole words). */
static void gather_words(uint32_t *cols, int32_t slot, const int8_t *in_b, int32_t oy, int32_t ox,
                         const mdt_conv_params *p, int32_t off2)
{
    const int32_t iy0 = oy * p->stride_h - p->pad_h;
    const int32_t ix0 = ox * p->stride_w - p->pad_w;
    const int32_t c4 = p->in_c / 4;
    uint32_t *dst = cols + 2 * slot;
    int32_t ky, kx;
    for (ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = iy0 + p->dil_h * ky;
        for (kx = 0; kx < p->k_w; ++kx) {
            const int32_t ix = ix0 + p->dil_w * kx;
            if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                zero_groups(dst, c4); /* padding contributes nothing, like x == input zero point */
            } else {
                widen(dst, in_b + (iy * p->in_w + ix) * p->in_c, c4, off2);
            }
            dst += 2 * PIX * c4;
        }
    }
}

/* ---- convolutions over few input channels (in_c % 4 != 0, e.g. an RGB or audio first layer) ----
 * The byte-wise im2col above costs ~300 instructions per pixel there. Instead, per output row, the
 * k_h input rows it reads are widened once into int16 (input offset added, padding columns and rows
 * as 0, which is what a padded tap contributes), so a pixel's patch is k_h contiguous runs of
 * k_w * in_c halfwords copied by words; the weights are widened once per call into natural int16
 * pairs, both zero-padded to whole groups of 4, so there is no depth tail. */
#define NAT_ROW_HALF 1536 /* halfwords of widened input rows at most (3 KB of the scratch) */
#define NAT_W_HALF 2560   /* halfwords of widened weights at most (5 KB of the scratch) */
#define NAT_MAX_G 24      /* groups of 4 depth elements (depth <= 96) */
#define NAT_SLOT_HALF 96  /* a pixel's patch in the scratch: NAT_MAX_G groups (1.2 KB for PIX) */
#define NAT_MAX_KH 16     /* kernel rows */

/* n int8 (+ offset) -> int16 in natural order; 4 at a time: SXTAB16 gives (b0 b2)(b1 b3), two
 * PKHs put them back in order. */
static void widen_nat(int16_t *dst, const int8_t *src, int32_t n, int32_t in_off, int32_t off2)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const int32_t v = ld32(src + i);
        const int32_t e = __sxtab16(off2, v), o = sxtab16_ror8(off2, v);
        int32_t lo, hi;
        __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(lo) : "r"(e), "r"(o));
        __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(hi) : "r"(o), "r"(e));
        st32(dst + i, lo);
        st32(dst + i + 2, hi);
    }
    for (; i < n; ++i) {
        dst[i] = (int16_t)(src[i] + in_off);
    }
}

static void zero_half(int16_t *dst, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        dst[i] = 0;
    }
}

/* halfwords by words (unaligned word moves are allowed on the M4) */
static inline void copy_half(int16_t *dst, const int16_t *src, int32_t n)
{
    int32_t i = 0;
    for (; i + 2 <= n; i += 2) {
        int32_t v = ld32(src + i);
        __asm__("" : "+r"(v)); /* keeps gcc from turning the loop into a memcpy call */
        st32(dst + i, v);
    }
    if (i < n) {
        dst[i] = src[i];
    }
}

/* A pass of npix (1..PIX) pixels x n channels over natural-order inputs and weights (ng groups per
 * channel in `wbuf`); the scratch's unused slots repeat a stored pixel. */
static void pass_nat(const int16_t *cols, const int16_t *wbuf, int32_t ng, int32_t npix, const mdt_conv_params *p,
                     const chan_t *t, int32_t n, int8_t *out)
{
    const int32_t out_c = p->out_c, lo = p->act_min, hi = p->act_max;
    const int full = lo == -128 && hi == 127;
    int32_t i, j;
    for (i = 0; i < n; ++i, ++t, ++out, wbuf += 4 * ng) {
        int32_t a[PIX];
        if (t->mode == RQ_CONST) {
            for (j = 0; j < npix; ++j) {
                out[j * out_c] = (int8_t)t->post;
            }
            continue;
        }
        a[0] = a[1] = a[2] = a[3] = a[4] = a[5] = t->bias;
        mac6n(cols, wbuf, ng, a);
        if (npix == PIX && full && t->mode == RQ_FOLD && chan_klo(t) == 0x40000000u) {
            rq6(a[0], a[1], a[2], a[3], a[4], a[5], t, out, out_c);
        } else if (t->mode != RQ_REF) {
            const int64_t k = chan_k(t);
            for (j = 0; j < npix; ++j) {
                out[j * out_c] = (int8_t)mdt_clamp(mdt_rqf_apply(k, t->m, t->sh, a[j]) + t->post, lo, hi);
            }
        } else {
            for (j = 0; j < npix; ++j) {
                out[j * out_c] = (int8_t)mdt_clamp(mdt_mbqm(a[j], t->m, t->sh) + p->output_offset, lo, hi);
            }
        }
    }
}

/* Where a widened row's image part lies (conv_nat computes it once per call): `left` halfwords of
 * left padding, then `n` widened values from `first` bytes into each input row of `row` bytes. A
 * negative pad_w (a fused layer's chunk that starts inside the row: mdt_fused.c) is input columns
 * before the first window: the row starts at column -pad_w, nothing is written before the row. */
typedef struct {
    int32_t left, n, row, first;
} nat_geom;

static nat_geom nat_geometry(const mdt_conv_params *p)
{
    nat_geom g;
    const int32_t skip = p->pad_w < 0 ? -p->pad_w : 0, cols = p->in_w - skip;
    g.left = (p->pad_w > 0 ? p->pad_w : 0) * p->in_c;
    g.n = (cols > 0 ? cols : 0) * p->in_c;
    g.row = p->in_w * p->in_c;
    g.first = skip * p->in_c;
    return g;
}

/* Widened input row iy at `dst` (pitch halfwords: left padding, the image row, right padding). */
static inline __attribute__((always_inline)) void nat_row(int16_t *dst, const int8_t *in_b, int32_t iy,
                                                           const nat_geom *g, int32_t pitch, int32_t in_off,
                                                           int32_t off2)
{
    zero_half(dst, g->left);
    widen_nat(dst + g->left, in_b + iy * g->row + g->first, g->n, in_off, off2);
    zero_half(dst + g->left + g->n, pitch - g->left - g->n);
}

/* The patch of one output pixel into its scratch slot: rows[ky] + x0 is where its window's row ky
 * starts (a zero row where that is padding). */
static inline void nat_gather(int16_t *slot, const int16_t *const *rows, int32_t x0, int32_t k_h, int32_t seg)
{
    int32_t ky;
    for (ky = 0; ky < k_h; ++ky) {
        copy_half(slot + ky * seg, rows[ky] + x0, seg);
    }
}

/* Two ways to hold the widened input: the whole image when it fits in NAT_ROW_HALF (widened once per
 * call, passes run across output rows), else the k_h rows of one output row (widened per row). The
 * scratch after the front: the widened weights of a chunk unless the compiler wrote the layer's to
 * flash (first: kept between calls with the table, keyed in the front), the widened rows, the PIX patches (LDRD reads them), the k_h row
 * pointers of a pass. */
static __attribute__((noinline)) int conv_nat(const mdt_conv_params *p, const int8_t *input, int8_t *output,
                                               mdt_scratch s, conv_cache *key, chan_t *tbl)
{
    int16_t *nat_wbuf, *buf, *cols;
    const int16_t **rows;
    const int32_t in_c = p->in_c, seg = p->k_w * in_c, depth = p->k_h * seg, ng = (depth + 3) / 4;
    /* columns of a widened row: the left padding, the image, and whatever the last window reads past it */
    const int32_t reach = (p->out_w - 1) * p->stride_w + p->k_w;
    const int32_t pitch = (reach > p->pad_w + p->in_w ? reach : p->pad_w + p->in_w) * in_c;
    const int whole = (p->in_h + 1) * pitch <= NAT_ROW_HALF; /* + a zero row for the padding */
    const int32_t per_chunk = NAT_W_HALF / (4 * ng) < CHUNK_OC ? NAT_W_HALF / (4 * ng) : CHUNK_OC;
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset);
    const int32_t npix_total = p->out_h * p->out_w;
    const nat_geom geom = nat_geometry(p);
    int32_t b, oc0, g;
    if (p->dil_w != 1 || ng > NAT_MAX_G || p->k_h > NAT_MAX_KH || (p->k_h + 1) * pitch > NAT_ROW_HALF ||
        per_chunk < 1) {
        return 0;
    }
    /* the compiler's widened rows in flash (mdt_conv_params.nat_weights): no room taken, nothing widened */
    nat_wbuf = p->nat_weights != NULL
                   ? (int16_t *)(uintptr_t)p->nat_weights
                   : (int16_t *)mdt_scratch_take(
                         &s, (p->out_c < per_chunk ? p->out_c : per_chunk) * 4 * ng * (int32_t)sizeof(int16_t));
    buf = (int16_t *)mdt_scratch_take(&s, (whole ? p->in_h + 1 : p->k_h + 1) * pitch * (int32_t)sizeof(int16_t));
    cols = (int16_t *)mdt_scratch_take(&s, PIX * NAT_SLOT_HALF * (int32_t)sizeof(int16_t));
    rows = (const int16_t **)mdt_scratch_take(&s, p->k_h * (int32_t)sizeof(const int16_t *));
    if (nat_wbuf == NULL || buf == NULL || cols == NULL || rows == NULL) {
        return 0;
    }
    MDT_PATH(MDT_PATH_CONV_NAT);
    for (g = 0; g < PIX * NAT_SLOT_HALF; ++g) {
        cols[g] = 0; /* the last group's positions past the depth stay 0 */
    }
    zero_half(buf, pitch); /* row 0 of the buffer: the zero row padded taps read */
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * p->in_h * p->in_w * in_c;
        int8_t *out_b = output + b * npix_total * p->out_c;
        int32_t iy;
        if (whole) {
            for (iy = 0; iy < p->in_h; ++iy) {
                nat_row(buf + (1 + iy) * pitch, in_b, iy, &geom, pitch, p->input_offset, off2);
            }
        }
        for (oc0 = 0; oc0 < p->out_c; oc0 += per_chunk) {
            const int32_t n = p->out_c - oc0 < per_chunk ? p->out_c - oc0 : per_chunk;
            int32_t i, pix;
            const chan_t *const table = chan_table(p, oc0, n, key, tbl);
            const int16_t *const wbuf = p->nat_weights != NULL ? nat_wbuf + oc0 * 4 * ng : nat_wbuf;
            if (p->nat_weights != NULL) {
                MDT_PATH(MDT_PATH_CONV_NAT_CONST);
            } else if (key->nat_filter != p->filter || key->nat_oc0 != oc0 || key->nat_n != n || key->nat_depth != depth) {
                for (i = 0; i < n; ++i) {
                    int16_t *wr = nat_wbuf + i * 4 * ng;
                    widen_nat(wr, p->filter + (oc0 + i) * depth, depth, 0, 0);
                    zero_half(wr + depth, 4 * ng - depth);
                }
                key->nat_filter = p->filter;
                key->nat_oc0 = oc0;
                key->nat_n = n;
                key->nat_depth = depth;
            }
            for (pix = 0; pix < npix_total;) {
                /* a pass: up to PIX pixels, within one output row unless the whole image is held */
                const int32_t ox = pix % p->out_w;
                const int32_t left = whole ? npix_total - pix : p->out_w - ox;
                const int32_t npix = left < PIX ? left : PIX;
                int32_t s, ky, qy = pix / p->out_w, qx = ox;
                for (s = 0; s < PIX; ++s) {
                    const int32_t iy0 = qy * p->stride_h - p->pad_h;
                    if (s == 0 || (whole && qx == 0 && s < npix)) {
                        for (ky = 0; ky < p->k_h; ++ky) {
                            const int32_t y = iy0 + p->dil_h * ky;
                            int16_t *r = whole ? buf + (1 + y) * pitch : buf + (1 + ky) * pitch;
                            if (y < 0 || y >= p->in_h) {
                                rows[ky] = buf;
                                continue;
                            }
                            if (!whole && ox == 0) { /* the row's first pass widens its input rows */
                                nat_row(r, in_b, y, &geom, pitch, p->input_offset, off2);
                            }
                            rows[ky] = r;
                        }
                    }
                    nat_gather(cols + s * NAT_SLOT_HALF, rows, qx * p->stride_w * in_c, p->k_h, seg);
                    /* the next slot's pixel; slots past the pass's pixels repeat its last one (computed,
                     * not stored) */
                    if (s + 1 < npix && ++qx == p->out_w) {
                        qx = 0;
                        qy++;
                    }
                }
                pass_nat(cols, wbuf, ng, npix, p, table, n, out_b + pix * p->out_c + oc0);
                pix += npix;
            }
        }
    }
    return 1;
}

/* The scratch: the front (keys, channel table), then conv_nat's buffers or the im2col of PIX pixels
 * (2 words per group of 4 depth elements and pixel, one group spare), the bytes of one pixel's
 * patch (few channels only) and, where a pass is shorter than PIX and conv_pass takes it by the
 * assembly, PIX outputs per channel of a chunk. */
static __attribute__((noinline)) int conv_im2col(const mdt_conv_params *p, const int8_t *input, int8_t *output,
                                                  mdt_scratch s, conv_cache *key, const chan_t *tbl)
{
    uint32_t *cols;
    int8_t *row = NULL, *pass_buf = NULL;
    int16_t tail[PIX][4] = {{0}};
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset);
    const int32_t npix_total = p->out_h * p->out_w;
    const int words = (p->in_c % 4) == 0;
    int32_t b, oc0;
    key->nat_filter = NULL; /* the buffers below overwrite conv_nat's widened weights */
    cols = (uint32_t *)mdt_scratch_take(&s, 2 * PIX * ((depth + 3) / 4 + 1) * (int32_t)sizeof(uint32_t));
    if (!words) {
        row = (int8_t *)mdt_scratch_take(&s, depth + 8);
    }
    if (npix_total % PIX != 0 && npix_total % PIX < 4 && depth % 4 == 0 && p->act_min == -128 &&
        p->act_max == 127) {
        pass_buf = (int8_t *)mdt_scratch_take(&s, PIX * (p->out_c < CHUNK_OC ? p->out_c : CHUNK_OC));
    }
    if (cols == NULL || (!words && row == NULL)) {
        return 0; /* pass_buf is optional: conv_pass has the C pass without it */
    }
    MDT_PATH(words ? MDT_PATH_CONV_WORDS : MDT_PATH_CONV_BYTES);
    /* channels in chunks of CHUNK_OC, each over all pixels (the im2col is redone per chunk: cheap
     * next to the chunk's MACs) */
    for (oc0 = 0; oc0 < p->out_c; oc0 += CHUNK_OC) {
        const int32_t n = p->out_c - oc0 < CHUNK_OC ? p->out_c - oc0 : CHUNK_OC;
        const chan_t *const table = chan_table(p, oc0, n, key, (chan_t *)tbl);
        for (b = 0; b < p->batches; ++b) {
            const int8_t *in_b = input + b * p->in_h * p->in_w * p->in_c;
            int8_t *out_b = output + b * npix_total * p->out_c;
            int32_t pix;
            for (pix = 0; pix < npix_total; pix += PIX) {
                const int32_t npix = npix_total - pix < PIX ? npix_total - pix : PIX;
                /* every slot: the short-pass assembly reads all six */
                const int32_t nslots = PIX;
                int32_t sl;
                for (sl = 0; sl < nslots; ++sl) {
                    /* missing pixels of the last pass repeat the last one; their outputs are not stored */
                    const int32_t q = pix + (sl < npix ? sl : npix - 1);
                    if (words) {
                        gather_words(cols, sl, in_b, q / p->out_w, q % p->out_w, p, off2);
                    } else {
                        gather_bytes_f(cols, tail[sl], sl, in_b, q / p->out_w, q % p->out_w, p, off2, row);
                    }
                }
                conv_pass(cols, (const int16_t(*)[4])tail, depth, npix, p, table, oc0, n, out_b + pix * p->out_c,
                          pass_buf);
            }
        }
    }
    return 1;
}

/* The two paths in their own frames: only the one that runs is on the stack. */
int mdt_conv2d_dsp(const mdt_conv_params *p, const int8_t *input, int8_t *output, mdt_scratch s)
{
    conv_cache *key = NULL;
    chan_t *tbl;
    if (p->k_h * p->k_w * p->in_c > MDT_DSP_MAX_K) {
        return 0;
    }
    tbl = conv_front(p, &s, &key);
    if (tbl == NULL) {
        return 0;
    }
    if (p->in_c % 4 != 0 && conv_nat(p, input, output, s, key, tbl)) {
        return 1;
    }
    return conv_im2col(p, input, output, s, key, tbl);
}

/* Depthwise, depth multiplier 1, channels in groups of 4: SMLABB / SMLATT on the unpacked lanes.
 * The parameters are copied to locals first: the int8 output stores may alias anything, so the
 * compiler would otherwise reload every field after each store. */
int mdt_depthwise_conv2d_dsp(const mdt_dwconv_params *p, const int8_t *input, int8_t *output)
{
    const int32_t C = p->in_c, in_h = p->in_h, in_w = p->in_w, k_h = p->k_h, k_w = p->k_w;
    const int32_t out_h = p->out_h, out_w = p->out_w, stride_h = p->stride_h, stride_w = p->stride_w;
    const int32_t dil_h = p->dil_h, dil_w = p->dil_w, pad_h = p->pad_h, pad_w = p->pad_w;
    const int32_t out_off = p->output_offset, lo = p->act_min, hi = p->act_max;
    const int32_t xstep = dil_w * C, ystep = dil_h * in_w * C, wrow_step = k_w * C;
    const int8_t *const filter = p->filter;
    const int32_t *const bias = p->bias, *const mult = p->multiplier;
    const int8_t *const shift = p->shift;
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset);
    int32_t b, oy, ox, c;
    if (p->depth_multiplier != 1 || (C % 4) != 0 || !multipliers_ok(mult, shift, p->out_c)) {
        return 0;
    }
    MDT_PATH(MDT_PATH_DW_GENERAL);
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * in_h * in_w * C;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * stride_h - pad_h;
            int32_t ky0 = 0, ky1 = k_h;
            while (ky0 < ky1 && iy0 + dil_h * ky0 < 0) {
                ky0++;
            }
            while (ky1 > ky0 && iy0 + dil_h * (ky1 - 1) >= in_h) {
                ky1--;
            }
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t ix0 = ox * stride_w - pad_w;
                int32_t kx0 = 0, kx1 = k_w;
                const int8_t *x_base;
                const int8_t *w_base;
                int32_t nky, nkx;
                while (kx0 < kx1 && ix0 + dil_w * kx0 < 0) {
                    kx0++;
                }
                while (kx1 > kx0 && ix0 + dil_w * (kx1 - 1) >= in_w) {
                    kx1--;
                }
                nky = ky1 - ky0;
                nkx = kx1 - kx0;
                x_base = in_b + ((iy0 + dil_h * ky0) * in_w + ix0 + dil_w * kx0) * C;
                w_base = filter + ky0 * wrow_step + kx0 * C;
                for (c = 0; c < C; c += 4) {
                    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                    const int8_t *xr = x_base + c;
                    const int8_t *wr = w_base + c;
                    int32_t ky, kx;
                    for (ky = 0; ky < nky; ++ky) {
                        const int8_t *xp = xr;
                        const int8_t *wp = wr;
                        for (kx = 0; kx < nkx; ++kx) {
                            const int32_t xv = ld32(xp);
                            const int32_t wv = ld32(wp);
                            const int32_t xa = __sxtab16(off2, xv);
                            const int32_t xb = sxtab16_ror8(off2, xv);
                            const int32_t wa = __sxtb16(wv);
                            const int32_t wb = sxtb16_ror8(wv);
                            a0 = __smlabb(xa, wa, a0);
                            a2 = __smlatt(xa, wa, a2);
                            a1 = __smlabb(xb, wb, a1);
                            a3 = __smlatt(xb, wb, a3);
                            xp += xstep;
                            wp += C;
                        }
                        xr += ystep;
                        wr += wrow_step;
                    }
                    if (bias) {
                        a0 += bias[c];
                        a1 += bias[c + 1];
                        a2 += bias[c + 2];
                        a3 += bias[c + 3];
                    }
                    output[c] = rqs_out(mult[c], shift[c], a0, out_off, lo, hi);
                    output[c + 1] = rqs_out(mult[c + 1], shift[c + 1], a1, out_off, lo, hi);
                    output[c + 2] = rqs_out(mult[c + 2], shift[c + 2], a2, out_off, lo, hi);
                    output[c + 3] = rqs_out(mult[c + 3], shift[c + 3], a3, out_off, lo, hi);
                }
                output += C;
            }
        }
    }
    return 1;
}

#else

typedef int mdt_dsp_unused; /* keeps the translation unit non-empty without the DSP extension */

#endif /* MDT_DSP */
