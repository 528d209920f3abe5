"""Per-layer tables the DSP kernels used to build at every call, built once here into flash.

They depend only on a layer's constants, so computing them at compile time costs no instructions
and no SRAM per inference (flash is plentiful on the targets; SRAM is what the planner minimises).
Each mirrors the C that builds the same table at run time where a hand-written params struct leaves
the pointer NULL, integer for integer (Python ints, wrapped to 32 bits where the C wraps):

- :func:`chan_table`: mdt_dsp_chan.h's chan_table_fill for channels 0 .. out_c - 1 (16 bytes each),
  read by mdt_dsp.c's general conv path (mdt_conv_params.chan_table);
- :func:`nat_weights`: the filter as conv_nat (mdt_dsp.c) widens it, int8 -> int16 sign extension
  with each row zero-padded to whole groups of 4 (mdt_conv_params.nat_weights), as int32 words;
- :func:`add_operand_table`: mdt_dsp_add.c's table() (mdt_add_params.input1_table / input2_table),
  read by the ADD fast path and the fused conv + ADD.

tests/compiler/test_scratch.py compiles the C builders on the host and compares the bytes.
"""

from __future__ import annotations

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

# mdt_dsp.h / mdt_dsp_chan.h
MDT_DSP_MAX_K = 640
MDT_RQF_FOLD_MAX = 23
RQ_FOLD, RQ_POST, RQ_REF, RQ_CONST = 0, 1, 2, 3
CHAN_BIAS_MAX = 1 << 29
# mdt_dsp_add.c: fewer elements run the portable loop unless tables are given; the compiler writes
# tables only from this size on, where the fast path pays for their 2 KB of flash
ADD_MIN_ELEMS = 512


def _i32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _i8(x: int) -> int:
    x &= 0xFF
    return x - 256 if x & 0x80 else x


def wrap_shl(x: int, s: int) -> int:
    return _i32(x << s)


def srdhm(a: int, b: int) -> int:
    """mdt_srdhm (mdt_fixedpoint.h)."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudged = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    if nudged < 0:
        nudged += 0x7FFFFFFF
    return _i32(nudged >> 31)


def rdbpot(x: int, exponent: int) -> int:
    """mdt_rdbpot: rounding right shift, ties away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """mdt_mbqm: TFLite's MultiplyByQuantizedMultiplier (double rounding)."""
    left, right = (shift, 0) if shift > 0 else (0, -shift)
    return rdbpot(srdhm(wrap_shl(x, left), multiplier), right)


def rqf_ok(mult: int, shift: int) -> bool:
    """mdt_rqf_ok (mdt_dsp_rq.h)."""
    return mult == 0 or (mult > 0 and -31 <= shift <= -1)


def rqf_make(mult: int, shift: int, out_off: int) -> tuple[int, int, int, int, int]:
    """mdt_rqf_make: (k_lo, k_hi, m, sh, post), the words as the C's uint32 / int32."""
    e = -shift if mult > 0 and 0 <= -shift - 1 < 31 else 1
    fold = e <= MDT_RQF_FOLD_MAX
    off_hi = (out_off << (e - 1)) & 0xFFFFFFFF
    k_lo = 0x40000000 | ((1 if e == 1 else 0) << 31)
    k_hi = _i32(((1 << e) >> 2) + (off_hi if fold else 0))
    post = 0 if fold else _i32(out_off)
    return k_lo, k_hi, mult, e - 1, post


def conv_uses_chan_table(f: dict) -> bool:
    """Whether mdt_conv2d's DSP dispatch reaches mdt_conv2d_dsp (the path that reads the records):
    not the few-element path mdt_conv2d_small_dsp takes first (scratch.py's _conv_small), not past
    MDT_DSP_MAX_K (the portable kernel). Only the depth and the offsets decide, never the spatial
    shape, so the answer holds for every row / chunk call the row and fused kernels make."""
    depth = f["k_h"] * f["k_w"] * f["in_c"]
    small = 1 <= depth <= 16 and -127 <= f["input_offset"] <= 128 and -128 <= f["output_offset"] <= 128
    return not small and depth <= MDT_DSP_MAX_K


# mdt_dsp.c conv_nat
NAT_ROW_HALF = 1536
NAT_MAX_G = 24
NAT_MAX_KH = 16


def conv_nat_likely(f: dict) -> bool:
    """Whether the layer's calls may take conv_nat (few input channels, mdt_dsp.c), so that its widened
    filter is worth writing to flash: the checks of conv_nat that hold for the whole layer (row and
    chunk calls only narrow the rows it holds). Where the C declines anyway the array is unused flash."""
    depth = f["k_h"] * f["k_w"] * f["in_c"]
    ng = (depth + 3) // 4
    reach = (f["out_w"] - 1) * f["stride_w"] + f["k_w"]
    pitch = max(reach, f["pad_w"] + f["in_w"]) * f["in_c"]
    return (conv_uses_chan_table(f) and f["in_c"] % 4 != 0 and f["dil_w"] == 1 and ng <= NAT_MAX_G
            and f["k_h"] <= NAT_MAX_KH and (f["k_h"] + 1) * pitch <= NAT_ROW_HALF)


def nat_weights(filt: np.ndarray, out_c: int, depth: int) -> np.ndarray:
    """conv_nat's widened rows for all channels: row oc = the filter's int8 sign-extended to int16 (exact),
    zeros up to 4 * ceil(depth / 4); as int32 words (two int16 each, little-endian: the targets')."""
    ng = (depth + 3) // 4
    w = np.zeros((out_c, 4 * ng), dtype="<i2")
    w[:, :depth] = np.asarray(filt, dtype=np.int8).reshape(out_c, depth).astype(np.int16)
    return w.reshape(-1).view("<i4").astype(np.int32)


def chan_table(f: dict, bias: np.ndarray | None, mult: np.ndarray, shift: np.ndarray,
               zero_rows: np.ndarray | None) -> np.ndarray:
    """chan_table_fill(t, p, 0, out_c) as int32 words, 4 per channel: bias, m, k_hi, then the bytes
    sh, mode, fast, post little-endian in the fourth (the chan_t layout mdt_dsp_chan.h checks; the
    targets and the host are little-endian)."""
    out_c = f["out_c"]
    depth = f["k_h"] * f["k_w"] * f["in_c"]
    full = f["act_min"] == -128 and f["act_max"] == 127
    words = np.zeros((out_c, 4), dtype=np.int64)
    for oc in range(out_c):
        m_, s_ = int(mult[oc]), int(shift[oc])
        b = int(bias[oc]) if bias is not None else 0
        k_lo, k_hi, m, sh, post = rqf_make(m_, s_, f["output_offset"])
        mode = RQ_REF if not rqf_ok(m_, s_) else (RQ_POST if post != 0 else RQ_FOLD)
        if mode == RQ_REF:
            sh = s_  # the reference takes the multiplier and the TFLite shift
        fast = (mode == RQ_FOLD and k_lo == 0x40000000 and full and -CHAN_BIAS_MAX < b < CHAN_BIAS_MAX
                and not (depth % 4 != 0 and oc == out_c - 1))
        if zero_rows is not None and zero_rows[oc]:
            fast = False
            mode = RQ_CONST
            post = min(max(mbqm(b, m_, s_) + f["output_offset"], f["act_min"]), f["act_max"])
        packed = (_i8(sh) & 0xFF) | (mode & 0xFF) << 8 | (int(fast) & 0xFF) << 16 | (_i8(post) & 0xFF) << 24
        words[oc] = (b, m, k_hi, _i32(packed))
    return words.astype(np.int32).reshape(-1)


def add_operand_table(offset: int, left_shift: int, mult: int, shift: int) -> np.ndarray:
    """mdt_dsp_add.c's table(): t[(uint8_t)v] = mbqm(wrap_shl(offset + v, left_shift), mult, shift),
    the entries of v = 0 .. 127 first, then -128 .. -1 (indexed by the int8's byte)."""
    return np.array([mbqm(wrap_shl(offset + _i8(u), left_shift), mult, shift) for u in range(256)],
                    dtype=np.int32)
