"""One lowering per op family: each checks its op's shapes/options and returns a :class:`Layer`."""

from __future__ import annotations

from collections.abc import Callable

from ..ir import Graph, Op
from .add import lower_add
from .base import Layer, Ref
from .conv import lower_conv, lower_depthwise
from .fc import lower_fc
from .misc import lower_pad, lower_quantize, lower_reshape, lower_softmax
from .pool import lower_mean, lower_pool

LOWERINGS: dict[str, Callable[[Graph, Op], Layer]] = {
    "ADD": lower_add,
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
}


def lower_op(graph: Graph, op: Op) -> Layer:
    return LOWERINGS[op.code](graph, op)


def check_op(graph: Graph, op: Op) -> None:
    """Run the op's lowering for its checks only (it raises MicrotError on anything unsupported)."""
    lower_op(graph, op)


__all__ = ["LOWERINGS", "Layer", "Ref", "check_op", "lower_op"]
