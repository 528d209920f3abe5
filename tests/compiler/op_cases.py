"""Single-op / few-op model recipes for the bit-exactness tests: each returns (fn, input_shapes)."""

from __future__ import annotations

import random

from .tflite_models import tf, weights


def _act(x, act: str):
    t = tf()
    if act == "relu":
        return t.nn.relu(x)
    if act == "relu6":
        return t.nn.relu6(x)
    return x


def conv(name, h, w, cin, cout, k, stride, padding, dilation, act):
    wt, b = weights(name, (k, k, cin, cout)), weights(name + "b", (cout,))

    def fn(x):
        t = tf()
        y = t.nn.conv2d(x, wt, strides=stride, padding=padding, dilations=dilation) + b
        return _act(y, act)

    return fn, [(1, h, w, cin)]


def depthwise(name, h, w, cin, mult, k, stride, padding, dilation, act):
    wt, b = weights(name, (k, k, cin, mult)), weights(name + "b", (cin * mult,))

    def fn(x):
        t = tf()
        y = t.nn.depthwise_conv2d(x, wt, strides=[1, stride, stride, 1], padding=padding,
                                  dilations=[dilation, dilation]) + b
        return _act(y, act)

    return fn, [(1, h, w, cin)]


def dense(name, n_in, n_out, act, bias=True, in_shape=None):
    wt, b = weights(name, (n_in, n_out), 0.2), weights(name + "b", (n_out,))

    def fn(x):
        t = tf()
        y = t.matmul(t.reshape(x, [1, n_in]), wt)
        return _act(y + b if bias else y, act)

    return fn, [in_shape or (1, n_in)]


def add(name, shape_a, shape_b, act):
    def fn(a, b):
        t = tf()
        return _act(t.add(a, b), act)

    return fn, [shape_a, shape_b]


def pad_conv(name, h, w, c, pads):
    wt = weights(name, (3, 3, c, 4))

    def fn(x):
        t = tf()
        y = t.pad(x, [[0, 0], [pads[0], pads[1]], [pads[2], pads[3]], [0, 0]])
        return t.nn.conv2d(y, wt, strides=2, padding="VALID")

    return fn, [(1, h, w, c)]


def pad_only(name, h, w, c, pads):
    def fn(x):
        t = tf()
        return t.pad(x, [[0, 0], [pads[0], pads[1]], [pads[2], pads[3]], [0, 0]])

    return fn, [(1, h, w, c)]


def mean(name, h, w, c, keepdims, rescale):
    wt = weights(name, (1, 1, c, c))

    def fn(x):
        t = tf()
        y = t.nn.conv2d(x, wt, strides=1, padding="VALID")
        m = t.reduce_mean(y, axis=[1, 2], keepdims=keepdims)
        # a following op pulls the mean's output range away from its input's (another MEAN path)
        return t.nn.relu(m) if rescale != 1.0 else m

    return fn, [(1, h, w, c)]


def pool(name, kind, h, w, c, k, stride, padding, act):
    def fn(x):
        t = tf()
        y = (t.nn.max_pool2d if kind == "max" else t.nn.avg_pool2d)(x, k, stride, padding)
        return _act(y, act)

    return fn, [(1, h, w, c)]


def softmax(name, n, scale):
    wt = weights(name, (n, n), 0.5)

    def fn(x):
        t = tf()
        return t.nn.softmax(t.matmul(x, wt) * scale)

    return fn, [(1, n)]


def small_cnn(name):
    """A few-op chain like the exported trunk/heads: conv, depthwise, add, mean, dense, softmax."""
    w1, w2, w3 = weights(name + "1", (3, 3, 3, 8)), weights(name + "2", (3, 3, 8, 1)), weights(name + "3", (8, 5))

    def fn(x):
        t = tf()
        y = t.nn.relu6(t.nn.conv2d(x, w1, strides=2, padding="SAME"))
        z = t.nn.relu(t.nn.depthwise_conv2d(y, w2, strides=[1, 1, 1, 1], padding="SAME"))
        y = y + z
        f = t.reduce_mean(y, axis=[1, 2])
        return t.nn.softmax(t.matmul(f, w3))

    return fn, [(1, 12, 12, 3)]


FAST_CASES = {
    "conv_same_relu6": (conv, (9, 7, 3, 5, 3, 2, "SAME", 1, "relu6")),
    "conv_valid_dil2_relu": (conv, (10, 9, 4, 6, 3, 1, "VALID", 2, "relu")),
    "conv_1x1": (conv, (5, 5, 8, 16, 1, 1, "SAME", 1, "none")),
    "dw_same_s2": (depthwise, (9, 9, 6, 1, 3, 2, "SAME", 1, "relu6")),
    "dw_mult2_valid": (depthwise, (8, 7, 3, 2, 5, 1, "VALID", 1, "none")),
    "dense_relu": (dense, (20, 7, "relu")),
    "dense_from_4d": (dense, (48, 10, "none", True, (1, 4, 4, 3))),
    "add_same": (add, ((1, 5, 4, 3), (1, 5, 4, 3), "none")),
    "add_broadcast_relu": (add, ((1, 5, 4, 3), (1, 1, 1, 3), "relu")),
    "pad_conv": (pad_conv, (8, 8, 3, (1, 1, 1, 1))),
    "pad_asym": (pad_only, (5, 6, 2, (0, 2, 1, 0))),
    "mean_keepdims": (mean, (6, 5, 4, True, 1.0)),
    "mean_flat": (mean, (7, 7, 8, False, 1.0)),
    "mean_flat_rescaled": (mean, (4, 6, 5, False, 3.0)),
    "avgpool_same": (pool, ("avg", 7, 7, 3, 3, 2, "SAME", "none")),
    "maxpool_valid": (pool, ("max", 8, 6, 4, 2, 2, "VALID", "none")),
    "softmax_10": (softmax, (10, 1.0)),
    "softmax_sharp": (softmax, (16, 6.0)),
    "small_cnn": (small_cnn, ()),
}


def random_cases(count: int, seed: int = 1234) -> dict:
    """A reproducible random sweep over shapes, strides, paddings, dilations and activations."""
    rnd = random.Random(seed)
    cases = {}
    for i in range(count):
        kind = rnd.choice(["conv", "dw", "dense", "add", "pool", "mean", "pad"])
        h, w, c = rnd.randint(3, 12), rnd.randint(3, 12), rnd.randint(1, 8)
        act = rnd.choice(["none", "relu", "relu6"])
        padding = rnd.choice(["SAME", "VALID"])
        k = rnd.choice([1, 2, 3, 5])
        stride = rnd.choice([1, 2])
        dil = 1 if stride > 1 else rnd.choice([1, 2])
        if padding == "VALID":
            k = min(k, (min(h, w) - 1) // dil + 1)
        name = f"rand{i}_{kind}"
        if kind == "conv":
            cases[name] = (conv, (h, w, c, rnd.randint(1, 9), k, stride, padding, dil, act))
        elif kind == "dw":
            cases[name] = (depthwise, (h, w, c, rnd.choice([1, 2, 3]), k, stride, padding, dil, act))
        elif kind == "dense":
            cases[name] = (dense, (rnd.randint(1, 64), rnd.randint(1, 32), act, rnd.random() < 0.8))
        elif kind == "add":
            b_shape = rnd.choice([(1, h, w, c), (1, 1, 1, c), (1, h, 1, c), (1, 1, w, 1)])
            cases[name] = (add, ((1, h, w, c), b_shape, act))
        elif kind == "pool":
            kp = min(k, h, w) if padding == "VALID" else k
            cases[name] = (pool, (rnd.choice(["avg", "max"]), h, w, c, max(kp, 1), stride, padding, act))
        elif kind == "mean":
            cases[name] = (mean, (h, w, c, rnd.random() < 0.5, rnd.choice([1.0, 0.5, 4.0])))
        else:
            cases[name] = (pad_only, (h, w, c, tuple(rnd.randint(0, 3) for _ in range(4))))
    return cases
