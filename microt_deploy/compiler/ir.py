"""The compiler's graph IR: tensors and ops read from one .tflite subgraph, nothing TFLite-specific left."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# The planner asks for tensor sizes millions of times while it weighs its decisions: no numpy there.
_ITEMSIZE = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "float32": 4, "int64": 8, "bool": 1}


@dataclass
class Tensor:
    """One tensor of the graph; ``data`` is set for constants (weights, biases, axes, paddings)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "int8", "int32", "float32", ...
    scale: np.ndarray  # float32, empty when not quantised
    zero_point: np.ndarray  # int64, same length as scale
    quantized_dimension: int = 0
    data: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return math.prod(self.shape) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * _ITEMSIZE.get(self.dtype, 0) or self.size * np.dtype(self.dtype).itemsize

    @property
    def qscale(self) -> float:
        """The per-tensor scale as TFLite's params.scale (the first one; 0.0 when not quantised)."""
        return float(self.scale[0]) if self.scale.size else 0.0

    @property
    def qzero(self) -> int:
        return int(self.zero_point[0]) if self.zero_point.size else 0


@dataclass
class Op:
    """One operator: its builtin name, tensor indices (-1 = omitted optional input) and options."""

    index: int
    code: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    """A single-subgraph model: ops in execution order."""

    name: str
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]

    def t(self, index: int) -> Tensor:
        return self.tensors[index]

    def describe(self, op: Op) -> str:
        """How error messages name an op: its index, builtin name, output tensor and options."""
        out = self.tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 else "?"
        opts = ", ".join(f"{k}={v}" for k, v in op.options.items())
        return f"op {op.index} {op.code} (output '{out}', options {{{opts}}})"
