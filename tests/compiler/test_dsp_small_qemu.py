"""The small-depth CONV_2D fast path (mdt_dsp_conv_small.c: depth k_h * k_w * in_c <= 16, a
pixel-major Thumb-2 loop over a per-call table of channels) on edge shapes, built with
arm-none-eabi-gcc and run in QEMU mps2-an386: every output byte equal to TFLite's BUILTIN_REF.

Covered: depth 4, 8, 9, 12 and 16 (the 8-byte and 16-byte loops), pointwise convs read straight from
the input (in_c 8 and 16) and gathered ones (other depths, stride 2, 3x3 with in_c 1 and padding),
odd pixel counts and chunks of 16 gathered pixels, more than 32 output channels (two tables, the
output pointer skipping the other block's channels), relu / relu6 / none, activation ranges narrower
than int8 (the clamping bodies: the converter always gives the full range, so the output tensor's
quantisation is patched), and per-channel scales that take every requantisation branch: a zero
channel (multiplier 0), right shifts above 23 (the offset added after the shift), left shifts and
a bias above 2^28 (both left to the reference formula)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from .op_cases import _act, conv
from .test_dsp_qemu import _run, assert_paths, ran, run_bit_exact
from .tflite_models import convert, reference, tf, weights


def scales(name, h, w, cin, cout, k, stride, padding, act):
    """A conv whose channels span the requantisation branches (cout >= 7): 0 all-zero weights and
    bias (multiplier 0); 1 weights x 1e-5 (a right shift above 23); 2 x 3e-4; 3 x 40 (the smallest
    shift); 4 x 1e-9 and 5 x 1e-5 with a bias of 3 (quantised biases of 2^30: the reference)."""
    wt, b = weights(name, (k, k, cin, cout)), weights(name + "b", (cout,))
    wt[..., 0] = 0.0
    b[0] = 0.0
    wt[..., 1] *= 1e-5
    wt[..., 2] *= 3e-4
    wt[..., 3] *= 40.0
    wt[..., 4] *= 1e-9
    wt[..., 5] *= 1e-5
    b[5] = 3.0

    def fn(x):
        y = tf().nn.conv2d(x, wt, strides=stride, padding=padding) + b
        return _act(y, act)

    return fn, [(1, h, w, cin)]


def narrow(recipe, zero_point, scale_mul):
    """`recipe` with its output tensor's zero point set to `zero_point` and scale multiplied by
    `scale_mul`: relu then clamps at the zero point, relu6 at zero_point + 6 / scale, inside int8."""

    def make(name, *args):
        fn, shapes = recipe(name, *args)
        return fn, shapes, (zero_point, scale_mul)

    return make


def patch_output_quant(path: Path, zero_point: int, scale_mul: float) -> Path:
    import tflite

    out = path.with_name(path.stem + "_narrow.tflite")
    buf = bytearray(path.read_bytes())
    sub = tflite.Model.GetRootAsModel(bytes(buf), 0).Subgraphs(0)
    q = sub.Tensors(sub.Outputs(0)).Quantization()
    scale_at, zp_at = q._tab.Vector(q._tab.Offset(8)), q._tab.Vector(q._tab.Offset(10))
    struct.pack_into("<q", buf, zp_at, zero_point)
    struct.pack_into("<f", buf, scale_at, struct.unpack_from("<f", buf, scale_at)[0] * scale_mul)
    out.write_bytes(bytes(buf))
    return out


# (h, w, in_c, out_c, kernel, stride, padding, dilation, activation)
SMALL_CASES = {
    # depth 8 read from the input: 35 pixels, relu6; 33 x 40 channels at depth 16 (two tables)
    "small_d8_stream_relu6": (conv, (5, 7, 8, 12, 1, 1, "SAME", 1, "relu6")),
    "small_d8_stream_none": (conv, (3, 11, 8, 16, 1, 1, "VALID", 1, "none")),
    "small_d16_stream_c40": (conv, (3, 11, 16, 40, 1, 1, "SAME", 1, "relu")),
    "small_d16_stream_none": (conv, (4, 6, 16, 9, 1, 1, "SAME", 1, "none")),
    # gathered: depth 4 over 81 pixels (6 chunks), depth 12, 1x1 at stride 2 (copied by words, as
    # ResNet-8's shortcut convs), 3x3 over one channel
    "small_d4_chunks_relu": (conv, (9, 9, 4, 6, 1, 1, "SAME", 1, "relu")),
    "small_d12_none": (conv, (5, 5, 12, 7, 1, 1, "SAME", 1, "none")),
    "small_d8_s2_relu6": (conv, (9, 7, 8, 10, 1, 2, "SAME", 1, "relu6")),
    "small_d16_s2_c32": (conv, (9, 11, 16, 32, 1, 2, "SAME", 1, "none")),
    "small_d9_3x3_c1_s1": (conv, (7, 5, 1, 5, 3, 1, "SAME", 1, "relu")),
    "small_d9_3x3_c1_s2": (conv, (9, 11, 1, 8, 3, 2, "SAME", 1, "none")),
    "small_d9_3x3_c1_valid": (conv, (6, 9, 1, 3, 3, 1, "VALID", 1, "relu6")),
    "small_d2_1x1_c2": (conv, (5, 3, 2, 4, 1, 1, "SAME", 1, "none")),
}
SMALL_CASES.update({
    "small_scales_d8_none": (scales, (5, 5, 8, 8, 1, 1, "SAME", "none")),
    "small_scales_d8_relu": (scales, (3, 7, 8, 9, 1, 1, "SAME", "relu")),
    "small_scales_d16_none": (scales, (3, 5, 16, 7, 1, 1, "SAME", "none")),
    "small_scales_d16_relu6": (scales, (4, 3, 16, 8, 1, 1, "SAME", "relu6")),
    "small_scales_d9_3x3": (scales, (5, 6, 1, 7, 3, 1, "SAME", "none")),
    "small_scales_d4_s2": (scales, (6, 7, 4, 7, 1, 2, "SAME", "relu")),
    # activation ranges inside int8: [-90, 127], [-100, -36], [-60, 127]
    "small_narrow_d8_relu": (narrow(conv, -90, 1.0), (5, 7, 8, 12, 1, 1, "SAME", 1, "relu")),
    "small_narrow_d16_relu6": (narrow(conv, -100, 2.0), (3, 5, 16, 9, 1, 1, "SAME", 1, "relu6")),
    "small_narrow_scales_d8": (narrow(scales, -60, 1.0), (3, 5, 8, 8, 1, 1, "SAME", "relu")),
    "small_narrow_scales_d16": (narrow(scales, -100, 2.0), (4, 3, 16, 8, 1, 1, "SAME", "relu6")),
    "small_narrow_d9_3x3": (narrow(conv, -70, 2.0), (6, 5, 1, 6, 3, 1, "SAME", 1, "relu6")),
    # a 100x and a 20x finer output scale: the large channels get shifts of 0 and above (the reference formula)
    "small_lshift_d8_none": (narrow(scales, 0, 0.01), (3, 5, 8, 8, 1, 1, "SAME", "none")),
    "small_lshift_d16_relu6": (narrow(scales, -100, 0.05), (4, 3, 16, 8, 1, 1, "SAME", "relu6")),
})


@pytest.mark.parametrize("name", sorted(SMALL_CASES))
def test_small_conv_bit_exact_in_qemu(name, model_dir, tmp_path):
    recipe, args = SMALL_CASES[name]
    fn, shapes, *patch = recipe(name, *args)
    path = convert(fn, shapes, model_dir, name)
    if patch:
        path = patch_output_quant(path, *patch[0])
    run = run_bit_exact(path, tmp_path, seed=len(name) + 3)
    # every case takes the small-depth path; those with channels outside its requantisation (left
    # shifts, biases past 2^28) also its reference-formula pass over them
    refchan = "scales" in name or "lshift" in name
    assert_paths(run, {"conv_small", "small_refchan"} if refchan else {"conv_small"}, name)


def test_small_conv_is_cheap(model_dir, tmp_path):
    """The depth-8 loop really runs: a 16x16x8 -> 16 pointwise conv in under 2.5 instructions per MAC
    (measured 2.26: 1.25 in the loop, 10 per output of 8 MACs, the rest the per-row table and the
    in-place row copy; the previous small-depth path needed ~4)."""
    h, w, cin, cout = 16, 16, 8, 16
    fn, shapes = conv("small_speed", h, w, cin, cout, 1, 1, "SAME", 1, "none")
    path = convert(fn, shapes, model_dir, "small_speed")
    x, fast = _run(path, tmp_path, seed=5)
    _, naive = _run(path, tmp_path, seed=5, defines=("MDT_NO_DSP",))
    assert np.array_equal(fast.output, reference(path, [x])[0].reshape(-1))
    assert np.array_equal(fast.output, naive.output)
    assert ran(fast) == {"conv_small"} and ran(naive) == {"conv_ref"}
    macs = h * w * cin * cout
    assert fast.total < 2.5 * macs, (fast.total, macs)
