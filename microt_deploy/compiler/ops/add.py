"""ADD int8: the left-shift-20 rescaling TFLite's add.cc prepares, with up-to-4-D broadcasting."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Op
from ..quant import F32, quantize_multiplier
from .base import Layer, Ref, act_range, dims4, fail, per_tensor
from .tables import ADD_MIN_ELEMS, add_operand_table, rqf_ok

LEFT_SHIFT = 20


def _strides(shape: list[int], out: list[int]) -> list[int]:
    dense = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(4)]
    return [0 if shape[i] == 1 and out[i] != 1 else dense[i] for i in range(4)]


def broadcast_dims(graph: Graph, op: Op, a, b, y) -> tuple[list[int], list[int], list[int]]:
    """The two inputs' and the output's shapes as 4-D, refusing what TFLite's broadcasting refuses."""
    if max(len(a.shape), len(b.shape), len(y.shape)) > 4:
        fail(graph, op, "broadcasting beyond 4 dimensions is not supported", "re-export with <= 4-D tensors")
    sa, sb, so = dims4(a.shape), dims4(b.shape), dims4(y.shape)
    for i in range(4):
        for s in (sa, sb):
            if s[i] not in (1, so[i]):
                fail(graph, op, f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast to "
                     f"{list(y.shape)}", "re-export the model")
    return sa, sb, so


def lower_add(graph: Graph, op: Op) -> Layer:
    a, b, y = graph.t(op.inputs[0]), graph.t(op.inputs[1]), graph.t(op.outputs[0])
    for t in (a, b, y):
        per_tensor(graph, op, t)
    sa, sb, so = broadcast_dims(graph, op, a, b, y)
    # add.cc: twice_max is a float, each ratio is computed in double.
    twice_max = float(F32(2.0) * max(F32(a.qscale), F32(b.qscale)))
    m1, s1 = quantize_multiplier(a.qscale / twice_max)
    m2, s2 = quantize_multiplier(b.qscale / twice_max)
    mo, shift_o = quantize_multiplier(twice_max / float(F32(1 << LEFT_SHIFT) * F32(y.qscale)))
    lo, hi = act_range(graph, op, y)
    fields = dict(dims=so, stride1=_strides(sa, so), stride2=_strides(sb, so),
                  input1_offset=-a.qzero, input2_offset=-b.qzero, output_offset=y.qzero,
                  left_shift=LEFT_SHIFT, input1_multiplier=m1, input2_multiplier=m2, output_multiplier=mo,
                  input1_shift=s1, input2_shift=s2, output_shift=shift_o, act_min=lo, act_max=hi)
    arrays = {}
    if int(np.prod(so)) >= ADD_MIN_ELEMS and rqf_ok(mo, shift_o):
        # the DSP path's operand tables (tables.py), in flash: none built per call, none in the scratch
        fields.update(input1_table=Ref("add_t1"), input2_table=Ref("add_t2"))
        arrays = {"add_t1": add_operand_table(-a.qzero, LEFT_SHIFT, m1, s1),
                  "add_t2": add_operand_table(-b.qzero, LEFT_SHIFT, m2, s2)}
    return Layer(op, "mdt_add", "mdt_add_params", fields, arrays, [op.inputs[0], op.inputs[1], op.outputs[0]])
