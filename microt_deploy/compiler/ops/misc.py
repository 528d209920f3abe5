"""PAD / PADV2, RESHAPE (an alias of its input's buffer), QUANTIZE int8 -> int8, standalone RELU /
RELU6 / RELU_N1_TO_1 (TFLite's QuantizedReluX: a requantize and a clamp) and SOFTMAX int8."""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Op
from ..quant import activation_range, quantize_multiplier
from .base import Layer, dims4, fail, need_const, per_tensor

SCALED_DIFF_INTEGER_BITS = 5


def lower_pad(graph: Graph, op: Op) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    pads = np.asarray(need_const(graph, op, op.inputs[1], "the paddings")).reshape(-1, 2)
    if len(x.shape) > 4 or pads.shape[0] != len(x.shape) or np.any(pads < 0):
        fail(graph, op, "paddings must be non-negative with one row per dimension (rank <= 4)",
             "re-export the model")
    if x.qscale != y.qscale or x.qzero != y.qzero:
        fail(graph, op, "input and output quantization differ", "re-export the model")
    expect = tuple(int(d + a + b) for d, (a, b) in zip(x.shape, pads, strict=True))
    if expect != y.shape:
        fail(graph, op, f"output shape {list(y.shape)} != padded input {list(expect)}", "re-export the model")
    value = y.qzero
    if op.code == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = int(np.asarray(need_const(graph, op, op.inputs[2], "the pad value")).reshape(-1)[0])
    before = [0] * (4 - len(x.shape)) + [int(p) for p in pads[:, 0]]
    fields = dict(in_dims=dims4(x.shape), out_dims=dims4(y.shape), pad_before=before, pad_value=value)
    return Layer(op, "mdt_pad", "mdt_pad_params", fields, {}, [op.inputs[0], op.outputs[0]])


def lower_reshape(graph: Graph, op: Op) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    if x.size != y.size:
        fail(graph, op, f"reshape from {list(x.shape)} to {list(y.shape)} changes the size", "re-export the model")
    if x.qscale != y.qscale or x.qzero != y.qzero:
        fail(graph, op, "input and output quantization differ", "re-export the model")
    return Layer(op, "mdt_copy", None, {"size": y.size}, {}, [op.inputs[0], op.outputs[0]], alias=True)


def lower_quantize(graph: Graph, op: Op) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    per_tensor(graph, op, x)
    per_tensor(graph, op, y)
    if x.size != y.size:
        fail(graph, op, "input and output sizes differ", "re-export the model")
    mult, shift = quantize_multiplier(float(x.qscale) / float(y.qscale))
    lo, hi = activation_range(op.code if op.code != "QUANTIZE" else "NONE", y.qscale, y.qzero)
    fields = dict(size=y.size, input_zero_point=x.qzero, output_zero_point=y.qzero, multiplier=mult, shift=shift,
                  act_min=lo, act_max=hi)
    return Layer(op, "mdt_requantize", "mdt_requant_params", fields, {}, [op.inputs[0], op.outputs[0]])


def lower_softmax(graph: Graph, op: Op) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    per_tensor(graph, op, x)
    per_tensor(graph, op, y)
    if y.qzero != -128 or abs(y.qscale - 1.0 / 256) > 0.001 * (1.0 / 256):
        fail(graph, op, "int8 softmax output must have scale 1/256 and zero point -128", "re-export the model")
    beta = op.options.get("beta", 1.0)
    # PreprocessSoftmaxScaling (double-rounding build) and CalculateInputRadius.
    real = min(float(beta) * float(x.qscale) * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)), float((1 << 31) - 1))
    mult, left_shift = quantize_multiplier(real)
    if left_shift < 0:
        fail(graph, op, "softmax input scale is too small for the int8 kernel", "re-export the model")
    radius = math.floor(((1 << SCALED_DIFF_INTEGER_BITS) - 1) * float(1 << (31 - SCALED_DIFF_INTEGER_BITS))
                        / float(1 << left_shift))
    depth = y.shape[-1] if y.shape else 1
    fields = dict(outer=y.size // depth, depth=depth, input_multiplier=mult, input_left_shift=left_shift,
                  diff_min=-radius)
    return Layer(op, "mdt_softmax", "mdt_softmax_params", fields, {}, [op.inputs[0], op.outputs[0]])
