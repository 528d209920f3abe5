"""Test helper: a tiny split int8 model built with TF in the test session (trunk / part head /
rest as three .tflite files), compiled by the real compiler, and TFLite's reference kernels as the
oracle for the device's tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PREFIX = {"trunk": "trunk", "part_head": "part_head", "rest": "rest"}


def _tf():
    import tensorflow

    return tensorflow


def _convert(tf, fn, shape: tuple[int, ...], calib: np.ndarray, path: Path) -> Path:
    concrete = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)]).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])

    def rep():
        for x in calib:
            yield [x[None]]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


def build_split_model(out_dir: Path) -> dict[str, Path]:
    """trunk: 8x8x3 -> conv3x3/2 relu6 -> 4x4x8 (split); part head: mean over H, W (global average
    pool, as exported models have it) -> FC 6; rest: conv3x3 relu -> 4x4x12 -> mean -> FC 10.
    Part head and rest are calibrated on the trunk's float output."""
    tf = _tf()
    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.normal(0, 0.4, (3, 3, 3, 8)).astype(np.float32))
    b1 = tf.constant(rng.normal(0, 0.1, 8).astype(np.float32))
    wp = tf.constant(rng.normal(0, 0.5, (8, 6)).astype(np.float32))
    w2 = tf.constant(rng.normal(0, 0.3, (3, 3, 8, 12)).astype(np.float32))
    b2 = tf.constant(rng.normal(0, 0.1, 12).astype(np.float32))
    wr = tf.constant(rng.normal(0, 0.5, (12, 10)).astype(np.float32))

    def trunk(x):
        # ReLU6 saturating on the calibration data pins the split range to exactly [0, 6] in both
        # the trunk's and the consumers' calibration, so their quantisation parameters agree.
        return tf.nn.relu6(tf.nn.conv2d(x, w1, 2, "SAME") + b1)

    def part_head(s):
        return tf.matmul(tf.reduce_mean(s, axis=[1, 2]), wp)

    def rest(s):
        h = tf.nn.relu(tf.nn.conv2d(s, w2, 1, "SAME") + b2)
        return tf.matmul(tf.reduce_mean(h, axis=[1, 2]), wr)

    out_dir.mkdir(parents=True, exist_ok=True)
    calib = rng.normal(0, 3, (32, 8, 8, 3)).astype(np.float32)
    split = np.concatenate([trunk(x[None]).numpy() for x in calib])
    return {
        "trunk": _convert(tf, trunk, (1, 8, 8, 3), calib, out_dir / "trunk.tflite"),
        "part_head": _convert(tf, part_head, (1, 4, 4, 8), split, out_dir / "part_head.tflite"),
        "rest": _convert(tf, rest, (1, 4, 4, 8), split, out_dir / "rest.tflite"),
    }


def compile_split_model(paths: dict[str, Path], compiled_dir: Path) -> dict:
    from microt_deploy.compiler import GraphSpec, compile_program

    specs = [
        GraphSpec(paths["trunk"], prefix=PREFIX["trunk"]),
        GraphSpec(paths["part_head"], prefix=PREFIX["part_head"], input_bindings={0: (PREFIX["trunk"], 0)}),
        GraphSpec(paths["rest"], prefix=PREFIX["rest"], input_bindings={0: (PREFIX["trunk"], 0)}),
    ]
    return compile_program(specs, compiled_dir)


def reference_chain(paths: dict[str, Path], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split, part and full features of one int8 input by TFLite's reference kernels, the part head
    and rest fed the trunk's very int8 output (as on the device)."""
    tf = _tf()

    def run(path: Path, inp: np.ndarray) -> np.ndarray:
        interp = tf.lite.Interpreter(model_path=str(path),
                                     experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
        interp.allocate_tensors()
        d = interp.get_input_details()[0]
        interp.set_tensor(d["index"], inp.reshape(d["shape"]).astype(np.int8))
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"]).reshape(-1)

    split = run(paths["trunk"], x)
    return split, run(paths["part_head"], split), run(paths["rest"], split)
