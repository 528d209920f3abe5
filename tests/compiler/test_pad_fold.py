"""PAD folded into the convolution that reads it (fuse.fold_pads): models built with TF (tf.pad then a
VALID convolution, the pattern onnx2tf writes for PyTorch's symmetric padding), compiled, run on the
host (portable kernels) and in QEMU's Cortex-M4 (DSP fast paths), every output byte equal to TFLite's
BUILTIN_REF; the plan shows the fold (no PAD layer, no padded buffer) and the cases it must refuse
keep their PAD."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import GraphSpec, compile_program, read_model
from microt_deploy.compiler.host_runner import run_model
from microt_deploy.evaluate.bench_image import PORTABLE_PATHS

from .test_dsp_qemu import ran, run_bit_exact
from .tflite_models import convert, random_inputs, reference, tf, weights


def pad_then(name, h, w, c, pads, kind, k, stride, cout=6, value=None):
    """x -> PAD(pads = top, bottom, left, right) -> conv / depthwise k x k, VALID, ReLU."""
    wt = weights(name, (k, k, c, cout) if kind == "conv" else (k, k, c, 1))

    def fn(x):
        t = tf()
        p = [[0, 0], [pads[0], pads[1]], [pads[2], pads[3]], [0, 0]]
        y = t.pad(x, p) if value is None else t.pad(x, p, constant_values=value)
        if kind == "conv":
            y = t.nn.conv2d(y, wt, strides=stride, padding="VALID")
        else:
            y = t.nn.depthwise_conv2d(y, wt, strides=[1, stride, stride, 1], padding="VALID")
        return t.nn.relu(y + weights(name + "b", (y.shape[-1],)))

    return fn, [(1, h, w, c)]


def pad_two_readers(name, h, w, c):
    """One PAD read by two convolutions: it must stay (folding it into one would leave the other)."""
    w1, w2 = weights(name + "1", (3, 3, c, 4)), weights(name + "2", (3, 3, c, 4))

    def fn(x):
        t = tf()
        y = t.pad(x, [[0, 0], [2, 0], [1, 1], [0, 0]])  # not SAME: the converter keeps the PAD
        return t.nn.conv2d(y, w1, 1, "VALID") + t.nn.conv2d(y, w2, 1, "VALID")

    return fn, [(1, h, w, c)]


# name: (recipe, args, folded?)
CASES = {
    # mcunet's 7x7 stride-2 depthwise: PyTorch pads 3 on every side, TFLite SAME would pad 2 / 3
    "fold_dw7_s2": (pad_then, (16, 14, 8, (3, 3, 3, 3), "dw", 7, 2), True),
    "fold_dw3_s1": (pad_then, (9, 11, 12, (2, 0, 0, 2), "dw", 3, 1), True),
    "fold_conv3_s2_rgb": (pad_then, (16, 16, 3, (1, 1, 1, 1), "conv", 3, 2), True),
    "fold_conv_asym": (pad_then, (9, 8, 8, (0, 2, 1, 0), "conv", 3, 1), True),
    "fold_conv_wide": (pad_then, (6, 7, 4, (4, 1, 3, 5), "conv", 3, 1), True),  # pads wider than the kernel
    "keep_two_readers": (pad_two_readers, (8, 8, 4), False),
    "keep_padv2_constant": (pad_then, (8, 8, 4, (1, 1, 1, 1), "conv", 3, 1, 6, 0.7), False),  # not the zp
}


def _layers_ops(plan):
    return [la["op"] for la in plan["graphs"][0]["layers"]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_pad_fold_is_exact_on_the_host(name, model_dir, tmp_path):
    recipe, args, folded = CASES[name]
    fn, shapes = recipe(name, *args)
    path = convert(fn, shapes, model_dir, name)
    assert "PAD" in {op.code for op in read_model(path).ops} or "PADV2" in {op.code for op in read_model(path).ops}
    plan = compile_program([GraphSpec(path, "net")], tmp_path)
    ops = _layers_ops(plan)
    if folded:
        assert "PAD" not in ops and any(op.startswith("PAD+") for op in ops), ops
        fold = next(la["folded_pad"] for la in plan["graphs"][0]["layers"] if la["folded_pad"])
        assert fold["pad_before"] == [args[3][0], args[3][2]]
        # the padded tensor has no buffer: only the input and the conv's output are planned
        assert fold["intermediate"] not in {t["name"] for t in plan["tensors"]}
    else:
        assert any(op.startswith("PAD") and "+" not in op for op in ops), ops
    inputs = random_inputs(path, 6, seed=len(name))
    ours, ref = run_model(path, inputs), reference(path, inputs)
    for o, r in zip(ours, ref, strict=True):
        assert int(np.count_nonzero(o != r)) == 0, f"{name}: differs from BUILTIN_REF"


@pytest.mark.parametrize("name", ["fold_dw7_s2", "fold_dw3_s1", "fold_conv3_s2_rgb", "fold_conv_asym"])
def test_pad_fold_is_exact_on_the_dsp_paths(name, model_dir, tmp_path):
    """The same folded layers through the Cortex-M4 build in QEMU: bit-exact, and run by fast paths
    (not the portable loops) with the pads the fold gave them (3 rows and columns, one-sided)."""
    recipe, args, _ = CASES[name]
    fn, shapes = recipe(name, *args)
    path = convert(fn, shapes, model_dir, name)
    run = run_bit_exact(path, tmp_path, seed=7)
    assert not ran(run) & PORTABLE_PATHS, f"{name}: the portable loop ran: {sorted(ran(run))}"
