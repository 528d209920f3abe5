"""One lowering per op family: each checks its op's shapes/options and returns a :class:`Layer`."""

from __future__ import annotations

from collections.abc import Callable

from ..ir import Graph, Op
from .add import lower_add
from .base import Layer, Ref
from .conv import lower_conv, lower_depthwise
from .elementwise import lower_dequantize, lower_hard_swish, lower_logistic, lower_mul, lower_quantize_float
from .fc import lower_fc
from .misc import lower_pad, lower_quantize, lower_reshape, lower_softmax
from .pool import lower_pool
from .reduce import lower_mean, lower_sum
from .shape import lower_concatenation, lower_resize_nearest, lower_squeeze, lower_transpose

LOWERINGS: dict[str, Callable[[Graph, Op], Layer]] = {
    "ADD": lower_add,
    "CONCATENATION": lower_concatenation,
    "DEQUANTIZE": lower_dequantize,
    "HARD_SWISH": lower_hard_swish,
    "LOGISTIC": lower_logistic,
    "MUL": lower_mul,
    "RESIZE_NEAREST_NEIGHBOR": lower_resize_nearest,
    "SQUEEZE": lower_squeeze,
    "TRANSPOSE": lower_transpose,
    "AVERAGE_POOL_2D": lower_pool,
    "CONV_2D": lower_conv,
    "DEPTHWISE_CONV_2D": lower_depthwise,
    "FULLY_CONNECTED": lower_fc,
    "MAX_POOL_2D": lower_pool,
    "MEAN": lower_mean,
    "PAD": lower_pad,
    "PADV2": lower_pad,
    "QUANTIZE": lower_quantize,
    "RELU": lower_quantize,
    "RELU6": lower_quantize,
    "RELU_N1_TO_1": lower_quantize,
    "RESHAPE": lower_reshape,
    "SOFTMAX": lower_softmax,
    "SUM": lower_sum,
}


def lower_op(graph: Graph, op: Op) -> Layer:
    if op.code == "QUANTIZE" and graph.t(op.inputs[0]).dtype == "float32":
        return lower_quantize_float(graph, op)
    return LOWERINGS[op.code](graph, op)


def check_op(graph: Graph, op: Op) -> None:
    """Run the op's lowering for its checks only (it raises MicrotError on anything unsupported)."""
    lower_op(graph, op)


__all__ = ["LOWERINGS", "Layer", "Ref", "check_op", "lower_op"]
