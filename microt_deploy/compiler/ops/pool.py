"""AVERAGE_POOL_2D and MAX_POOL_2D (MEAN and SUM live in reduce.py)."""

from __future__ import annotations

from ..ir import Graph, Op
from ..quant import out_size, same_padding
from .base import Layer, act_range, fail, need_rank, per_tensor


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

