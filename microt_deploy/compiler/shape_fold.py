"""Static shape arithmetic folded into constants before the graph is checked.

TFLiteConverter writes a Keras ``Reshape`` / ``Flatten`` with a free batch dimension as a small integer
subgraph: ``SHAPE`` of the activation, ``STRIDED_SLICE`` of its batch entry, ``PACK`` with the target
dimensions (sometimes ``CONCATENATION``), feeding ``RESHAPE``'s shape input (Keras MobileNet's head,
MobileNetV3's and EfficientNet's squeeze-and-excitation blocks). Every shape here is static (the reader
refuses dynamic ones), so those ops compute constants: they are evaluated here, their outputs become
constant tensors and the ops leave the graph. What they compute is TFLite's own arithmetic on int32 /
int64 vectors, nothing the kernels run, so folding cannot change a single output byte.

Only ops whose inputs are all constant (or, for SHAPE, whose input's shape is known) and whose
options are the plain ones are folded; anything else stays in the graph and is refused by the
reader's check as before, naming the op.

Keras 2 (``tf_keras``, what TF 2.15 and older convert with, and what ``TF_USE_LEGACY_KERAS=1`` selects)
writes the Reshape's output as dynamic: shape ``[1, 1]`` as a placeholder, signature ``[-1, -1]``. Once
its shape input is folded to a constant, the output's shape is known (TFLite's RESHAPE computes it the
same way at Prepare: the ``-1`` entry takes what the input's element count leaves), so the tensor gets
that static shape here; a tensor whose shape still depends on run-time data stays dynamic and the
reader refuses it.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Op

_INT_TYPES = {"int32": np.int32, "int64": np.int64}


def fold_shape_ops(graph: Graph, dynamic: dict[int, list[int]] | None = None) -> int:
    """Fold the graph's constant shape ops in place (in execution order, so chains fold); returns how
    many ops were removed. ``dynamic``: tensor index -> shape signature of the tensors the file leaves
    dynamic; each RESHAPE output among them whose shape becomes constant gets its static shape and
    leaves the dict (what remains in it is really dynamic)."""
    dynamic = {} if dynamic is None else dynamic
    kept: list[Op] = []
    folded = 0
    for op in graph.ops:
        if op.code == "RESHAPE" and op.outputs and op.outputs[0] in dynamic:
            _resolve_reshape(graph, op, dynamic)
        if any(i in dynamic for i in op.inputs):  # its SHAPE would read a placeholder
            kept.append(op)
            continue
        value = _evaluate(graph, op)
        if value is None:
            kept.append(op)
            continue
        out = graph.t(op.outputs[0])
        out.data = value.astype(_INT_TYPES[out.dtype]).reshape(out.shape)
        folded += 1
    graph.ops = kept
    return folded


def _const_ints(graph: Graph, op: Op) -> list[np.ndarray] | None:
    """The op's inputs as integer arrays, or None unless every input is an int32/int64 constant."""
    values = []
    for idx in op.inputs:
        if idx < 0:
            return None
        t = graph.t(idx)
        if not t.is_const or t.dtype not in _INT_TYPES:
            return None
        values.append(np.asarray(t.data).astype(np.int64))
    return values


def _evaluate(graph: Graph, op: Op) -> np.ndarray | None:
    if len(op.outputs) != 1 or op.outputs[0] < 0 or graph.t(op.outputs[0]).dtype not in _INT_TYPES:
        return None
    out_shape = graph.t(op.outputs[0]).shape
    if op.code == "SHAPE":
        if len(op.inputs) != 1 or op.inputs[0] < 0:
            return None
        value = np.array(graph.t(op.inputs[0]).shape, dtype=np.int64)
    elif op.code == "PACK":
        values = _const_ints(graph, op)
        if not values or op.options.get("values_count", len(values)) != len(values):
            return None
        value = np.stack(values, axis=int(op.options.get("axis", 0)))
    elif op.code == "CONCATENATION":
        values = _const_ints(graph, op)
        if not values or op.options.get("activation", "NONE") != "NONE":
            return None
        value = np.concatenate(values, axis=int(op.options.get("axis", 0)))
    elif op.code == "STRIDED_SLICE":
        value = _strided_slice(graph, op)
        if value is None:
            return None
    else:
        return None
    return value if value.size == int(np.prod(out_shape, dtype=np.int64)) else None


def _strided_slice(graph: Graph, op: Op) -> np.ndarray | None:
    """A 1-D STRIDED_SLICE with begin / end masks and shrink_axis (the batch entry of a shape); other
    masks (ellipsis, new axis, offset) are left to the check."""
    values = _const_ints(graph, op)
    if values is None or len(values) != 4 or values[0].ndim != 1 or any(v.shape != (1,) for v in values[1:]):
        return None
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0) or o.get("offset", False):
        return None
    data, (begin,), (end,), (stride,) = values[0], values[1], values[2], values[3]
    if stride == 0:
        return None
    if o.get("begin_mask", 0) & 1:
        begin = None
    if o.get("end_mask", 0) & 1:
        end = None
    if o.get("shrink_axis_mask", 0) & 1:
        n = len(data)
        i = int(begin or 0)
        if not -n <= i < n:
            return None
        return np.array(data[i])
    return data[slice(None if begin is None else int(begin), None if end is None else int(end), int(stride))]


def _resolve_reshape(graph: Graph, op: Op, dynamic: dict[int, list[int]]) -> None:
    """The static shape of a RESHAPE output the file left dynamic: its (folded) shape input with the
    one ``-1`` entry filled from the input's element count, as TFLite's RESHAPE Prepare does."""
    if len(op.inputs) < 2 or op.inputs[0] in dynamic or op.inputs[1] < 0:
        return
    target = graph.t(op.inputs[1])
    if not target.is_const or target.dtype not in _INT_TYPES or np.asarray(target.data).ndim != 1:
        return
    dims = [int(d) for d in np.asarray(target.data)]
    count = graph.t(op.inputs[0]).size
    free = [i for i, d in enumerate(dims) if d == -1]
    if len(free) > 1 or any(d < -1 or d == 0 for d in dims):
        return
    known = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
    if free:
        if count % known:
            return
        dims[free[0]] = count // known
    if int(np.prod(dims, dtype=np.int64)) != count:
        return
    graph.t(op.outputs[0]).shape = tuple(dims)
    del dynamic[op.outputs[0]]
