"""Data-movement ops: SQUEEZE (an alias of its input, like RESHAPE), TRANSPOSE (a strided gather),
CONCATENATION along any axis (plain copies; TFLite's int8 kernel requires equal quantization) and
RESIZE_NEAREST_NEIGHBOR (source row/column tables computed here in float32 as the reference does)."""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Op
from ..quant import F32, round_half_away
from .base import Layer, Ref, act_range, dims4, fail, need_const, need_rank, per_tensor
from .misc import lower_reshape


def _same_quant(graph: Graph, op: Op, x, y) -> None:
    per_tensor(graph, op, x)
    per_tensor(graph, op, y)
    if F32(x.qscale) != F32(y.qscale) or x.qzero != y.qzero:
        fail(graph, op, f"input '{x.name}' and output '{y.name}' quantization differ",
             "re-export; TFLite's int8 kernel for this op keeps the input's scale and zero point")


def lower_squeeze(graph: Graph, op: Op) -> Layer:
    return lower_reshape(graph, op)


def lower_transpose(graph: Graph, op: Op) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    _same_quant(graph, op, x, y)
    perm = [int(p) for p in np.asarray(need_const(graph, op, op.inputs[1], "the permutation")).reshape(-1)]
    rank = len(x.shape)
    if rank > 4 or sorted(p % max(rank, 1) for p in perm) != list(range(rank)):
        fail(graph, op, f"permutation {perm} of a rank-{rank} tensor is not supported",
             "only TRANSPOSE of up to 4-D tensors with a full permutation is supported")
    perm = [p % rank for p in perm]
    if tuple(x.shape[p] for p in perm) != y.shape:
        fail(graph, op, f"output shape {list(y.shape)} does not match the permutation", "re-export the model")
    in_strides = [int(np.prod(x.shape[i + 1:], dtype=np.int64)) for i in range(rank)]
    pad = 4 - rank
    fields = dict(out_dims=dims4(y.shape), in_strides=[0] * pad + [in_strides[p] for p in perm])
    return Layer(op, "mdt_transpose", "mdt_transpose_params", fields, {}, [op.inputs[0], op.outputs[0]])


def lower_concatenation(graph: Graph, op: Op) -> Layer:
    y = graph.t(op.outputs[0])
    ins = [graph.t(i) for i in op.inputs]
    if act_range(graph, op, y) != (-128, 127):
        fail(graph, op, "a fused activation on CONCATENATION is not supported", "re-export without it")
    rank = len(y.shape)
    axis = op.options.get("axis", 0)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < max(rank, 1):
        fail(graph, op, f"axis {op.options.get('axis')} is out of range for rank {rank}", "re-export the model")
    for t in ins:
        _same_quant(graph, op, t, y)
        if len(t.shape) != rank or any(t.shape[d] != y.shape[d] for d in range(rank) if d != axis):
            fail(graph, op, f"input '{t.name}' {list(t.shape)} does not fit output {list(y.shape)} on axis {axis}",
                 "re-export the model")
    if sum(t.shape[axis] for t in ins) != y.shape[axis]:
        fail(graph, op, "the inputs' sizes along the axis do not add up to the output's", "re-export the model")
    inner = int(np.prod(y.shape[axis + 1:], dtype=np.int64))
    outer = int(np.prod(y.shape[:axis], dtype=np.int64))
    chunks = np.array([t.shape[axis] * inner for t in ins], np.int32)
    fields = dict(outer=outer, count=len(ins), out_chunk=int(chunks.sum()), chunks=Ref("chunks"))
    return Layer(op, "mdt_concat", "mdt_concat_params", fields, {"chunks": chunks}, [*op.inputs, op.outputs[0]],
                 pack_inputs=True)


def nearest_indices(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """GetNearestNeighbor for every output index, in float32 like the reference."""
    if align_corners and out_size > 1:
        scale = F32(F32(in_size - 1) / F32(out_size - 1))
    else:
        scale = F32(F32(in_size) / F32(out_size))
    offset = F32(0.5) if half_pixel else F32(0.0)
    out = np.zeros(out_size, np.int32)
    for i in range(out_size):
        v = F32(F32(F32(i) + offset) * scale)
        src = round_half_away(float(v)) if align_corners else math.floor(float(v))
        src = min(src, in_size - 1)
        out[i] = max(src, 0) if half_pixel else src
    return out


def lower_resize_nearest(graph: Graph, op: Op) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    need_rank(graph, op, x, 4, "input")
    need_rank(graph, op, y, 4, "output")
    _same_quant(graph, op, x, y)
    size = [int(v) for v in np.asarray(need_const(graph, op, op.inputs[1], "the output size")).reshape(-1)]
    n, ih, iw, c = x.shape
    if size != [y.shape[1], y.shape[2]] or y.shape[0] != n or y.shape[3] != c:
        fail(graph, op, f"output shape {list(y.shape)} does not match size {size}", "re-export the model")
    o = op.options
    ys = nearest_indices(ih, y.shape[1], o.get("align_corners", False), o.get("half_pixel_centers", False))
    xs = nearest_indices(iw, y.shape[2], o.get("align_corners", False), o.get("half_pixel_centers", False))
    fields = dict(batches=n, in_h=ih, in_w=iw, channels=c, out_h=y.shape[1], out_w=y.shape[2],
                  ys=Ref("ys"), xs=Ref("xs"))
    return Layer(op, "mdt_resize_nearest", "mdt_resize_params", fields, {"ys": ys, "xs": xs},
                 [op.inputs[0], op.outputs[0]])
