/*
 * mdt_fused.h - params and entry points of the fused kernels (mdt_fused.c), included by
 * mdt_runtime_more.h after the conv and add params they embed. Same rules: integer-only, no heap, C99.
 */
#ifndef MDT_FUSED_H
#define MDT_FUSED_H

#include <stdint.h>

/* CONV_2D followed by the ADD that is its only reader. `add` takes the conv's output as input 1 and
 * the skip as input 2 (the compiler swaps the operands' params where the graph has them the other way
 * round; the sum is commutative); its dims and strides are unused. `chunk_w` output pixels of one
 * row are computed per pass: the scratch's first chunk_w * out_c bytes hold them, then the conv
 * kernel's working memory. */
typedef struct {
    mdt_conv_params conv;
    mdt_add_params add;
    int32_t chunk_w;
} mdt_conv_add_params;

void mdt_conv2d_add(const mdt_conv_add_params *p, const int8_t *input, const int8_t *skip, int8_t *output,
                    mdt_scratch scratch);

#endif /* MDT_FUSED_H */
