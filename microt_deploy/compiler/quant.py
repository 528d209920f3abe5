"""Compile-time quantisation arithmetic, done exactly as TFLite's kernels prepare it (doubles where
TFLite uses doubles, float32 where it uses floats) so the C kernels can stay integer-only."""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32


def round_half_away(x: float) -> int:
    """std::round: halves go away from zero."""
    t = math.trunc(x)
    if abs(x - t) >= 0.5:  # x - t is exact, unlike x + 0.5
        t += 1 if x > 0 else -1
    return int(t)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: Q31 mantissa and power-of-two shift (> 0 means left)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


def conv_multipliers(input_scale: float, filter_scales: np.ndarray, output_scale: float,
                     channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mantissa, shift) as PopulateConvolutionQuantizationParams computes them."""
    scales = np.asarray(filter_scales, dtype=np.float32)
    if scales.size == 1:
        scales = np.repeat(scales, channels)
    mult = np.zeros(channels, dtype=np.int32)
    shift = np.zeros(channels, dtype=np.int8)
    for c in range(channels):
        real = float(input_scale) * float(scales[c]) / float(output_scale)
        mult[c], shift[c] = quantize_multiplier(real)
    return mult, shift


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8: quantize(f) = zp + round(f / scale) in float32."""

    def quantize(f: float) -> int:
        return zero_point + round_half_away(float(F32(f) / F32(scale)))

    lo, hi = -128, 127
    if activation == "RELU":
        return max(lo, quantize(0.0)), hi
    if activation == "RELU6":
        return max(lo, quantize(0.0)), min(hi, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, quantize(-1.0)), min(hi, quantize(1.0))
    return lo, hi


def same_padding(stride: int, dilation: int, in_size: int, k: int, out_size: int) -> int:
    """ComputePaddingWithOffset: the leading pad (the extra odd pixel goes to the end)."""
    effective = (k - 1) * dilation + 1
    total = max((out_size - 1) * stride + effective - in_size, 0)
    return total // 2


def out_size(padding: str, in_size: int, k: int, stride: int, dilation: int) -> int:
    effective = (k - 1) * dilation + 1
    if padding == "SAME":
        return (in_size + stride - 1) // stride
    return (in_size - effective + stride) // stride
