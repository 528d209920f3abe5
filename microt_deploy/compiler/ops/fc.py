"""FULLY_CONNECTED: any input rank (flattened to batches x depth), per-tensor or per-channel weights."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from ..quant import conv_multipliers
from .base import Layer, Ref, act_range, fail, need_const, per_tensor


def lower_fc(graph: Graph, op: Op) -> Layer:
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    need_const(graph, op, op.inputs[1], "the weights")
    per_tensor(graph, op, x)
    per_tensor(graph, op, y)
    if op.options.get("weights_format", 0) != 0:
        fail(graph, op, "shuffled weights format is not supported", "re-export with the default weights format")
    if w.dtype != "int8" or len(w.shape) != 2 or np.any(w.zero_point != 0):
        fail(graph, op, "weights must be a 2-D symmetric int8 matrix", "re-export with int8 weights")
    out_depth, in_depth = w.shape
    if x.size % in_depth or y.size != (x.size // in_depth) * out_depth:
        fail(graph, op, f"input {list(x.shape)} / output {list(y.shape)} do not fit weights {list(w.shape)}",
             "re-export the model with static shapes")
    per_channel = w.scale.size > 1
    if per_channel and w.scale.size != out_depth:
        fail(graph, op, "weights have neither one scale nor one per output", "re-export the model")
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = need_const(graph, op, op.inputs[2], "the bias")
        if graph.t(op.inputs[2]).dtype != "int32" or bias.size != out_depth:
            fail(graph, op, "bias must be int32 with one value per output", "re-export the model")
    mult, shift = conv_multipliers(x.qscale, w.scale, y.qscale, out_depth if per_channel else 1)
    lo, hi = act_range(graph, op, y)
    batches = x.size // in_depth
    fields = dict(batches=batches, in_depth=in_depth, out_depth=out_depth, per_channel=int(per_channel),
                  input_offset=-x.qzero, output_offset=y.qzero, act_min=lo, act_max=hi,
                  filter=Ref("filter"), bias=Ref("bias") if bias is not None else None,
                  multiplier=Ref("mult"), shift=Ref("shift"))
    arrays = {"filter": w.data.astype(np.int8).reshape(-1), "mult": mult, "shift": shift}
    if bias is not None:
        arrays["bias"] = bias.astype(np.int32).reshape(-1)
    return Layer(op, "mdt_fully_connected", "mdt_fc_params", fields, arrays, [op.inputs[0], op.outputs[0]],
                 macs=batches * in_depth * out_depth, weight_bytes=w.size + (4 * out_depth if bias is not None else 0))
