"""The 3x3 depthwise fast path (mdt_dsp_dw.c: [row][channel][column] int16 rows, asm sums of 4 outputs
and of a last pair, asm requantisation on doubled sums, the C requantisation for the channels outside
it) on the shapes that pick each branch, built with arm-none-eabi-gcc and run in QEMU mps2-an386:
every output byte equal to TFLite's BUILTIN_REF."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import GraphSpec, compile_program

from .op_cases import _act
from .test_dsp_qemu import _run, assert_paths, run_bit_exact
from .tflite_models import convert, reference, tf, weights


@pytest.fixture(autouse=True)
def _one_row_per_call(monkeypatch):
    """These cases name the kernel paths each layer takes, chosen for calls of one output row (the
    row kernels' chunks, planner.MAX_ROWS_PER_CALL, are a planner choice: test_planner.py)."""
    monkeypatch.setattr("microt_deploy.compiler.planner.MAX_ROWS_PER_CALL", 1)
    monkeypatch.setenv("MICROT_PATCH_STAGE", "off")


def _dw(x, wt, b, stride, padding, act):
    t = tf()
    return _act(t.nn.depthwise_conv2d(x, wt, strides=[1, stride, stride, 1], padding=padding) + b, act)


def pair_dw(name, h, w, c, stride, padding, act):
    """The sum of two depthwise layers of the same input: the first runs whole (the input is read again
    after it), the second one output row at a time (mdt_dwconv_rows, where the planner lowers the
    arena with it: every single-layer model here does)."""
    wa, wb = weights(name + "a", (3, 3, c, 1)), weights(name + "b", (3, 3, c, 1))
    ba, bb = weights(name + "ba", (c,)), weights(name + "bb", (c,))

    def fn(x):
        return _dw(x, wa, ba, stride, padding, act) + _dw(x, wb, bb, stride, padding, act)

    return fn, [(1, h, w, c)]


def concat_dw(name, h, w, c, stride, padding, act):
    """A depthwise layer concatenated with a wider-range tensor: its output shares the concatenation's
    scale, so its fused activation clamps inside int8 (act_min / act_max short of -128 / 127: the C
    requantisation's clamp)."""
    wt, b = weights(name, (3, 3, c, 1)), weights(name + "b", (c,))

    def fn(x):
        t = tf()
        return t.concat([_dw(x, wt, b, stride, padding, act), t.nn.avg_pool2d(x * 8.0, 3, stride, padding)], axis=-1)

    return fn, [(1, h, w, c)]


# (h, w, channels, stride, padding, activation), each case a pair_dw (one whole-layer call, one
# row-wise). Output widths 4k (no pair), 4k + 1 and 4k + 2 (a pair after the 4-output iterations),
# 4k + 3 (one more 4, an unused output) and 1..3 (4-output iterations only); pitches 16 / 32 / 64 /
# 128 and the bands of rows and the chunks of sums they allow; channel counts off a multiple of 4
# (the C path, the last group one channel at a time); odd input widths (a last single pixel in the
# transposition) and odd left padding; up to 16 outputs per channel the direct path
# (channel-interleaved rows, 4 channels per MAC), which every row-wise call of these takes.
DW_CASES = {
    "dw_w5_c64_s1": (pair_dw, (7, 5, 64, 1, "SAME", "none")),
    "dw_w6_c12_s1_relu6": (pair_dw, (6, 6, 12, 1, "SAME", "relu6")),
    "dw_w3_c20_s1": (pair_dw, (7, 3, 20, 1, "SAME", "none")),
    "dw_w1_c8_s1": (pair_dw, (20, 1, 8, 1, "SAME", "relu")),
    "dw_w2_c7_s2": (pair_dw, (5, 4, 7, 2, "SAME", "none")),
    "dw_w9_c3_s1_valid": (pair_dw, (8, 11, 3, 1, "VALID", "none")),
    "dw_w7_c9_s2_valid": (pair_dw, (9, 15, 9, 2, "VALID", "relu6")),
    "dw_w6_c16_s2_same": (pair_dw, (12, 12, 16, 2, "SAME", "none")),
    "dw_w13_c5_s2_same_odd": (pair_dw, (11, 25, 5, 2, "SAME", "relu")),
    "dw_w3_c24_s2_same": (pair_dw, (14, 6, 24, 2, "SAME", "none")),
    # the direct path whole: widths 1..4, VALID windows inside the row, stride 2 both ways, 16
    # outputs exactly
    "dw_direct_s2_valid": (pair_dw, (7, 8, 8, 2, "VALID", "none")),
    "dw_direct_s1_valid": (pair_dw, (5, 6, 4, 1, "VALID", "none")),
    "dw_direct_4x4_s1": (pair_dw, (4, 4, 12, 1, "SAME", "none")),
    "dw_direct_2x2_s2_relu6": (pair_dw, (4, 3, 16, 2, "SAME", "relu6")),
    # pitch 32 (chunks of 4 rows), 128 at stride 1 (bands of 5 rows, chunks of 1) and 2 (bands of
    # 3 rows), with C a multiple of 4 (mdt_dw_band) and not (the C path)
    "dw_w30_c8_s1_chunks": (pair_dw, (20, 30, 8, 1, "SAME", "none")),
    "dw_w100_c4_s1_bands": (pair_dw, (13, 100, 4, 1, "SAME", "relu6")),
    "dw_w50_c8_s2_bands": (pair_dw, (15, 99, 8, 2, "SAME", "none")),
    "dw_w50_c6_s2_bands": (pair_dw, (15, 99, 6, 2, "SAME", "none")),
    # rows spread evenly over the bands: pitch 64 at stride 1 (20 rows in bands of 10, not 13 + 7)
    # and at stride 2 (16 output rows in bands of 6, 6, 4, not 7, 7, 2)
    "dw_w50_c8_s1_even_bands": (pair_dw, (20, 50, 8, 1, "SAME", "none")),
    "dw_w25_c4_s2_even_bands": (pair_dw, (31, 50, 4, 2, "SAME", "relu")),
    # activation ranges short of int8
    "dw_clamp_relu6_s1": (concat_dw, (9, 10, 8, 1, "SAME", "relu6")),
    "dw_clamp_relu_s2": (concat_dw, (10, 13, 12, 2, "SAME", "relu")),
}


def mixed_dw(name, h, w, c, stride, huge_bias):
    """Depthwise whose channels span per-channel scales: an all-zero channel (multiplier 0) in the first
    group, tiny ones (right shifts past 22: the C requantisation of doubled sums) and a large one in
    the second, ordinary ones after; with `huge_bias` a bias past 2^29 in the first group (its sums
    not doubled). Added to an ordinary depthwise of the same input (this one whole, that row-wise)."""
    wt, wo = weights(name, (3, 3, c, 1)), weights(name + "o", (3, 3, c, 1))
    b, bo = weights(name + "b", (c,)), weights(name + "bo", (c,))
    wt[:, :, 0] = 0.0
    b[0] = 0.0
    wt[:, :, 5] *= 1e-5
    wt[:, :, 6] *= 3e-4
    wt[:, :, 7] *= 40.0
    if huge_bias:
        b[1] = 2e5

    def fn(x):
        return _dw(x, wt, b, stride, "SAME", "none") + _dw(x, wo, bo, stride, "SAME", "none")

    return fn, [(1, h, w, c)]


DW_CASES["dw_mixed_scales_s1"] = (mixed_dw, (6, 7, 12, 1, False))
DW_CASES["dw_mixed_scales_s2"] = (mixed_dw, (8, 9, 12, 2, False))
DW_CASES["dw_huge_bias"] = (mixed_dw, (5, 6, 12, 1, True))

# The depthwise paths each case's layers take (runtime/mdt_trace.h): dw3_band the asm bands over
# transposed rows (channels a multiple of 4, every channel within the asm requantisation), dw3_c the
# C group loop (other channel counts, clamped ranges, channels outside the asm requantisation),
# dw3_direct small outputs (every row-wise call here). No case may fall to dw_ref.
_BAND_DIRECT, _C, _C_DIRECT = {"dw3_band", "dw3_direct"}, {"dw3_c"}, {"dw3_c", "dw3_direct"}
DW_PATHS = {
    "dw_w5_c64_s1": _BAND_DIRECT, "dw_w6_c12_s1_relu6": _BAND_DIRECT, "dw_w3_c20_s1": _BAND_DIRECT,
    "dw_w1_c8_s1": _BAND_DIRECT, "dw_w2_c7_s2": _C, "dw_w9_c3_s1_valid": _C, "dw_w7_c9_s2_valid": _C,
    "dw_w6_c16_s2_same": _BAND_DIRECT, "dw_w13_c5_s2_same_odd": _C, "dw_w3_c24_s2_same": _BAND_DIRECT,
    "dw_direct_s2_valid": {"dw3_direct"}, "dw_direct_s1_valid": {"dw3_direct"},
    "dw_direct_4x4_s1": {"dw3_direct"}, "dw_direct_2x2_s2_relu6": {"dw3_direct"},
    "dw_w30_c8_s1_chunks": {"dw3_band"}, "dw_w100_c4_s1_bands": {"dw3_band"}, "dw_w50_c8_s2_bands": {"dw3_band"},
    "dw_w50_c8_s1_even_bands": {"dw3_band"}, "dw_w25_c4_s2_even_bands": {"dw3_band"},
    "dw_w50_c6_s2_bands": _C, "dw_clamp_relu6_s1": _C, "dw_clamp_relu_s2": _C,
    "dw_mixed_scales_s1": _C_DIRECT, "dw_mixed_scales_s2": _C_DIRECT, "dw_huge_bias": _C_DIRECT,
}


@pytest.mark.parametrize("name", sorted(DW_CASES))
def test_dw_fast_path_bit_exact_in_qemu(name, model_dir, tmp_path):
    recipe, args = DW_CASES[name]
    fn, shapes = recipe(name, *args)
    path = convert(fn, shapes, model_dir, name)
    run = run_bit_exact(path, tmp_path, seed=len(name) + 3)
    assert_paths(run, DW_PATHS[name], name, only=("dw",))
    # at least one depthwise layer ran whole (not one row per call)
    assert "mdt_depthwise_conv2d(" in (tmp_path / "c" / "mdt_model.c").read_text()


def test_dw_row_wise_bit_exact_in_qemu(model_dir, tmp_path):
    """A depthwise layer run one output row at a time (mdt_dwconv_rows: out_h 1, a window of the input
    whose pad_h and in_h change per row), as the planner picks where it lowers the arena."""
    name = "dw_rows_chain"
    wt1, wt2 = weights(name + "1", (1, 1, 16, 32)), weights(name + "2", (1, 1, 32, 16))
    wd = weights(name + "d", (3, 3, 32, 1))

    def fn(x):
        t = tf()
        y = t.nn.relu(t.nn.conv2d(x, wt1, strides=1, padding="SAME"))
        y = t.nn.relu(t.nn.depthwise_conv2d(y, wd, strides=[1, 1, 1, 1], padding="SAME"))
        return t.nn.conv2d(y, wt2, strides=1, padding="SAME")

    path = convert(fn, [(1, 13, 5, 16)], model_dir, name)
    plan = compile_program([GraphSpec(path, "net")], tmp_path / "plan")
    row_wise = [la["op"] == "DEPTHWISE_CONV_2D" and la["inplace"] is not None for la in plan["graphs"][0]["layers"]]
    x, run = _run(path, tmp_path, seed=9)
    expected = reference(path, [x])[0].reshape(-1)
    assert np.array_equal(run.output, expected), f"{int(np.count_nonzero(run.output != expected))} bytes differ"
    assert any(row_wise), plan["graphs"][0]["layers"]
    dw_layers = [i for i, la in enumerate(plan["graphs"][0]["layers"]) if la["op"] == "DEPTHWISE_CONV_2D"]
    assert all(run.paths[i] == {"dw3_direct"} for i in dw_layers), run.paths  # one output row per call


def test_dw_band_buffer_holds_the_even_bands_rows():
    """VWW's first depthwise (48x48x8, stride 1, pitch 64: at most 13 output rows a band) runs in 4
    bands of 12 rows, so its transposed-rows buffer holds 12 + 2 input rows of 4 channels x 64 int16,
    not the 15 a 13-row band would need (512 bytes of the arena's peak)."""
    from microt_deploy.compiler.scratch import DW_CALL, dw_call

    f = dict(stride_w=1, stride_h=1, out_w=48, out_h=48, in_w=48, in_h=48, pad_w=1, pad_h=1, k_h=3, k_w=3,
             depth_multiplier=1, dil_h=1, dil_w=1, in_c=8, act_min=-128, act_max=127)
    arrays = {"shift": np.full(8, -8), "mult": np.full(8, 1 << 30)}
    path, pieces = dw_call(f, arrays)
    assert path == "dw3_band"
    assert pieces == [DW_CALL, 14 * 4 * 64 * 2]
