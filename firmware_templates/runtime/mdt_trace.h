/*
 * mdt_trace.h - which kernel path ran (internal to the runtime; compiled in only for tests).
 *
 * Built with -DMDT_PATH_TRACE, every kernel entry point and fast path counts its calls in
 * mdt_path_count[id]; the bench harness (firmware_templates/bench/mdt_bench_main.c) reports the ids
 * each layer took ("P <layer> <mask>"), so a test can assert that the fast path, not the portable
 * fallback that gives the same bytes, ran. Without the define MDT_PATH() is nothing. The ids are
 * mirrored in microt_deploy/evaluate/bench_image.py (PATHS).
 */
#ifndef MDT_TRACE_H
#define MDT_TRACE_H

#include <stdint.h>

enum {
    MDT_PATH_CONV_REF = 0,     /* mdt_conv2d: the portable loop */
    MDT_PATH_CONV_SMALL = 1,   /* mdt_dsp_conv_small.c: depth <= 16 */
    MDT_PATH_CONV_WORDS = 2,   /* mdt_dsp.c: im2col by words (in_c % 4 == 0) */
    MDT_PATH_CONV_BYTES = 3,   /* mdt_dsp.c: im2col by bytes */
    MDT_PATH_CONV_NAT = 4,     /* mdt_dsp.c: few input channels, rows widened once (conv_nat) */
    MDT_PATH_DW_REF = 5,       /* mdt_depthwise_conv2d: the portable loop */
    MDT_PATH_DW3_DIRECT = 6,   /* mdt_dsp_dw.c: 3x3, small outputs, channel-interleaved rows */
    MDT_PATH_DW3_BAND = 7,     /* mdt_dsp_dw.c: 3x3, transposed rows, the asm band */
    MDT_PATH_DW3_C = 8,        /* mdt_dsp_dw.c: 3x3, transposed rows, the C group loop */
    MDT_PATH_DW_GENERAL = 9,   /* mdt_dsp.c: any kernel, 4 channels per pass */
    MDT_PATH_FC_REF = 10,      /* mdt_fully_connected: the portable loop */
    MDT_PATH_FC_DSP = 11,      /* mdt_dsp_fc.c */
    MDT_PATH_ADD_REF = 12,     /* mdt_add: the portable loop */
    MDT_PATH_ADD_DSP = 13,     /* mdt_dsp_add.c: operand tables, folded requantisation */
    MDT_PATH_SMALL_REFCHAN = 14, /* mdt_dsp_conv_small.c: channels left to the reference formula */
    MDT_PATH_FUSED_ADD_DSP = 15, /* mdt_fused.c: the ADD half with the folded requantisation */
    MDT_PATH_CONV_CHAN_CONST = 16, /* mdt_dsp.c: the channel records from the compiler's flash table */
    MDT_PATH_ADD_TABLES_CONST = 17, /* mdt_dsp_add.c / mdt_fused.c: operand tables from flash */
    MDT_PATH_CONV_NAT_CONST = 18, /* mdt_dsp.c conv_nat: the widened filter from the compiler's flash array */
    MDT_PATH_N = 19
};

#ifdef MDT_PATH_TRACE
extern uint32_t mdt_path_count[MDT_PATH_N];
#define MDT_PATH(id) ((void)(mdt_path_count[(id)]++))
#else
#define MDT_PATH(id) ((void)0)
#endif

#endif /* MDT_TRACE_H */
