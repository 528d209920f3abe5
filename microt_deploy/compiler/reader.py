"""Reading a .tflite flatbuffer into the graph IR, refusing (with the op, its index and a fix) anything
the compiler cannot run bit-exactly: float models, dynamic shapes, several subgraphs, unknown ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tflite

from ..errors import MicrotError
from .ir import Graph, Op, Tensor
from .shape_fold import fold_shape_ops
from .supported import SUPPORTED_OPS, unsupported_op_message

# The only places a float32 activation may appear: the input of a QUANTIZE, the output of a DEQUANTIZE.
FLOAT_BOUNDARY = {("QUANTIZE", "input"), ("DEQUANTIZE", "output")}
REEXPORT_HINT = (
    "re-export with full-integer int8 quantization (TFLiteConverter with a representative_dataset, "
    "supported_ops=[TFLITE_BUILTINS_INT8], inference_input_type=inference_output_type=tf.int8)"
)

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_ACTIVATIONS = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")}
_PADDINGS = {v: k for k, v in vars(tflite.Padding).items() if not k.startswith("_")}
_NUMPY_TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32,
                "int64": np.int64, "float32": np.float32, "float16": np.float16, "bool": np.bool_}


def read_model(source: str | Path | bytes, name: str | None = None) -> Graph:
    """Parse a .tflite file (path or bytes) into a :class:`Graph`, or raise :class:`MicrotError`."""
    if isinstance(source, bytes | bytearray):
        buf, label = bytes(source), name or "model"
    else:
        path = Path(source)
        if not path.is_file():
            raise MicrotError(f"{path} is not a file", "pass the path of an int8 .tflite model")
        buf, label = path.read_bytes(), name or path.stem
    if len(buf) < 8 or not tflite.Model.ModelBufferHasIdentifier(buf, 0):
        raise MicrotError(
            f"{label} is not a TFLite flatbuffer (no 'TFL3' identifier)",
            "pass a .tflite file written by TFLiteConverter",
        )
    try:
        return _parse(buf, label)
    except MicrotError:
        raise
    except Exception as exc:  # flatbuffers raises IndexError/struct.error on cut-off data
        raise MicrotError(
            f"{label} is truncated or corrupt ({type(exc).__name__} while parsing)",
            "re-export or re-copy the .tflite file",
        ) from exc


def _parse(buf: bytes, label: str) -> Graph:
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise MicrotError(
            f"{label} has {model.SubgraphsLength()} subgraphs; only single-subgraph models are supported",
            "export each graph (trunk, part head, rest) as its own model without control flow",
        )
    sub = model.Subgraphs(0)
    tensors = [_tensor(model, sub.Tensors(i), i, buf, label) for i in range(sub.TensorsLength())]
    dynamic = {i: sig for i in range(sub.TensorsLength()) if (sig := _dynamic_signature(sub.Tensors(i)))}
    ops = []
    for i in range(sub.OperatorsLength()):
        raw = sub.Operators(i)
        opcode = model.OperatorCodes(raw.OpcodeIndex())
        code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
        inputs = [int(x) for x in raw.InputsAsNumpy()] if raw.InputsLength() else []
        outputs = [int(x) for x in raw.OutputsAsNumpy()] if raw.OutputsLength() else []
        op = Op(i, _OP_NAMES.get(code, f"BUILTIN_{code}"), inputs, outputs)
        if code == tflite.BuiltinOperator.CUSTOM:
            op.code = f"CUSTOM:{opcode.CustomCode().decode(errors='replace')}"
        op.options = _options(raw, op.code)
        ops.append(op)
    inputs = [int(x) for x in sub.InputsAsNumpy()]
    outputs = [int(x) for x in sub.OutputsAsNumpy()]
    graph = Graph(label, tensors, ops, inputs, outputs)
    fold_shape_ops(graph, dynamic)  # static shape arithmetic (Keras Reshape / Flatten) -> constants
    if dynamic:  # still dynamic after folding: the shape depends on run-time data
        index, signature = next(iter(dynamic.items()))
        raise MicrotError(
            f"{label}: tensor '{tensors[index].name}' has a dynamic shape {signature}",
            "re-export with a fixed input shape (batch 1), e.g. a concrete function with a static signature",
        )
    validate(graph)
    return graph


def _dynamic_signature(raw) -> list[int] | None:
    """The shape signature of a tensor whose shape is not fixed by the file, else None. A free batch
    dimension is fine: the interpreter runs it with the stored shape (batch 1)."""
    shape = [int(x) for x in raw.ShapeAsNumpy()] if raw.ShapeLength() else []
    signature = [int(x) for x in raw.ShapeSignatureAsNumpy()] if raw.ShapeSignatureLength() else []
    if any(d < 0 for d in signature[1:]) or (signature and signature[0] < 0 and shape[:1] != [1]):
        return signature
    return None


def _tensor(model, raw, index: int, buf: bytes, label: str) -> Tensor:
    name = raw.Name().decode(errors="replace")
    shape = tuple(int(x) for x in raw.ShapeAsNumpy()) if raw.ShapeLength() else ()
    dtype = _TYPE_NAMES.get(raw.Type(), f"type{raw.Type()}")
    q = raw.Quantization()
    scale = np.zeros(0, np.float32)
    zero = np.zeros(0, np.int64)
    qdim = 0
    if q is not None and q.ScaleLength():
        scale = q.ScaleAsNumpy().astype(np.float32)
        zero = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros_like(scale, np.int64)
        qdim = q.QuantizedDimension()
    data = None
    buffer = model.Buffers(raw.Buffer())
    raw_bytes = None
    if buffer.Offset() > 1:
        raw_bytes = buf[buffer.Offset(): buffer.Offset() + buffer.Size()]
        if len(raw_bytes) != buffer.Size():
            raise MicrotError(f"{label} is truncated (tensor '{name}' data)", "re-export or re-copy the file")
    elif buffer.DataLength():
        raw_bytes = buffer.DataAsNumpy().tobytes()
    if raw_bytes:
        if dtype not in _NUMPY_TYPES:
            raise MicrotError(f"{label}: constant tensor '{name}' has unsupported type {dtype}", REEXPORT_HINT)
        data = np.frombuffer(raw_bytes, dtype=_NUMPY_TYPES[dtype]).copy()
        expected = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if data.size != expected:
            raise MicrotError(f"{label}: constant tensor '{name}' holds {data.size} values for shape "
                              f"{list(shape)}", "re-export the model")
        data = data.reshape(shape)
    return Tensor(index, name, shape, dtype, scale, zero, qdim, data)


_OPTION_CLASSES = {
    "CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
    "FULLY_CONNECTED": tflite.FullyConnectedOptions, "ADD": tflite.AddOptions,
    "AVERAGE_POOL_2D": tflite.Pool2DOptions, "MAX_POOL_2D": tflite.Pool2DOptions,
    "MEAN": tflite.ReducerOptions, "SUM": tflite.ReducerOptions, "SOFTMAX": tflite.SoftmaxOptions,
    "MUL": tflite.MulOptions,
    "CONCATENATION": tflite.ConcatenationOptions,
    "RESIZE_NEAREST_NEIGHBOR": tflite.ResizeNearestNeighborOptions,
}


_OPTION_TYPE_NAMES = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_")}


def _generic_options(raw, table) -> dict:
    """The scalar fields of any builtin options table (for naming an unsupported op's options)."""
    cls = getattr(tflite, _OPTION_TYPE_NAMES.get(raw.BuiltinOptionsType(), ""), None)
    if cls is None or table is None:
        return {}
    o = cls()
    o.Init(table.Bytes, table.Pos)
    out: dict = {}
    for attr in sorted(vars(cls)):
        if not attr[:1].isupper() or attr.startswith(("Init", "GetRoot")) or \
                attr.endswith(("AsNumpy", "Length", "IsNone", "BufferHasIdentifier")):
            continue
        try:
            value = getattr(o, attr)()
        except TypeError:  # a vector accessor (takes an index)
            continue
        if isinstance(value, bool | int | float):
            out[attr[0].lower() + "".join(c if c.islower() else "_" + c.lower() for c in attr[1:])] = value
    return out


def _options(raw, code: str) -> dict:
    cls = _OPTION_CLASSES.get(code)
    table = raw.BuiltinOptions()
    if cls is None and code not in SUPPORTED_OPS:
        try:
            return _generic_options(raw, table)
        except Exception:  # noqa: BLE001 - naming the options is a courtesy; the refusal still comes
            return {}
    if cls is None or table is None:
        return {}
    o = cls()
    o.Init(table.Bytes, table.Pos)
    out: dict = {}
    if hasattr(o, "FusedActivationFunction"):
        out["activation"] = _ACTIVATIONS.get(o.FusedActivationFunction(), str(o.FusedActivationFunction()))
    if code in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        out.update(padding=_PADDINGS[o.Padding()], stride_h=o.StrideH(), stride_w=o.StrideW(),
                   dilation_h=o.DilationHFactor(), dilation_w=o.DilationWFactor())
        if code == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
    elif code in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        out.update(padding=_PADDINGS[o.Padding()], stride_h=o.StrideH(), stride_w=o.StrideW(),
                   filter_h=o.FilterHeight(), filter_w=o.FilterWidth())
    elif code == "FULLY_CONNECTED":
        out.update(weights_format=o.WeightsFormat(), keep_num_dims=bool(o.KeepNumDims()))
    elif code in ("MEAN", "SUM"):
        out["keep_dims"] = bool(o.KeepDims())
    elif code == "SOFTMAX":
        out["beta"] = float(o.Beta())
    elif code == "CONCATENATION":
        out["axis"] = int(o.Axis())
    elif code == "RESIZE_NEAREST_NEIGHBOR":
        out.update(align_corners=bool(o.AlignCorners()), half_pixel_centers=bool(o.HalfPixelCenters()))
    return out


def validate(graph: Graph) -> None:
    """Refuse models the compiler cannot run: float-only, float ops, unsupported ops or options."""
    from .ops import check_op  # the per-op checks live with each op's lowering

    activations = [t for t in graph.tensors if not t.is_const]
    if not any(t.dtype == "int8" for t in activations):
        raise MicrotError(f"{graph.name} is a float-only model (no int8 activations)", REEXPORT_HINT)
    for op in graph.ops:
        if op.code not in SUPPORTED_OPS:
            raise MicrotError(*unsupported_op_message(graph.describe(op)))
        for role, idx in [("input", i) for i in op.inputs] + [("output", o) for o in op.outputs]:
            if idx < 0:
                continue
            t = graph.t(idx)
            if t.dtype == "float32" and not t.is_const and (op.code, role) in FLOAT_BOUNDARY:
                continue
            if t.dtype not in ("int8", "int32", "int64") or (not t.is_const and t.dtype != "int8"):
                raise MicrotError(
                    f"{graph.describe(op)} has {t.dtype} {role} '{t.name}'; only int8 activations run here",
                    REEXPORT_HINT,
                )
            if not t.is_const and t.scale.size == 0:
                raise MicrotError(f"{graph.describe(op)}: int8 {role} '{t.name}' has no quantization "
                                  "parameters", REEXPORT_HINT)
        check_op(graph, op)
    for idx in graph.inputs + graph.outputs:
        t = graph.t(idx)
        if t.dtype not in ("int8", "float32"):
            raise MicrotError(f"{graph.name}: graph input/output '{t.name}' is {t.dtype}, not int8 or float32",
                              "set inference_input_type and inference_output_type to tf.int8 (or tf.float32)")
