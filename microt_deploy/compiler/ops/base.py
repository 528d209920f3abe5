"""What every op lowering returns (a :class:`Layer`) and the small checks they share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import MicrotError
from ..ir import Graph, Op, Tensor
from ..quant import activation_range

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


@dataclass
class Ref:
    """A struct field that points at one of the layer's const arrays (by suffix)."""

    suffix: str


@dataclass
class Layer:
    """One kernel call: the C function, its const params struct and the tensors it reads and writes.

    ``args`` are tensor indices passed as pointers after the params struct (inputs then the output);
    a kernel with ``params_type`` None takes ``size`` first (mdt_copy). ``alias`` marks a RESHAPE
    whose output shares its input's buffer: no call is emitted. ``pack_inputs`` passes the inputs as
    one array of pointers (CONCATENATION's variable input count).
    """

    op: Op
    kernel: str
    params_type: str | None
    fields: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    args: list[int] = field(default_factory=list)
    macs: int = 0
    live_macs: int | None = None  # MACs the kernels run when they skip all-zero filter rows (None: macs)
    weight_bytes: int = 0
    alias: bool = False
    pack_inputs: bool = False
    inplace: dict | None = None  # set by the planner: {input, delta, scratch}
    fused: dict | None = None  # a fused layer (fuse.py): {ops: the TFLite ops it runs, intermediate}
    folded_pad: dict | None = None  # a PAD folded into this conv (fuse.fold_pads): {op, intermediate, pads}


def fail(graph: Graph, op: Op, problem: str, fix: str) -> None:
    raise MicrotError(f"{graph.describe(op)}: {problem}", fix)


def act_range(graph: Graph, op: Op, out: Tensor) -> tuple[int, int]:
    act = op.options.get("activation", "NONE")
    if act not in ACTIVATIONS:
        fail(graph, op, f"fused activation {act} is not supported",
             f"supported fused activations are {', '.join(ACTIVATIONS)}; re-export without {act}")
    return activation_range(act, out.qscale, out.qzero)


def need_const(graph: Graph, op: Op, idx: int, what: str) -> np.ndarray:
    if idx < 0 or not graph.t(idx).is_const:
        fail(graph, op, f"{what} must be a constant tensor", "re-export with constant weights/parameters")
    return graph.t(idx).data


def need_rank(graph: Graph, op: Op, t: Tensor, rank: int, what: str) -> None:
    if len(t.shape) != rank:
        fail(graph, op, f"{what} '{t.name}' has shape {list(t.shape)}, expected rank {rank}",
             "re-export with NHWC 4-D activations")


def per_tensor(graph: Graph, op: Op, t: Tensor) -> None:
    if t.scale.size != 1:
        fail(graph, op, f"tensor '{t.name}' is quantized per channel", "activations must be per-tensor int8")


def dims4(shape: tuple[int, ...]) -> list[int]:
    return [1] * (4 - len(shape)) + list(shape)
