/* mdt_patch.c - the row copies of the patch-based stages (mdt_patch.h): a patch's input region out of
 * the whole input, its output region into the whole output. */
#include <string.h>

#include "mdt_patch.h"

void mdt_patch_copy(const int8_t *src, int32_t src_stride, int8_t *dst, int32_t dst_stride, int32_t rows,
                    int32_t row_bytes)
{
    int32_t r;
    if (row_bytes <= 0) {
        return;
    }
    for (r = 0; r < rows; ++r) {
        memcpy(dst + r * dst_stride, src + r * src_stride, (size_t)row_bytes);
    }
}
