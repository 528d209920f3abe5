"""AVERAGE_POOL_2D, MAX_POOL_2D and MEAN over H,W (choosing the int8 path TFLite's reference takes)."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from ..quant import F32, out_size, quantize_multiplier, same_padding
from .base import Layer, act_range, fail, need_const, need_rank, per_tensor


def lower_pool(graph: Graph, op: Op) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    need_rank(graph, op, x, 4, "input")
    need_rank(graph, op, y, 4, "output")
    per_tensor(graph, op, x)
    per_tensor(graph, op, y)
    o = op.options
    n, ih, iw, c = x.shape
    _, oh, ow, oc = y.shape
    kh, kw, sh, sw = o["filter_h"], o["filter_w"], o["stride_h"], o["stride_w"]
    if min(kh, kw, sh, sw) < 1 or oc != c or \
            (out_size(o["padding"], ih, kh, sh, 1), out_size(o["padding"], iw, kw, sw, 1)) != (oh, ow):
        fail(graph, op, f"output shape {list(y.shape)} does not match the pooling arithmetic",
             "re-export the model with static shapes")
    if x.qscale != y.qscale or x.qzero != y.qzero:
        fail(graph, op, "input and output quantization differ", "re-export; TFLite pools keep the input's params")
    lo, hi = act_range(graph, op, y)
    pad_h = same_padding(sh, 1, ih, kh, oh) if o["padding"] == "SAME" else 0
    pad_w = same_padding(sw, 1, iw, kw, ow) if o["padding"] == "SAME" else 0
    fields = dict(batches=n, in_h=ih, in_w=iw, channels=c, out_h=oh, out_w=ow, k_h=kh, k_w=kw,
                  stride_h=sh, stride_w=sw, pad_h=pad_h, pad_w=pad_w, act_min=lo, act_max=hi)
    kernel = "mdt_max_pool" if op.code == "MAX_POOL_2D" else "mdt_avg_pool"
    return Layer(op, kernel, "mdt_pool_params", fields, {}, [op.inputs[0], op.outputs[0]])


def lower_mean(graph: Graph, op: Op) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    axis = need_const(graph, op, op.inputs[1], "the axis")
    need_rank(graph, op, x, 4, "input")
    per_tensor(graph, op, x)
    per_tensor(graph, op, y)
    resolved = sorted({int(a) % 4 for a in np.asarray(axis).reshape(-1)})
    if resolved != [1, 2]:
        fail(graph, op, f"MEAN over axes {resolved} is not supported", "only a mean over H and W (axes 1, 2, "
             "global average pooling) is supported; re-export with GlobalAveragePooling2D")
    n, ih, iw, c = x.shape
    if y.size != n * c:
        fail(graph, op, f"output shape {list(y.shape)} does not fit input {list(x.shape)}", "re-export the model")
    fields = dict(batches=n, in_h=ih, in_w=iw, channels=c, input_zero_point=x.qzero,
                  output_zero_point=y.qzero, multiplier=0, shift=0)
    mult, shift = quantize_multiplier(float(x.qscale) / float(y.qscale))
    # keep_dims does not choose the path in TF 2.19's reference: measured against BUILTIN_REF, a
    # keep_dims MEAN with different in/out parameters takes the folded path below too (the
    # requantize-then-divide variant of reference_integer_ops::Mean differs on ~10 % of outputs).
    if x.qzero == y.qzero and F32(x.qscale) == F32(y.qscale):
        fields["mode"] = "MDT_MEAN_SAME_QUANT"  # reference_ops::Mean: integer sum / count
    else:
        # The reference folds 1/count into the multiplier: as many bits as the count has (<= 31 + shift).
        count = ih * iw
        bits = min(count.bit_length() - 1, 32, 31 + shift)
        fields.update(mode="MDT_MEAN_FOLD", multiplier=(mult << bits) // count, shift=shift - bits)
    return Layer(op, "mdt_mean_hw", "mdt_mean_params", fields, {}, [op.inputs[0], op.outputs[0]])
