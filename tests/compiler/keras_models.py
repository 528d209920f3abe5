"""Test helpers: tiny Keras models converted the way Keras users convert them (from_keras_model, a free
batch dimension, full int8), for what TFLiteConverter writes only for Keras layers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .tflite_models import tf


def convert_keras(build: Callable[[], object], out: Path, seed: int = 0) -> Path:
    """``build()`` -> a tf.keras.Model; its full-int8 .tflite at ``out`` (cached)."""
    if out.exists():
        return out
    t = tf()
    t.keras.utils.set_random_seed(seed)
    model = build()
    shape = model.input_shape[1:]
    rng = np.random.default_rng(seed)

    def rep():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)]

    conv = t.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [t.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = t.int8
    out.write_bytes(conv.convert())
    return out


def op_names(path: Path) -> list[str]:
    """The builtin op names of a .tflite, read with the tflite package (not the compiler's reader)."""
    import tflite

    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    sub = model.Subgraphs(0)
    out = []
    for i in range(sub.OperatorsLength()):
        code = model.OperatorCodes(sub.Operators(i).OpcodeIndex())
        out.append(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return out
