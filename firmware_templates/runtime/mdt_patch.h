/*
 * mdt_patch.h - what the patch-based stages of the generated code (microt_deploy/compiler/patch.py)
 * need beyond the kernels: moving a region of rows between a whole tensor and a patch buffer, whose
 * row strides differ. C99, no heap.
 */
#ifndef MDT_PATCH_H
#define MDT_PATCH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* rows x row_bytes bytes from src (rows src_stride apart) to dst (rows dst_stride apart); the two
 * never overlap (a patch buffer and the arena tensor are distinct bytes of the plan). */
void mdt_patch_copy(const int8_t *src, int32_t src_stride, int8_t *dst, int32_t dst_stride, int32_t rows,
                    int32_t row_bytes);

#ifdef __cplusplus
}
#endif

#endif /* MDT_PATCH_H */
