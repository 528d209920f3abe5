"""Model recipes for the ops added after the first kernel set (MUL, SQUEEZE, TRANSPOSE,
CONCATENATION, LOGISTIC, HARD_SWISH, RESIZE_NEAREST_NEIGHBOR, float32 I/O, FULLY_CONNECTED
keep_num_dims / no bias) and their random sweep. Each recipe returns (fn, input_shapes, options)."""

from __future__ import annotations

import random

from .op_cases import _act
from .tflite_models import tf, weights


def mul(name, shape_a, shape_b, act):
    return (lambda a, b: _act(tf().multiply(a, b), act)), [shape_a, shape_b], {}


def mul_const(name, shape, cshape):
    c = weights(name, cshape, 1.0)
    return (lambda x: tf().multiply(x, c)), [shape], {}


def squeeze(name, h, c):
    wt = weights(name, (1, 1, c, c))

    def fn(x):
        t = tf()
        y = t.nn.relu(t.nn.conv2d(x, wt, strides=1, padding="VALID"))
        return t.reshape(y, [h, c])  # patched into SQUEEZE (see tflite_models.reshape_to_squeeze)

    return fn, [(1, 1, h, c)], {"squeeze": True}


def transpose(name, shape, perm):
    return (lambda x: tf().transpose(x, perm)), [shape], {}


def concat(name, shapes, axis):
    def fn(*xs):
        return tf().concat(list(xs), axis=axis)

    return fn, list(shapes), {}


def logistic(name, n, spread):
    return (lambda x: tf().sigmoid(x)), [(1, n)], {"spread": spread}


def hard_swish(name, shape, spread):
    def fn(x):
        t = tf()
        return x * t.nn.relu6(x + 3.0) * (1.0 / 6.0)

    return fn, [shape], {"spread": spread}


def resize(name, h, w, c, oh, ow, align_corners, half_pixel):
    def fn(x):
        t = tf()
        return t.compat.v1.image.resize_nearest_neighbor(x, [oh, ow], align_corners=align_corners,
                                                         half_pixel_centers=half_pixel)

    return fn, [(1, h, w, c)], {}


def float_io(name, h, w, c):
    wt = weights(name, (3, 3, c, 4))

    def fn(x):
        t = tf()
        return t.nn.relu(t.nn.conv2d(x, wt, strides=1, padding="SAME"))

    return fn, [(1, h, w, c)], {"float_input": True, "float_output": True}


def dense_3d(name, rows, n_in, n_out, bias):
    wt, b = weights(name, (n_in, n_out), 0.2), weights(name + "b", (n_out,))

    def fn(x):
        t = tf()
        y = t.matmul(x, wt)
        return y + b if bias else y

    return fn, [(1, rows, n_in)], {}


MORE_CASES = {
    "mul_same": (mul, ((1, 4, 5, 3), (1, 4, 5, 3), "none"), "MUL"),
    "mul_broadcast_relu": (mul, ((1, 4, 5, 3), (1, 1, 1, 3), "relu"), "MUL"),
    "mul_const_rows": (mul_const, ((1, 6, 4, 2), (1, 6, 1, 1)), "MUL"),
    "squeeze_h": (squeeze, (6, 5), "SQUEEZE"),
    "transpose_nchw": (transpose, ((1, 4, 5, 3), (0, 3, 1, 2)), "TRANSPOSE"),
    "transpose_3d": (transpose, ((1, 3, 7), (2, 0, 1)), "TRANSPOSE"),
    "concat_channels": (concat, (((1, 4, 4, 3), (1, 4, 4, 5)), 3), "CONCATENATION"),
    "concat_rows3": (concat, (((1, 2, 4, 3), (1, 3, 4, 3), (1, 1, 4, 3)), 1), "CONCATENATION"),
    "logistic": (logistic, (40, 3.0), "LOGISTIC"),
    "logistic_narrow": (logistic, (24, 0.2), "LOGISTIC"),
    "hard_swish": (hard_swish, ((1, 6, 5, 4), 3.0), "HARD_SWISH"),
    "hard_swish_wide": (hard_swish, ((1, 50), 20.0), "HARD_SWISH"),
    "resize_x2": (resize, (4, 5, 3, 8, 10, False, False), "RESIZE_NEAREST_NEIGHBOR"),
    "resize_half_pixel": (resize, (5, 4, 2, 7, 9, False, True), "RESIZE_NEAREST_NEIGHBOR"),
    "resize_align": (resize, (5, 6, 2, 9, 4, True, False), "RESIZE_NEAREST_NEIGHBOR"),
    "float_io_conv": (float_io, (6, 6, 3), "DEQUANTIZE"),
    "dense_keep_dims": (dense_3d, (4, 12, 6, True), "FULLY_CONNECTED"),
    "dense_no_bias": (dense_3d, (1, 16, 5, False), "FULLY_CONNECTED"),
}


def more_random_cases(count: int, seed: int = 4321) -> dict:
    """Random shapes, axes, permutations, sizes and input ranges (tiny to huge scales) per new op."""
    rnd = random.Random(seed)
    cases = {}
    kinds = ["mul", "transpose", "concat", "logistic", "hard_swish", "resize", "float_io"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        h, w, c = rnd.randint(1, 7), rnd.randint(1, 7), rnd.randint(1, 6)
        shape = (1, h, w, c)
        name = f"more{i}_{kind}"
        if kind == "mul":
            b = tuple(d if rnd.random() < 0.5 else 1 for d in shape)
            a, b = (shape, b) if rnd.random() < 0.5 else (b, shape)
            cases[name] = (mul, (a, b, rnd.choice(["none", "relu", "relu6"])), "MUL")
        elif kind == "transpose":
            perm = [0, 1, 2, 3]
            while perm == [0, 1, 2, 3]:
                perm = [0, *rnd.sample([1, 2, 3], 3)]
            cases[name] = (transpose, (shape, tuple(perm)), "TRANSPOSE")
        elif kind == "concat":
            axis = rnd.choice([1, 2, 3])
            parts = []
            for _ in range(rnd.randint(2, 4)):
                s = list(shape)
                s[axis] = rnd.randint(1, 4)
                parts.append(tuple(s))
            cases[name] = (concat, (tuple(parts), axis), "CONCATENATION")
        elif kind == "logistic":
            cases[name] = (logistic, (rnd.randint(1, 64), rnd.choice([0.01, 0.5, 2.0, 8.0, 100.0])), "LOGISTIC")
        elif kind == "hard_swish":
            cases[name] = (hard_swish, (shape, rnd.choice([0.05, 1.0, 3.0, 10.0, 60.0])), "HARD_SWISH")
        elif kind == "resize":
            align, half = rnd.choice([(False, False), (False, True), (True, False)])
            cases[name] = (resize, (h, w, c, rnd.randint(1, 12), rnd.randint(1, 12), align, half),
                           "RESIZE_NEAREST_NEIGHBOR")
        else:
            cases[name] = (float_io, (max(h, 3), max(w, 3), c), "QUANTIZE")
    return cases
