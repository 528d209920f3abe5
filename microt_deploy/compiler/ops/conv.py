"""CONV_2D and DEPTHWISE_CONV_2D: shape/option checks, per-channel multipliers, padding, MACs."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from ..quant import conv_multipliers, out_size, same_padding
from .base import Layer, Ref, act_range, fail, need_const, need_rank, per_tensor
from .tables import chan_table, conv_nat_likely, conv_uses_chan_table, nat_weights


def _common(graph: Graph, op: Op, depthwise: bool) -> Layer:
    x, w, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    need_const(graph, op, op.inputs[1], "the filter")
    need_rank(graph, op, x, 4, "input")
    need_rank(graph, op, w, 4, "filter")
    need_rank(graph, op, y, 4, "output")
    per_tensor(graph, op, x)
    per_tensor(graph, op, y)
    if w.dtype != "int8" or np.any(w.zero_point != 0):
        fail(graph, op, "the filter is not symmetric int8", "re-export with int8 per-channel weights")
    o = op.options
    n, ih, iw, ic = x.shape
    _, oh, ow, oc = y.shape
    kh, kw = (w.shape[1], w.shape[2])
    if depthwise:
        if w.shape[0] != 1 or w.shape[3] != oc or oc % ic:
            fail(graph, op, f"filter shape {list(w.shape)} does not fit input {list(x.shape)}",
                 "re-export the depthwise convolution with a [1, KH, KW, C*multiplier] filter")
    elif w.shape[3] != ic or w.shape[0] != oc:
        fail(graph, op, f"filter shape {list(w.shape)} does not fit input channels {ic} (grouped conv?)",
             "re-export without grouped convolutions")
    sh, sw, dh, dw = o["stride_h"], o["stride_w"], o["dilation_h"], o["dilation_w"]
    if min(sh, sw, dh, dw) < 1:
        fail(graph, op, "stride and dilation must be >= 1", "re-export the model")
    if (out_size(o["padding"], ih, kh, sh, dh), out_size(o["padding"], iw, kw, sw, dw)) != (oh, ow) \
            or y.shape[0] != n:
        fail(graph, op, f"output shape {list(y.shape)} does not match the convolution arithmetic",
             "re-export the model with static shapes")
    if w.scale.size not in (1, oc):
        fail(graph, op, "filter has neither one scale nor one per output channel", "re-export the model")
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = need_const(graph, op, op.inputs[2], "the bias")
        if graph.t(op.inputs[2]).dtype != "int32" or bias.size != oc:
            fail(graph, op, "bias must be int32 with one value per output channel", "re-export the model")
    mult, shift = conv_multipliers(x.qscale, w.scale, y.qscale, oc)
    lo, hi = act_range(graph, op, y)
    pad_h = same_padding(sh, dh, ih, kh, oh) if o["padding"] == "SAME" else 0
    pad_w = same_padding(sw, dw, iw, kw, ow) if o["padding"] == "SAME" else 0
    fields = dict(batches=n, in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc, k_h=kh, k_w=kw,
                  stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, pad_h=pad_h, pad_w=pad_w,
                  input_offset=-x.qzero, output_offset=y.qzero, act_min=lo, act_max=hi,
                  filter=Ref("filter"), bias=Ref("bias") if bias is not None else None,
                  multiplier=Ref("mult"), shift=Ref("shift"))
    arrays = {"filter": w.data.astype(np.int8).reshape(-1), "mult": mult, "shift": shift}
    if bias is not None:
        arrays["bias"] = bias.astype(np.int32).reshape(-1)
    per_out = kh * kw * (1 if depthwise else ic)
    live_macs = y.size * per_out
    if not depthwise:
        # Channels whose filter row is all zero output the requantised bias everywhere: the kernels
        # skip their MACs (pruned MobileNets carry many; the MLPerf VWW model 42 % of its MACs).
        zero_rows = np.all(w.data.reshape(oc, -1) == 0, axis=1)
        if zero_rows.any():
            fields["zero_rows"] = Ref("zero_rows")
            arrays["zero_rows"] = zero_rows.astype(np.uint8)
            live_macs = y.size // oc * int(oc - zero_rows.sum()) * per_out
        if conv_uses_chan_table(fields):
            # the DSP conv path's per-channel records, built here once into flash (tables.py) instead
            # of in the layer's scratch at every call
            fields["chan_table"] = Ref("chan_table")
            arrays["chan_table"] = chan_table(fields, arrays.get("bias"), mult, shift, arrays.get("zero_rows"))
        if conv_nat_likely(fields):
            # few input channels: the filter widened to int16 once, in flash, not in the scratch per call
            fields["nat_weights"] = Ref("nat_weights")
            arrays["nat_weights"] = nat_weights(arrays["filter"], oc, per_out)
    layer = Layer(op, "mdt_depthwise_conv2d" if depthwise else "mdt_conv2d",
                  "mdt_dwconv_params" if depthwise else "mdt_conv_params", fields, arrays,
                  [op.inputs[0], op.outputs[0]], macs=y.size * per_out, live_macs=live_macs,
                  weight_bytes=w.size + (4 * oc if bias is not None else 0))
    if depthwise:
        fields["depth_multiplier"] = oc // ic
    return layer


def lower_conv(graph: Graph, op: Op) -> Layer:
    return _common(graph, op, depthwise=False)


def lower_depthwise(graph: Graph, op: Op) -> Layer:
    return _common(graph, op, depthwise=True)
