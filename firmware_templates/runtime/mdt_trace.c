/* mdt_trace.c - the kernel-path counters of mdt_trace.h (only with -DMDT_PATH_TRACE: tests). */
#include "mdt_trace.h"

#ifdef MDT_PATH_TRACE
uint32_t mdt_path_count[MDT_PATH_N];
#else
typedef int mdt_trace_unused; /* keeps the translation unit non-empty */
#endif
