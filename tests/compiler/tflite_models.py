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
            float_output: bool = False, seed: int = 0) -> Path:
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
                yield [rng.normal(0, 1.5, size=(1, *s[1:])).astype(np.float32) for s in input_shapes]

        conv.optimizations = [t.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = t.int8
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
    return [rng.integers(-128, 128, size=(batch, *d["shape"][1:]), dtype=np.int8)
            for d in interp.get_input_details()]


def weights(seed_text: str, shape: tuple[int, ...], scale: float = 0.3) -> np.ndarray:
    seed = int(hashlib.sha256(seed_text.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).normal(0, scale, size=shape).astype(np.float32)
