"""A sweep of the options each supported op takes, as small int8 models built with TF: each recipe
returns (fn, input_shapes, the op the model must contain). Used by test_op_options.py."""

from __future__ import annotations

from .op_cases import _act
from .tflite_models import tf, weights


def _conv(name, shape, cout, k, strides, padding, dil, act, bias=True):
    kh, kw = k
    wt, b = weights(name, (kh, kw, shape[3], cout)), weights(name + "b", (cout,))

    def fn(x):
        y = tf().nn.conv2d(x, wt, strides=[1, *strides, 1], padding=padding, dilations=dil)
        return _act(y + b if bias else y, act)

    return fn, [shape], "CONV_2D"


def _dw(name, shape, mult, k, strides, padding, dil, act):
    kh, kw = k
    wt, b = weights(name, (kh, kw, shape[3], mult)), weights(name + "b", (shape[3] * mult,))

    def fn(x):
        y = tf().nn.depthwise_conv2d(x, wt, strides=[1, *strides, 1], padding=padding, dilations=dil)
        return _act(y + b, act)

    return fn, [shape], "DEPTHWISE_CONV_2D"


def _pool(name, kind, shape, k, strides, padding, act):
    def fn(x):
        f = tf().nn.max_pool2d if kind == "max" else tf().nn.avg_pool2d
        return _act(f(x, list(k), list(strides), padding), act)

    return fn, [shape], "MAX_POOL_2D" if kind == "max" else "AVERAGE_POOL_2D"


def _dense(name, shape, n_out, act, keep=False):
    wt, b = weights(name, (shape[-1], n_out), 0.2), weights(name + "b", (n_out,))

    def fn(x):
        return _act(tf().matmul(x, wt) + b, act)

    return fn, [shape], "FULLY_CONNECTED"


def _binary(name, op, sa, sb, act, const_b=False):
    code = "ADD" if op == "add" else "MUL"
    if const_b:
        c = weights(name, sb, 1.0)

        def fn(a):
            return _act(tf().add(a, c) if op == "add" else tf().multiply(a, c), act)

        return fn, [sa], code

    def fn2(a, b):
        return _act(tf().add(a, b) if op == "add" else tf().multiply(a, b), act)

    return fn2, [sa, sb], code


def _reduce(name, op, shape, axes, keep, pre_conv=False, post_relu=False):
    code = "MEAN" if op == "mean" else "SUM"
    wt = weights(name, (1, 1, shape[-1], shape[-1])) if pre_conv else None

    def fn(x):
        t = tf()
        if pre_conv:
            x = t.nn.conv2d(x, wt, strides=1, padding="VALID")
        f = t.reduce_mean if op == "mean" else t.reduce_sum
        y = f(x, axis=list(axes), keepdims=keep)
        return t.nn.relu(y) if post_relu else y

    return fn, [shape], code


def _transpose_mean(name, shape, perm, axes, keep):
    def fn(x):
        t = tf()
        return t.reduce_mean(t.transpose(x, perm), axis=list(axes), keepdims=keep)

    return fn, [shape], "MEAN"


def _se_block(name, shape, two_step):
    """Squeeze-and-excitation: average H and W (in one or two MEANs), two dense layers, scale."""
    c = shape[-1]
    w1, w2 = weights(name + "1", (c, max(c // 2, 1))), weights(name + "2", (max(c // 2, 1), c))

    def fn(x):
        t = tf()
        if two_step:
            s = t.reduce_mean(t.reduce_mean(x, axis=1, keepdims=True), axis=2, keepdims=True)
        else:
            s = t.reduce_mean(x, axis=[1, 2], keepdims=True)
        s = t.reshape(s, [1, c])
        s = t.sigmoid(t.matmul(t.nn.relu(t.matmul(s, w1)), w2))
        return x * t.reshape(s, [1, 1, 1, c])

    return fn, [shape], "MEAN"


def _reshape(name, shape, new_shape):
    def fn(x):
        return tf().nn.relu(tf().reshape(tf().nn.relu(x), new_shape))

    return fn, [shape], "RESHAPE"


def _concat(name, shapes, axis, act=None):
    def fn(*xs):
        y = tf().concat(list(xs), axis=axis)
        return tf().nn.relu(y) if act else y

    return fn, list(shapes), "CONCATENATION"


def _pad(name, shape, pads, value=None):
    def fn(x):
        t = tf()
        if value is None:
            return t.pad(x, pads)
        return t.pad(x, pads, constant_values=value)

    return fn, [shape], "PAD" if value is None else "PADV2"


def _softmax(name, shape, beta):
    def fn(x):
        return tf().nn.softmax(x * beta)

    return fn, [shape], "SOFTMAX"


def _relu_standalone(name, shape, kind):
    """A RELU the converter cannot fuse (after a CONCATENATION of a tensor with itself)."""
    def fn(x):
        t = tf()
        y = t.concat([x, x * 0.5], axis=-1)
        return {"relu": t.nn.relu, "relu6": t.nn.relu6, "relu1": lambda v: t.clip_by_value(v, -1.0, 1.0)}[kind](y)

    return fn, [shape], {"relu": "RELU", "relu6": "RELU6", "relu1": "RELU_N1_TO_1"}[kind]


def _square(name, shape):
    return (lambda x: tf().multiply(x, x)), [shape], "MUL"


def _concat_const(name, shape, axis):
    c = weights(name, (*shape[:-1], 2), 1.0)
    return (lambda x: tf().concat([x, c], axis=axis)), [shape], "CONCATENATION"


def _transpose(name, shape, perm):
    return (lambda x: tf().transpose(x, perm)), [shape], "TRANSPOSE"


S = (1, 7, 6, 4)

SWEEP = {
    # CONV_2D: strides (also unequal), paddings, dilations (also unequal), activations, kernels, no bias
    "conv_s1_same_none": (_conv, (S, 3, (3, 3), (1, 1), "SAME", (1, 1), "none")),
    "conv_s2_valid_relu": (_conv, (S, 5, (3, 3), (2, 2), "VALID", (1, 1), "relu")),
    "conv_s3_same_relu6": (_conv, ((1, 10, 11, 3), 4, (3, 3), (3, 3), "SAME", (1, 1), "relu6")),
    "conv_s21_same": (_conv, (S, 3, (3, 3), (2, 1), "SAME", (1, 1), "none")),
    "conv_s12_valid": (_conv, (S, 3, (2, 3), (1, 2), "VALID", (1, 1), "relu")),
    "conv_dil2_same": (_conv, ((1, 9, 9, 2), 3, (3, 3), (1, 1), "SAME", (2, 2), "relu6")),
    "conv_dil21_valid": (_conv, ((1, 9, 9, 2), 3, (3, 2), (1, 1), "VALID", (2, 1), "none")),
    "conv_1x5_same": (_conv, (S, 2, (1, 5), (1, 1), "SAME", (1, 1), "none")),
    "conv_even_k_same_s2": (_conv, ((1, 8, 8, 3), 4, (4, 4), (2, 2), "SAME", (1, 1), "relu")),
    "conv_no_bias": (_conv, (S, 3, (3, 3), (1, 1), "SAME", (1, 1), "none", False)),
    "conv_k_eq_input": (_conv, ((1, 5, 5, 2), 6, (5, 5), (1, 1), "VALID", (1, 1), "none")),
    # DEPTHWISE_CONV_2D
    "dw_m1_s1_same": (_dw, (S, 1, (3, 3), (1, 1), "SAME", (1, 1), "relu6")),
    "dw_m2_s2_valid": (_dw, (S, 2, (3, 3), (2, 2), "VALID", (1, 1), "none")),
    "dw_m3_same_relu": (_dw, ((1, 5, 5, 2), 3, (3, 3), (1, 1), "SAME", (1, 1), "relu")),
    "dw_s21_same": (_dw, (S, 1, (3, 3), (2, 1), "SAME", (1, 1), "none")),
    "dw_dil2_same": (_dw, ((1, 9, 9, 3), 1, (3, 3), (1, 1), "SAME", (2, 2), "relu6")),
    "dw_5x3_valid": (_dw, ((1, 8, 6, 3), 1, (5, 3), (1, 1), "VALID", (1, 1), "none")),
    "dw_c1_m4": (_dw, ((1, 6, 6, 1), 4, (3, 3), (1, 1), "SAME", (1, 1), "none")),
    # pooling: sizes, strides, paddings, activations
    "avg_2x2_s2_valid": (_pool, ("avg", S, (2, 2), (2, 2), "VALID", "none")),
    "avg_3x3_s1_same": (_pool, ("avg", S, (3, 3), (1, 1), "SAME", "relu")),
    "avg_3x2_s21_same": (_pool, ("avg", S, (3, 2), (2, 1), "SAME", "relu6")),
    "avg_global": (_pool, ("avg", S, (7, 6), (1, 1), "VALID", "none")),
    "max_3x3_s2_same": (_pool, ("max", S, (3, 3), (2, 2), "SAME", "none")),
    "max_2x3_s12_valid": (_pool, ("max", S, (2, 3), (1, 2), "VALID", "relu")),
    "max_relu6": (_pool, ("max", S, (2, 2), (2, 2), "SAME", "relu6")),
    # FULLY_CONNECTED
    "fc_relu6": (_dense, ((1, 12), 5, "relu6")),
    "fc_3d_keep": (_dense, ((1, 3, 12), 5, "relu")),
    "fc_4d": (_dense, ((1, 2, 3, 8), 4, "none")),
    # ADD / MUL broadcasting: scalars, per-channel, rows, columns, lower ranks, both sides
    "add_scalar_const": (_binary, ("add", S, (), "none", True)),
    "add_channel_const": (_binary, ("add", S, (4,), "relu", True)),
    "add_1x1x1xc": (_binary, ("add", S, (1, 1, 1, 4), "none")),
    "add_h11": (_binary, ("add", S, (1, 7, 1, 1), "relu6")),
    "add_both_sides": (_binary, ("add", (1, 7, 1, 4), (1, 1, 6, 4), "none")),
    "add_both_sides_c": (_binary, ("add", (1, 1, 6, 1), (1, 7, 1, 4), "relu")),
    "add_rank2": (_binary, ("add", (1, 5), (1, 1), "none")),
    "add_rank3": (_binary, ("add", (1, 3, 5), (1, 3, 1), "none")),
    "add_rank3_vs_4": (_binary, ("add", (1, 4, 3, 5), (1, 3, 5), "none")),
    "add_same_input": (_binary, ("add", S, S, "relu")),
    "mul_scalar_const": (_binary, ("mul", S, (), "none", True)),
    "mul_channel_const": (_binary, ("mul", S, (4,), "none", True)),
    "mul_both_sides": (_binary, ("mul", (1, 7, 1, 4), (1, 1, 6, 1), "relu")),
    "mul_rank2": (_binary, ("mul", (1, 6), (1, 6), "relu6")),
    "mul_rank3": (_binary, ("mul", (1, 1, 5), (1, 3, 5), "none")),
    # MEAN / SUM over any axes, keep_dims or not
    "mean_hw_keep": (_reduce, ("mean", S, (1, 2), True, True)),
    "mean_hw_flat_relu": (_reduce, ("mean", S, (1, 2), False, True, True)),
    "mean_h": (_reduce, ("mean", S, (1,), False, True)),
    "mean_w_keep": (_reduce, ("mean", S, (2,), True, True)),
    "mean_c": (_reduce, ("mean", S, (3,), False)),
    "mean_c_keep": (_reduce, ("mean", S, (-1,), True)),
    "mean_hc": (_reduce, ("mean", S, (1, 3), True, True)),
    "mean_hwc": (_reduce, ("mean", S, (1, 2, 3), False)),
    "mean_neg_axes": (_reduce, ("mean", S, (-3, -2), False, True)),
    "mean_rank3_last": (_reduce, ("mean", (1, 5, 6), (2,), False)),
    "mean_rank2": (_reduce, ("mean", (1, 9), (1,), True)),
    "mean_same_quant_c": (_reduce, ("mean", S, (3,), False, False, False)),
    "mean_transpose_last": (_transpose_mean, (S, (0, 3, 1, 2), (3,), False)),
    "mean_transpose_last_keep": (_transpose_mean, (S, (0, 2, 3, 1), (-1,), True)),
    "se_one_step": (_se_block, ((1, 5, 4, 6), False)),
    "se_two_step": (_se_block, ((1, 5, 4, 6), True)),
    "sum_hw": (_reduce, ("sum", S, (1, 2), False)),
    "sum_c_keep": (_reduce, ("sum", S, (3,), True)),
    "sum_h": (_reduce, ("sum", S, (1,), False, True)),
    # shape ops
    "reshape_flat": (_reshape, (S, [1, 168])),
    "reshape_4d_3d": (_reshape, (S, [1, 42, 4])),
    "reshape_2d_4d": (_reshape, ((1, 24), [1, 2, 3, 4])),
    "transpose_0213": (_transpose, (S, (0, 2, 1, 3))),
    "transpose_rank3": (_transpose, ((1, 3, 4), (0, 2, 1))),
    "concat_axis1": (_concat, (((1, 2, 6, 4), (1, 3, 6, 4)), 1)),
    "concat_axis2": (_concat, (((1, 7, 2, 4), (1, 7, 1, 4)), 2)),
    "concat_neg1": (_concat, (((1, 7, 6, 2), (1, 7, 6, 3)), -1)),
    "concat_rank2": (_concat, (((1, 3), (1, 5), (1, 2)), 1)),
    "concat_rank3_axis1": (_concat, (((1, 2, 5), (1, 4, 5)), 1)),
    "concat_relu": (_concat, (((1, 4, 4, 2), (1, 4, 4, 3)), 3, True)),
    "pad_hw": (_pad, (S, [[0, 0], [1, 2], [0, 1], [0, 0]])),
    "pad_c": (_pad, (S, [[0, 0], [0, 0], [0, 0], [1, 3]])),
    "pad_rank2": (_pad, ((1, 6), [[0, 0], [2, 1]])),
    "padv2_value": (_pad, (S, [[0, 0], [1, 1], [1, 1], [0, 0]], 0.75)),
    "softmax_4d": (_softmax, ((1, 3, 4, 5), 1.0)),
    "softmax_beta": (_softmax, ((1, 10), 2.5)),
    "mul_square": (_square, (S,)),
    "concat_const": (_concat_const, (S, 3)),
    "avg_3x3_on_2x2_same": (_pool, ("avg", (1, 2, 2, 3), (3, 3), (1, 1), "SAME", "none")),
    "max_3x3_on_2x2_same_s2": (_pool, ("max", (1, 2, 2, 3), (3, 3), (2, 2), "SAME", "none")),
    "conv_1x1_s2": (_conv, (S, 6, (1, 1), (2, 2), "SAME", (1, 1), "relu")),
    "mean_all_axes": (_reduce, ("mean", S, (0, 1, 2, 3), True)),
    "mean_batch_axis_keep": (_reduce, ("mean", S, (0, 3), True, True)),
    "mean_repeated_axes": (_reduce, ("mean", S, (2, -2, 1), True, True)),
    "sum_all_axes": (_reduce, ("sum", S, (0, 1, 2, 3), True)),
    "pad_rank3": (_pad, ((1, 4, 5), [[0, 0], [1, 0], [2, 2]])),
    "relu_standalone": (_relu_standalone, ((1, 4, 4, 3), "relu")),
    "relu6_standalone": (_relu_standalone, ((1, 4, 4, 3), "relu6")),
    "relu1_standalone": (_relu_standalone, ((1, 4, 4, 3), "relu1")),
}


def with_output_quant_of_input(path, op_code: str):
    """A copy of the model whose ``op_code`` op's output takes its input's scale and zero point
    (patched in the flatbuffer): the reference's equal-quantization path, which the converter rarely
    produces for MEAN / SUM."""
    import struct

    import tflite

    out = path.with_name(path.stem + "_samequant.tflite")
    buf = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(bytes(buf), 0)
    sub = model.Subgraphs(0)
    for k in range(sub.OperatorsLength()):
        op = sub.Operators(k)
        oc = model.OperatorCodes(op.OpcodeIndex())
        if tflite.BuiltinOperator.__dict__[op_code] != max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()):
            continue
        src, dst = sub.Tensors(op.Inputs(0)).Quantization(), sub.Tensors(op.Outputs(0)).Quantization()
        for field, fmt, value in ((8, "<f", src.Scale(0)), (10, "<q", src.ZeroPoint(0))):
            struct.pack_into(fmt, buf, dst._tab.Vector(dst._tab.Offset(field)), value)
    out.write_bytes(bytes(buf))
    return out


def relu_as_requantize(path):
    """A copy of the model whose RELU ops are int8 -> int8 QUANTIZE ops (a requantize from the input's
    parameters to the output's, patched in the flatbuffer): the converter emits them only in some graphs."""
    import struct

    import tflite

    out = path.with_name(path.stem + "_requant.tflite")
    buf = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(bytes(buf), 0)
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        if max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) != tflite.BuiltinOperator.RELU:
            continue
        for field, fmt in ((4, "<b"), (10, "<i")):  # deprecated_builtin_code, builtin_code
            off = oc._tab.Offset(field)
            if off:
                struct.pack_into(fmt, buf, oc._tab.Pos + off, tflite.BuiltinOperator.QUANTIZE)
    out.write_bytes(bytes(buf))
    return out
