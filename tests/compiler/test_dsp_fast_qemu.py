"""The second-round Cortex-M4 fast paths (mdt_dsp_dw.c: 3x3 depthwise over transposed int16 rows;
mdt_dsp.c's convolution passes of 4 / 3 / 2 / 1 pixels with the depth tail folded into a zero-padded
group; the folded requantisation of mdt_dsp_rq.h, its unfolded large right shifts and the reference
for the rest) on edge shapes, built with arm-none-eabi-gcc and run in QEMU mps2-an386: every output
byte equal to TFLite's BUILTIN_REF."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler.ops import add as ops_add
from microt_deploy.compiler.ops import conv as ops_conv

from .op_cases import _act, conv, dense, depthwise
from .test_dsp_qemu import _run, assert_paths, ran, run_bit_exact
from .tflite_models import convert, reference, tf, weights


@pytest.fixture(autouse=True)
def _one_row_per_call(monkeypatch):
    """These cases name the kernel paths each layer takes, chosen for calls of one output row (the
    row kernels' chunks, planner.MAX_ROWS_PER_CALL, are a planner choice: test_planner.py)."""
    monkeypatch.setattr("microt_deploy.compiler.planner.MAX_ROWS_PER_CALL", 1)
    monkeypatch.setenv("MICROT_PATCH_STAGE", "off")

# (h, w, channels, depth multiplier, kernel, stride, padding, dilation, activation). Channel counts
# off a multiple of 4 take the per-channel transpose for the last group, odd output widths the
# half-used last pair, VALID windows that start inside the row and SAME at stride 2 with only a right
# pad, output rows in several bands of the transposed buffer; a 5x5 kernel is left to the
# general depthwise path (dilation there is covered by the portable kernel's tests).
FAST_CASES = {
    "fast_dw_c6_s1_same": (depthwise, (7, 9, 6, 1, 3, 1, "SAME", 1, "relu6")),
    "fast_dw_c5_s2_valid": (depthwise, (10, 11, 5, 1, 3, 2, "VALID", 1, "none")),
    "fast_dw_c16_s2_same": (depthwise, (8, 8, 16, 1, 3, 2, "SAME", 1, "relu")),
    "fast_dw_c8_s2_same_odd": (depthwise, (9, 13, 8, 1, 3, 2, "SAME", 1, "relu6")),
    # rows of pitch 64 (16 rows in the buffer: two bands) and 128 at stride 2 (bands of 3 rows)
    "fast_dw_c6_bands_s1": (depthwise, (20, 40, 6, 1, 3, 1, "SAME", 1, "relu6")),
    "fast_dw_c4_bands_s2": (depthwise, (14, 100, 4, 1, 3, 2, "SAME", 1, "none")),
    "fast_dw_k5_general": (depthwise, (8, 8, 8, 1, 5, 1, "SAME", 1, "none")),
    "fast_dw_mult3_general": (depthwise, (6, 6, 3, 3, 3, 2, "SAME", 1, "relu")),
    # conv: in_c 3 at stride 2 (depth 27 = 6 groups + tail 3; conv_nat's rows widened once, the byte
    # im2col is fast_nat_c3_dil2_bytes); 24 / 28 / 15 / 11 output pixels leave passes of 6 / 4 / 3 / 5
    # (the 6-pixel core, one unused) after those of 6 (1 and 2 are in test_dsp_qemu.py); depth 1 and
    # depth 8 take the small-depth path, 36 and 20 the general one (im2col by words)
    "fast_conv_c3_s2_same": (conv, (11, 9, 3, 8, 3, 2, "SAME", 1, "relu6")),
    "fast_conv_w11_rem5": (conv, (1, 11, 20, 6, 1, 1, "SAME", 1, "none")),
    "fast_conv_c5_w6_valid": (conv, (6, 8, 5, 7, 3, 1, "VALID", 1, "none")),
    "fast_conv_c1_w7": (conv, (4, 7, 1, 5, 3, 1, "SAME", 1, "relu")),
    "fast_conv_1x1_w5_c36": (conv, (3, 5, 36, 12, 1, 1, "SAME", 1, "none")),
}


def mixed_scales(name, h, w, cin, cout):
    """1x1 conv whose channels span per-channel scales: one all-zero channel (multiplier 0), tiny ones
    (right shifts past 23: the offset added after the shift) and large ones next to the ordinary. Over
    20 input channels: the general path's requantisation (depth 8 would take the small-depth path,
    whose scales are test_dsp_small_qemu.py's)."""
    wt = weights(name, (1, 1, cin, cout))
    wt[..., 0] = 0.0
    wt[..., 1] *= 1e-5
    wt[..., 2] *= 3e-4
    wt[..., 3] *= 40.0

    def fn(x):
        return _act(tf().nn.conv2d(x, wt, strides=1, padding="SAME"), "none")

    return fn, [(1, h, w, cin)]


def residual_add(name, h, w, c, act, broadcast):
    """ADD of a 1x1 conv's output and the graph input (ResNet's shortcut), or, with `broadcast`, of
    the input and a constant per-channel vector: mdt_dsp_add.c's tables on both operand shapes."""
    wt = weights(name, (1, 1, c, c))
    vec = weights(name + "v", (1, 1, 1, c), 2.0)

    def fn(x):
        t = tf()
        other = vec if broadcast else t.nn.conv2d(x, wt, strides=1, padding="SAME")
        return _act(t.add(x, other), act)

    return fn, [(1, h, w, c)]


def residual_3x3(name, h, w, c):
    """A residual block's 3x3 conv + ADD: fused, the conv on the word im2col (depth 9 c) reading its
    channel records from flash, the ADD half its operand tables from flash (h w c >= 512). The conv
    reads a 1x1 conv's output, not the skip itself."""
    w1, w3 = weights(name + "p", (1, 1, c, c)), weights(name, (3, 3, c, c))

    def fn(x):
        t = tf()
        a = t.nn.relu(t.nn.conv2d(x, w1, strides=1, padding="SAME"))
        return t.add(x, t.nn.conv2d(a, w3, strides=1, padding="SAME"))

    return fn, [(1, h, w, c)]


FAST_CASES["fast_conv_mixed_scales"] = (mixed_scales, (4, 5, 20, 6))
# few input channels (conv_nat: rows widened once per output row, natural int16 pairs): in_c 1 with a
# 5x5 window at stride 2 (depth 25), in_c 2 VALID with 7 output columns (a pass of 6 and one of 1), in_c
# 3 narrower than a pass, in_c 6 SAME at stride 1, and in_c 3 dilated (left to the byte im2col)
# the assembly passes: 28 pixels of a 1x1 over 20 channels end with a pass of 4 (mdt_pass4_run in
# place), 3x3 maps with one of 3 (the 4-pixel pass into a buffer)
FAST_CASES["fast_pass4_rem4"] = (conv, (4, 7, 20, 24, 1, 1, "SAME", 1, "relu6"))
FAST_CASES["fast_pass4_3x3map"] = (conv, (3, 3, 32, 40, 1, 1, "SAME", 1, "none"))
FAST_CASES["fast_nat_c1_k5_s2"] = (conv, (12, 11, 1, 16, 5, 2, "SAME", 1, "relu"))
FAST_CASES["fast_nat_c2_valid_w7"] = (conv, (6, 9, 2, 10, 3, 1, "VALID", 1, "relu6"))
FAST_CASES["fast_nat_c3_narrow"] = (conv, (5, 4, 3, 9, 3, 1, "SAME", 1, "none"))
FAST_CASES["fast_nat_c6_s1"] = (conv, (7, 8, 6, 12, 3, 1, "SAME", 1, "relu"))
FAST_CASES["fast_nat_c3_dil2_bytes"] = (conv, (9, 9, 3, 8, 3, 1, "SAME", 2, "none"))
# FC: three rows per asm pass (10 = 3 + 3 + 3 + 1 left to the one-row loop), a depth tail, and a
# depth under 4 (the portable kernel)
FAST_CASES["fast_fc_d64_o10"] = (dense, (64, 10, "relu"))
FAST_CASES["fast_fc_d18_o6"] = (dense, (18, 6, "none"))
FAST_CASES["fast_fc_d3_general"] = (dense, (3, 5, "none"))
# ADD: a residual conv + ADD is fused (mdt_fused.c: the conv's fast path on chunks of a row, the ADD's
# folded requantisation), a broadcast ADD of the input and a vector takes mdt_dsp_add.c's tables (its
# two-tensor form and the portable ADD of few elements: the depthwise pairs of test_dsp_dw_qemu.py)
FAST_CASES["fast_add_residual_relu"] = (residual_add, (8, 9, 12, "relu", False))
FAST_CASES["fast_add_broadcast"] = (residual_add, (6, 7, 16, "none", True))
FAST_CASES["fast_add_small_general"] = (residual_add, (2, 3, 8, "none", False))
FAST_CASES["fast_add_residual_3x3"] = (residual_3x3, (7, 10, 8))

# The kernel paths (runtime/mdt_trace.h) each case's layers take, exactly; the portable loops only
# where the fast paths leave the layer by design (depth multiplier 3, an FC depth under 4).
# conv_chan_const: the general conv path read the channel records the compiler wrote to flash;
# add_tables_const: an ADD (plain or fused) read its operand tables from flash (ops/tables.py)
# conv_nat_const: conv_nat read the filter the compiler widened to int16 in flash
CC, AT, NC = "conv_chan_const", "add_tables_const", "conv_nat_const"
FAST_PATHS = {
    "fast_dw_c6_s1_same": {"dw3_c"}, "fast_dw_c5_s2_valid": {"dw3_c"}, "fast_dw_c16_s2_same": {"dw3_direct"},
    "fast_dw_c8_s2_same_odd": {"dw3_direct"}, "fast_dw_c6_bands_s1": {"dw3_c"}, "fast_dw_c4_bands_s2": {"dw3_band"},
    "fast_dw_k5_general": {"dw_general"}, "fast_dw_mult3_general": {"dw_ref"},
    "fast_conv_c3_s2_same": {"conv_nat", CC, NC}, "fast_conv_w11_rem5": {"conv_words", CC},
    "fast_conv_c5_w6_valid": {"conv_nat", CC, NC}, "fast_conv_c1_w7": {"conv_small"},
    "fast_conv_1x1_w5_c36": {"conv_words", CC}, "fast_conv_mixed_scales": {"conv_words", CC},
    "fast_pass4_rem4": {"conv_words", CC}, "fast_pass4_3x3map": {"conv_words", CC},
    "fast_nat_c1_k5_s2": {"conv_nat", CC, NC}, "fast_nat_c2_valid_w7": {"conv_nat", CC, NC},
    "fast_nat_c3_narrow": {"conv_nat", CC, NC}, "fast_nat_c6_s1": {"conv_nat", CC, NC},
    "fast_nat_c3_dil2_bytes": {"conv_bytes", CC},
    "fast_fc_d64_o10": {"fc_dsp"}, "fast_fc_d18_o6": {"fc_dsp"}, "fast_fc_d3_general": {"fc_ref"},
    "fast_add_residual_relu": {"conv_small", "fused_add_dsp", AT}, "fast_add_broadcast": {"add_dsp", AT},
    "fast_add_small_general": {"conv_small", "fused_add_dsp"},
    "fast_add_residual_3x3": {"conv_small", "conv_words", CC, "fused_add_dsp", AT},
}


# Cases whose conv+ADD fusion no longer lowers the peak (the ADD takes its tables from flash), fused
# here by force so that the fused kernel's small general path stays covered.
FORCE_FUSION = {"fast_add_small_general"}


@pytest.mark.parametrize("name", sorted(FAST_CASES))
def test_fast_path_bit_exact_in_qemu(name, model_dir, tmp_path, monkeypatch):
    if name in FORCE_FUSION:
        from microt_deploy.compiler import fuse

        monkeypatch.setattr("microt_deploy.compiler.planner.choose_fusions", lambda cands, peak_of: {
            (gi, li): fuse.chunk_options(conv)[-1] for gi, li, conv in cands})
    recipe, args = FAST_CASES[name]
    fn, shapes = recipe(name, *args)
    path = convert(fn, shapes, model_dir, name)
    run = run_bit_exact(path, tmp_path, seed=len(name) + 7)
    assert_paths(run, FAST_PATHS[name], name)


def test_fast_depthwise_is_cheaper_than_naive(model_dir, tmp_path):
    """The 3x3 path really runs: under 7 instructions per MAC (the general DSP depthwise needed ~11,
    the portable kernel > 30)."""
    h, w, c = 12, 12, 16
    fn, shapes = depthwise("fast_dw_speed", h, w, c, 1, 3, 1, "SAME", 1, "relu6")
    path = convert(fn, shapes, model_dir, "fast_dw_speed")
    x, fast = _run(path, tmp_path, seed=5)
    _, naive = _run(path, tmp_path, seed=5, defines=("MDT_NO_DSP",))
    assert np.array_equal(fast.output, reference(path, [x])[0].reshape(-1))
    assert np.array_equal(fast.output, naive.output)
    macs = h * w * c * 9
    assert fast.total < 7 * macs < naive.total / 4, (fast.total, naive.total, macs)


def test_depthwise_other_kernel_sizes_take_a_dsp_path(model_dir, tmp_path):
    """5x5 depthwise falls to the first-round DSP path (4 channels per pass), not the portable one."""
    fn, shapes = depthwise("fast_dw_k5_speed", 8, 8, 16, 1, 5, 1, "SAME", 1, "none")
    path = convert(fn, shapes, model_dir, "fast_dw_k5_speed")
    fast = run_bit_exact(path, tmp_path, seed=4)
    _, naive = _run(path, tmp_path, seed=4, defines=("MDT_NO_DSP",))
    assert np.array_equal(fast.output, naive.output)
    assert ran(fast) == {"dw_general"} and ran(naive) == {"dw_ref"}
    assert fast.total < naive.total / 2, (fast.total, naive.total)


@pytest.mark.parametrize("name,paths", [("fast_add_broadcast", {"add_dsp"}),
                                        ("fast_add_residual_3x3", {"conv_small", "conv_words", "fused_add_dsp"}),
                                        ("fast_nat_c6_s1", {"conv_nat"})])
def test_tables_built_at_run_time_without_the_flash_ones(name, paths, model_dir, tmp_path, monkeypatch):
    """With the compiler's flash tables left out (params with NULL chan_table / input*_table, as
    hand-written ones, and no nat_weights), the kernels build them in the scratch (the conv's records, the ADD's operand
    tables) or take the table-less fused ADD, and give the same bytes as BUILTIN_REF."""
    monkeypatch.setattr(ops_conv, "conv_uses_chan_table", lambda f: False)
    monkeypatch.setattr(ops_conv, "conv_nat_likely", lambda f: False)
    monkeypatch.setattr(ops_add, "ADD_MIN_ELEMS", 1 << 30)
    recipe, args = FAST_CASES[name]
    fn, shapes = recipe(name, *args)
    path = convert(fn, shapes, model_dir, name)
    run = run_bit_exact(path, tmp_path, seed=len(name) + 7)
    assert_paths(run, paths, name)
