"""Test helpers: tiny full-int8 TFLite models built with TF in the test session, and TFLite's
reference interpreter (BUILTIN_REF) as the oracle."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def tf():
    import tensorflow

    return tensorflow


def convert(fn, input_shapes: list[tuple[int, ...]], out_dir: Path, name: str, *, quantize: bool = True,
            float_output: bool = False, float_input: bool = False, seed: int = 0, spread: float = 1.5) -> Path:
    """Convert ``fn`` (float tensors -> tensor) to a .tflite in ``out_dir`` (cached by ``name``)."""
    path = out_dir / f"{name}.tflite"
    if path.exists():
        return path
    t = tf()
    spec = [t.TensorSpec([1, *s[1:]], t.float32) for s in input_shapes]
    concrete = t.function(fn, input_signature=spec).get_concrete_function()
    conv = t.lite.TFLiteConverter.from_concrete_functions([concrete])
    if quantize:
        rng = np.random.default_rng(seed)

        def rep():
            for _ in range(24):
                yield [rng.normal(0, spread, size=(1, *s[1:])).astype(np.float32) for s in input_shapes]

        conv.optimizations = [t.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = t.float32 if float_input else t.int8
        conv.inference_output_type = t.float32 if float_output else t.int8
    path.write_bytes(conv.convert())
    return path


def reference(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run a batch (axis 0) through TFLite's reference kernels, one sample at a time."""
    t = tf()
    interp = t.lite.Interpreter(model_path=str(path),
                                experimental_op_resolver_type=t.lite.experimental.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    batch = inputs[0].shape[0]
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for b in range(batch):
        for d, x in zip(ins, inputs, strict=True):
            interp.set_tensor(d["index"], x[b:b + 1])
        interp.invoke()
        for r, d in zip(results, outs, strict=True):
            r.append(interp.get_tensor(d["index"]).copy())
    return [np.concatenate(r) for r in results]


def random_inputs(path: Path, batch: int, seed: int) -> list[np.ndarray]:
    t = tf()
    interp = t.lite.Interpreter(model_path=str(path))
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 2.0, size=(batch, *d["shape"][1:])).astype(np.float32) if d["dtype"] == np.float32
            else rng.integers(-128, 128, size=(batch, *d["shape"][1:]), dtype=np.int8)
            for d in interp.get_input_details()]


def micro_reference(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The second oracle: the tflite-micro interpreter (its reference kernels), one sample at a time."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(Path(path).read_bytes())
    n_out = len(tf().lite.Interpreter(model_path=str(path)).get_output_details())
    results: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for b in range(inputs[0].shape[0]):
        for i, x in enumerate(inputs):
            interp.set_input(x[b:b + 1], i)
        interp.invoke()
        for j, r in enumerate(results):
            r.append(np.array(interp.get_output(j)))
    return [np.concatenate(r) for r in results]


def weights(seed_text: str, shape: tuple[int, ...], scale: float = 0.3) -> np.ndarray:
    seed = int(hashlib.sha256(seed_text.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).normal(0, scale, size=shape).astype(np.float32)


def reshape_to_squeeze(path: Path) -> Path:
    """The converter always lowers tf.squeeze to RESHAPE; turn a model's RESHAPE ops whose output drops
    only size-1 dims into SQUEEZE ops (no options: squeeze every 1) by patching the flatbuffer in place."""
    import struct

    import tflite

    out = path.with_name(path.stem + "_squeeze.tflite")
    buf = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(bytes(buf), 0)
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        if max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) != tflite.BuiltinOperator.RESHAPE:
            continue
        for field, fmt in ((4, "<b"), (10, "<i")):  # deprecated_builtin_code, builtin_code
            off = oc._tab.Offset(field)
            if off:
                struct.pack_into(fmt, buf, oc._tab.Pos + off, tflite.BuiltinOperator.SQUEEZE)
        sub = model.Subgraphs(0)
        for k in range(sub.OperatorsLength()):
            op = sub.Operators(k)
            if op.OpcodeIndex() == i and op.InputsLength() > 1:  # SQUEEZE takes one input
                start = op._tab.Vector(op._tab.Offset(6))
                struct.pack_into("<I", buf, start - 4, 1)
    out.write_bytes(bytes(buf))
    return out
