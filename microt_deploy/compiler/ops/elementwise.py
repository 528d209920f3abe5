"""Element-wise int8 ops beyond ADD: MUL (with broadcasting), LOGISTIC and HARD_SWISH (both as the
256-entry table TFLite's reference computes, so the C only looks bytes up), and the float32 <-> int8
boundary ops QUANTIZE (float input) and DEQUANTIZE (float output) that float-I/O models carry."""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Op
from ..quant import F32, quantize_multiplier, round_half_away
from .add import _strides, broadcast_dims
from .base import Layer, Ref, act_range, fail, per_tensor


def lower_mul(graph: Graph, op: Op) -> Layer:
    a, b, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    for t in (a, b, y):
        per_tensor(graph, op, t)
        if t.dtype != "int8":
            fail(graph, op, f"tensor '{t.name}' is {t.dtype}", "only int8 MUL is supported; re-export as int8")
    sa, sb, so = broadcast_dims(graph, op, a, b, y)
    # mul.cc: the product and quotient of the float scales are float, widened to double at the end.
    real = float(F32(F32(a.qscale) * F32(b.qscale)) / F32(y.qscale))
    mult, shift = quantize_multiplier(real)
    lo, hi = act_range(graph, op, y)
    fields = dict(dims=so, stride1=_strides(sa, so), stride2=_strides(sb, so), input1_offset=-a.qzero,
                  input2_offset=-b.qzero, output_offset=y.qzero, output_multiplier=mult, output_shift=shift,
                  act_min=lo, act_max=hi)
    return Layer(op, "mdt_mul", "mdt_mul_params", fields, {}, [op.inputs[0], op.inputs[1], op.outputs[0]],
                 macs=y.size)


def _unary_int8(graph: Graph, op: Op):
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    for t in (x, y):
        per_tensor(graph, op, t)
    if x.size != y.size:
        fail(graph, op, "input and output sizes differ", "re-export the model")
    return x, y


def _lut_layer(op: Op, x_idx: int, y_idx: int, size: int, table: np.ndarray) -> Layer:
    # stored in uint8(x) order, as the reference indexes its table
    ordered = np.zeros(256, np.int8)
    for v in range(-128, 128):
        ordered[v & 0xFF] = table[v + 128]
    return Layer(op, "mdt_lookup", "mdt_lut_params", dict(size=size, table=Ref("table")),
                 {"table": ordered}, [x_idx, y_idx], weight_bytes=256)


def logistic_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """PopulateLookupTable with 1 / (1 + exp(-x)) in float32, as TFLite's reference int8 LOGISTIC."""
    inverse = F32(1.0) / F32(out_scale)
    out = np.zeros(256, np.int8)
    for v in range(-128, 128):
        x = F32(F32(in_scale) * F32(v - in_zp))
        # expf is correctly rounded for these arguments: exp in double, rounded once to float
        e = F32(math.exp(-float(x))) if -float(x) < 88.8 else F32(np.inf)
        s = F32(F32(1.0) / F32(F32(1.0) + e))
        q = round_half_away(float(F32(s * inverse))) + out_zp
        out[v + 128] = min(max(q, -128), 127)
    return out


def lower_logistic(graph: Graph, op: Op) -> Layer:
    x, y = _unary_int8(graph, op)
    if y.qzero != -128 or F32(y.qscale) != F32(1.0 / 256):
        fail(graph, op, "int8 LOGISTIC output must have scale 1/256 and zero point -128", "re-export the model")
    table = logistic_table(x.qscale, x.qzero, y.qscale, y.qzero)
    return _lut_layer(op, op.inputs[0], op.outputs[0], y.size, table)


def _downscale_to_int16(m: int) -> int:
    """DownScaleInt32ToInt16Multiplier."""
    if m >= (1 << 31) - 1 - (1 << 15):
        return (1 << 15) - 1
    return (m + (1 << 15)) >> 16


def _srdhm16(a: int, b: int) -> int:
    """gemmlowp's int16 SaturatingRoundingDoublingHighMul (division truncates toward zero)."""
    if a == b == -(1 << 15):
        return (1 << 15) - 1
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    return _to_i16(int((ab + nudge) / (1 << 15)))


def _sdhm16(a: int, b: int) -> int:
    """reference_ops::SaturatingDoublingHighMul (no rounding)."""
    if a == b == -(1 << 15):
        return (1 << 15) - 1
    return _to_i16(int(a * b / (1 << 15)))


def _sat_shl16(v: int, amount: int) -> int:
    return min(max(v * (1 << amount), -(1 << 15)), (1 << 15) - 1)


def _rdbpot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _to_i16(v: int) -> int:
    return (v + (1 << 15)) % (1 << 16) - (1 << 15)


def hard_swish_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """reference_ops::HardSwish (int8) evaluated for all 256 inputs, with HardSwishPrepare's params."""
    hires = F32(F32(1.0 / 128.0) * F32(in_scale))
    out_m, out_e = quantize_multiplier(float(F32(hires / F32(out_scale))))
    out_m16 = _downscale_to_int16(out_m)
    rel_m, rel_e = quantize_multiplier(float(F32(hires / F32(3.0 / 32768.0))))
    rel_m16 = _downscale_to_int16(rel_m)
    if out_e > 0:
        raise ValueError("output multiplier exponent > 0")
    table = np.zeros(256, np.int8)
    for v in range(-128, 128):
        xin = _to_i16(v - in_zp)
        hi_in = _to_i16(xin * 128)
        pre_out = _srdhm16(hi_in, out_m16)
        r = hi_in
        if rel_e > 0:
            r = _sat_shl16(r, rel_e - 1)
        r = _srdhm16(r, rel_m16)
        if rel_e > 0:
            r = _sat_shl16(r, 1)
        if rel_e < 0:
            r = _rdbpot(r, -rel_e)
        r = _to_i16((r + (1 << 15)) >> 1)
        pre = _sdhm16(r, pre_out)
        o = _to_i16(_rdbpot(pre, -out_e) + out_zp)
        table[v + 128] = min(max(o, -128), 127)
    return table


def lower_hard_swish(graph: Graph, op: Op) -> Layer:
    x, y = _unary_int8(graph, op)
    try:
        table = hard_swish_table(x.qscale, x.qzero, y.qscale, y.qzero)
    except ValueError:
        fail(graph, op, "the output scale is smaller than input scale / 128", "re-export the model")
    return _lut_layer(op, op.inputs[0], op.outputs[0], y.size, table)


def lower_quantize_float(graph: Graph, op: Op) -> Layer:
    """QUANTIZE float32 -> int8: round(x / scale) + zero_point, clamped (reference AffineQuantize)."""
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    per_tensor(graph, op, y)
    if y.dtype != "int8" or x.size != y.size:
        fail(graph, op, f"QUANTIZE from float32 to {y.dtype} is not supported", "quantize to int8")
    fields = dict(size=y.size, zero_point=y.qzero, scale=float(F32(y.qscale)))
    return Layer(op, "mdt_quantize_f32", "mdt_affine_params", fields, {}, [op.inputs[0], op.outputs[0]])


def lower_dequantize(graph: Graph, op: Op) -> Layer:
    """DEQUANTIZE int8 -> float32: scale * (q - zero_point)."""
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    if x.dtype != "int8" or y.dtype != "float32" or x.is_const:
        fail(graph, op, f"DEQUANTIZE from {x.dtype}{' constant' if x.is_const else ''} to {y.dtype} "
             "is not supported", "only int8 activations -> float32 graph outputs are supported")
    per_tensor(graph, op, x)
    if x.size != y.size:
        fail(graph, op, "input and output sizes differ", "re-export the model")
    fields = dict(size=y.size, zero_point=x.qzero, scale=float(F32(x.qscale)))
    return Layer(op, "mdt_dequantize_f32", "mdt_affine_params", fields, {}, [op.inputs[0], op.outputs[0]])
