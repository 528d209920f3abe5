"""MEAN and SUM int8 over any set of axes, keep_dims or not, choosing the path TFLite's reference takes
(reduce.cc): the sum minus the input zero point, requantized by input_scale / output_scale (for MEAN
with 1/count folded into the multiplier, as reference_ops::QuantizedMeanOrSum does). Every axis set runs the
one kernel mdt_reduce, over the kept and the reduced axes as two loop nests: contiguous axes merged, the reduced
ones innermost, so a mean over H and W of NHWC sums one strided run of H * W elements per output."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from ..quant import quantize_multiplier
from .base import Layer, fail, need_const, per_tensor


def _axes(graph: Graph, op: Op) -> list[int]:
    x = graph.t(op.inputs[0])
    rank = len(x.shape)
    raw = [int(a) for a in np.asarray(need_const(graph, op, op.inputs[1], "the axis")).reshape(-1)]
    if rank > 4:
        fail(graph, op, f"{op.code} of a rank-{rank} tensor is not supported", "re-export with <= 4-D tensors")
    bad = [a for a in raw if not -rank <= a < max(rank, 1)]
    if bad:
        fail(graph, op, f"axis {bad[0]} is out of range for rank {rank}", "re-export the model")
    return sorted({a % rank for a in raw}) if rank else []


def _fold_mean(mult: int, shift: int, count: int) -> tuple[int, int]:
    """1/count folded into the multiplier: as many bits as the count has (<= 32, <= 31 + shift)."""
    bits = min(count.bit_length() - 1, 32, 31 + shift)
    return (mult << bits) // count, shift - bits


def _space(shape: list[int], strides: list[int], axes: list[int]) -> tuple[list[int], list[int]]:
    """(dims, element strides) of mdt_reduce's two-deep loop nest over ``axes`` (in order) of a row-major
    tensor: size-1 axes left out, an axis merged into the one before it where the two are contiguous (its
    stride times its size is the previous stride: one longer inner loop), right-aligned behind a dim of 1.
    Two loops suffice: after merging, the kept and the reduced axes of a <= 4-D tensor alternate."""
    dims: list[int] = []
    st: list[int] = []
    for a in axes:
        if shape[a] == 1:
            continue
        if st and st[-1] == shape[a] * strides[a]:
            dims[-1] *= shape[a]
            st[-1] = strides[a]
        else:
            dims.append(shape[a])
            st.append(strides[a])
    assert len(dims) <= 2, (shape, axes)
    pad = 2 - len(dims)
    return [1] * pad + dims, [0] * pad + st


def _lower_reduce(graph: Graph, op: Op, is_mean: bool) -> Layer:
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    per_tensor(graph, op, x)
    per_tensor(graph, op, y)
    axes = _axes(graph, op)
    rank = len(x.shape)
    kept = [d for i, d in enumerate(x.shape) if i not in axes]
    expect = [1 if i in axes else d for i, d in enumerate(x.shape)] if op.options.get("keep_dims") else kept
    if int(np.prod(expect, dtype=np.int64)) != y.size:
        fail(graph, op, f"output shape {list(y.shape)} does not fit a reduction of {list(x.shape)} over axes "
             f"{axes}", "re-export the model")
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if axes else 1
    # TF 2.19's reference (and tflite-micro) fold 1/count into the multiplier for every int8 MEAN, equal
    # input/output quantization or not, keep_dims or not (measured against BUILTIN_REF: the truncating
    # integer mean of older releases differs on ~half the outputs); SUM requantizes the same way.
    mult, shift = quantize_multiplier(float(x.qscale) / float(y.qscale))
    if is_mean:
        mult, shift = _fold_mean(mult, shift, count)
    shape = list(x.shape)
    strides = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(rank)]
    out_dims, out_strides = _space(shape, strides, [i for i in range(rank) if i not in axes])
    red_dims, red_strides = _space(shape, strides, axes)
    fields = dict(out_dims=out_dims, out_strides=out_strides, red_dims=red_dims, red_strides=red_strides,
                  count=count, input_zero_point=x.qzero, output_zero_point=y.qzero, multiplier=mult, shift=shift)
    return Layer(op, "mdt_reduce", "mdt_reduce_params", fields, {}, [op.inputs[0], op.outputs[0]])


def lower_mean(graph: Graph, op: Op) -> Layer:
    return _lower_reduce(graph, op, is_mean=True)


def lower_sum(graph: Graph, op: Op) -> Layer:
    return _lower_reduce(graph, op, is_mean=False)
