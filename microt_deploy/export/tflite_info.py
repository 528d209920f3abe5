"""Reading what an int8 .tflite holds: its operators, and the quantisation of its inputs and outputs.

Parses the flatbuffer with the ``tflite`` schema classes (no TensorFlow needed), so the compiler,
the reports and the tests can all ask the same questions of an exported graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tflite

from microt_deploy.compiler.supported import SUPPORTED_OPS as _COMPILER_OPS
from microt_deploy.errors import MicrotError

# What the compiler runs: the one list (microt_deploy/compiler/supported.py, docs/ops.md).
SUPPORTED_OPS = frozenset(_COMPILER_OPS)

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}


def _model(data: bytes) -> tflite.Model:
    return tflite.Model.GetRootAsModel(data, 0)


def op_names(data: bytes) -> list[str]:
    """Builtin operator names of the first subgraph, in execution order."""
    model = _model(data)
    graph = model.Subgraphs(0)
    names = []
    for i in range(graph.OperatorsLength()):
        code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        # Newer files keep codes > 127 in BuiltinCode; DeprecatedBuiltinCode holds the small ones.
        names.append(_OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN"))
    return names


def _tensor_info(model: tflite.Model, index: int) -> dict[str, Any]:
    tensor = model.Subgraphs(0).Tensors(index)
    quant = tensor.Quantization()
    scales = quant.ScaleAsNumpy() if quant is not None and quant.ScaleLength() else np.zeros(0)
    zps = quant.ZeroPointAsNumpy() if quant is not None and quant.ZeroPointLength() else np.zeros(0)
    if len(scales) != 1 or len(zps) != 1:
        raise MicrotError(
            f"tensor {tensor.Name().decode()} is not quantised per tensor ({len(scales)} scales)",
            "export with int8 inputs and outputs",
        )
    return {
        "name": tensor.Name().decode(),
        "shape": [int(d) for d in tensor.ShapeAsNumpy()],
        "dtype": _TYPE_NAMES.get(tensor.Type(), "UNKNOWN").lower(),
        "scale": float(np.float32(scales[0])),
        "zero_point": int(zps[0]),
    }


def io_info(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of the first subgraph: name, shape, dtype, scale, zero_point."""
    model = _model(data)
    graph = model.Subgraphs(0)
    ins = [_tensor_info(model, int(graph.Inputs(i))) for i in range(graph.InputsLength())]
    outs = [_tensor_info(model, int(graph.Outputs(i))) for i in range(graph.OutputsLength())]
    return ins, outs


def check_ops(name: str, data: bytes) -> list[str]:
    """Return the op list, refusing (with the compiler's own one-line message: the op, its index, its
    options and the fix) any op or option the compiler does not run, so export fails where compile would."""
    ops = op_names(data)
    from microt_deploy.compiler import read_model  # the very list and per-op checks compile applies

    try:
        read_model(data, name=name)
    except MicrotError as err:
        raise MicrotError(f"the exported {name} graph: {err.problem}", err.fix) from err
    return ops
