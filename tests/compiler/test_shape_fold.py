"""Keras Reshape / Flatten layers (a free batch dimension) reach TFLite as SHAPE -> STRIDED_SLICE ->
PACK feeding RESHAPE's shape (Keras MobileNet's head, MobileNetV3 / EfficientNet squeeze-and-excitation
blocks): compiler/shape_fold.py evaluates them into constants, the model compiles and its output is
TFLite's reference kernels' byte for byte. Keras 2 (tf_keras) also leaves the flattening Reshape's
output dynamic ([-1, -1], a [1, 1] placeholder shape): once its shape input is folded, the reader gives
it the static shape TFLite's RESHAPE computes."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import read_model
from microt_deploy.compiler.host_runner import run_model

from .keras_models import convert_keras, dynamic_tensors, op_names
from .tflite_models import random_inputs, reference

SE_BLOCK_AND_FLATTEN = """
def build():
    inp = tf.keras.Input((8, 8, 4))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    s = layers.GlobalAveragePooling2D()(x)
    s = layers.Reshape((1, 1, 8))(s)  # squeeze-and-excitation: the channel weights as a 1x1 map
    s = layers.Conv2D(8, 1, activation="sigmoid")(s)
    x = layers.Multiply()([x, s])
    x = layers.Conv2D(4, 3, strides=2, padding="same")(x)
    x = layers.Reshape((-1,))(x)  # MobileNet's head: a Reshape with the batch left free
    return tf.keras.Model(inp, layers.Dense(6)(x))
"""


@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "tf_keras"])
def test_keras_reshapes_fold_and_run_bit_exact(model_dir, legacy):
    path = convert_keras(SE_BLOCK_AND_FLATTEN, model_dir / f"keras_se_flatten_{legacy}.tflite", legacy=legacy)
    # Keras 2 writes the flattening Reshape's output as dynamic, Keras 3 as static
    assert bool(dynamic_tensors(path)) == legacy, dynamic_tensors(path)
    raw = op_names(path)
    assert {"SHAPE", "STRIDED_SLICE", "PACK"} <= set(raw), raw  # what the converter wrote
    graph = read_model(path)
    codes = [op.code for op in graph.ops]
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(codes) and codes.count("RESHAPE") == raw.count("RESHAPE")
    inputs = random_inputs(path, 3, seed=5)
    ours, ref = run_model(path, inputs)[0], reference(path, inputs)[0]
    assert ours.shape == ref.shape and np.array_equal(ours, ref), f"{int(np.count_nonzero(ours != ref))} bytes differ"
