"""Test helpers: tiny Keras models converted the way Keras users convert them (from_keras_model, a free
batch dimension, full int8), for what TFLiteConverter writes only for Keras layers. Each conversion
runs in a fresh Python process with the Keras the caller names: importing onnx2tf (the export tests do)
sets ``TF_USE_LEGACY_KERAS=1`` in this process's environment, which children inherit, and Keras 2
(tf_keras) writes a Reshape's output as dynamic where Keras 3 writes it static."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_CONVERT = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
layers = tf.keras.layers
{build}
tf.keras.utils.set_random_seed({seed})
model = build()
shape = model.input_shape[1:]
rng = np.random.default_rng({seed})
def rep():
    for _ in range(16):
        yield [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)]
conv = tf.lite.TFLiteConverter.from_keras_model(model)
conv.optimizations = [tf.lite.Optimize.DEFAULT]
conv.representative_dataset = rep
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
conv.inference_input_type = conv.inference_output_type = tf.int8
open(sys.argv[1], "wb").write(conv.convert())
"""


def convert_keras(build_source: str, out: Path, seed: int = 0, legacy: bool = False) -> Path:
    """``build_source``: Python defining ``build()`` -> a tf.keras.Model (``tf`` and ``layers`` are
    in scope); its full-int8 .tflite at ``out`` (cached), converted in a child process with Keras 3, or
    with Keras 2 (tf_keras, as TF 2.15 and older convert) when ``legacy``."""
    if out.exists():
        return out
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    res = subprocess.run([sys.executable, "-c", _CONVERT.format(build=build_source, seed=seed), str(out)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0 and out.exists(), res.stderr[-2000:]
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


def dynamic_tensors(path: Path) -> list[str]:
    """Names of the tensors whose shape signature leaves a non-batch dimension free (tflite package)."""
    import tflite

    sub = tflite.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
    names = []
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        if t.ShapeSignatureLength() and any(int(d) < 0 for d in t.ShapeSignatureAsNumpy()[1:]):
            names.append(t.Name().decode())
    return names
