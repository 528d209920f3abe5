"""Test helpers: tiny Keras models converted the way Keras users convert them (from_keras_model, a free
batch dimension, full int8), for what TFLiteConverter writes only for Keras layers. Each conversion
runs in a fresh Python process: Keras keeps global state (layer names, traced shapes) that earlier
tests of the session change, and a shape it could not infer there reaches the file as dynamic."""

from __future__ import annotations

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


def convert_keras(build_source: str, out: Path, seed: int = 0) -> Path:
    """``build_source``: Python defining ``build()`` -> a tf.keras.Model (``tf`` and ``layers`` are
    in scope); its full-int8 .tflite at ``out`` (cached), converted in a child process."""
    if out.exists():
        return out
    res = subprocess.run([sys.executable, "-c", _CONVERT.format(build=build_source, seed=seed), str(out)],
                         capture_output=True, text=True, timeout=300)
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
