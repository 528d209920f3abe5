/* The few Cortex-M4/M7 DSP helpers every fast-path file uses: unaligned word loads and stores and
 * the byte-unpacking SXTB16 / SXTAB16 forms. Included only inside the MDT_DSP sections. */
#ifndef MDT_DSP_INTRIN_H
#define MDT_DSP_INTRIN_H

#include <stdint.h>
#include <string.h>

static inline int32_t ld32(const void *ptr)
{
    int32_t v;
    memcpy(&v, ptr, 4); /* one LDR: the M4 allows unaligned word loads */
    return v;
}

static inline void st32(void *ptr, int32_t v)
{
    memcpy(ptr, &v, 4); /* one STR, unaligned allowed */
}

/* sign-extended bytes 1 and 3 of v as two halfwords */
static inline int32_t sxtb16_ror8(int32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* off2 + the sign-extended bytes 1 and 3 of v, in one instruction */
static inline int32_t sxtab16_ror8(int32_t off2, int32_t v)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(off2), "r"(v));
    return r;
}

#endif
