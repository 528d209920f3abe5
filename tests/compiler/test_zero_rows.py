"""Convolutions with all-zero filter rows (pruned channels, as in the MLPerf VWW model): the compiler
marks them, the portable kernel and the Cortex-M4 fast paths skip their MACs and output the
requantised bias, and every output byte still equals TFLite's BUILTIN_REF."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import GraphSpec, compile_program
from microt_deploy.compiler.host_runner import run_model

from .op_cases import _act
from .test_dsp_qemu import _run
from .tflite_models import convert, random_inputs, reference, tf, weights


def pruned_conv(name, h, w, cin, cout, k, stride, zero, act, prune=True):
    """A conv (+ bias, activation) whose output channels in `zero` have all-zero weights."""
    wt, b = weights(name, (k, k, cin, cout)), weights(name + "b", (cout,))
    if prune:
        wt[..., list(zero)] = 0.0

    def fn(x):
        t = tf()
        return _act(t.nn.conv2d(x, wt, strides=stride, padding="SAME") + b, act)

    return fn, [(1, h, w, cin)]


# 1x1 over 20 input channels (the general path, not the small-depth one) with zero rows first, inside
# and last (35 pixels: passes of 6 and a rest of 5); 3x3 over 3 input channels (depth 27: the last
# channel carries the depth tail) with the last row zero
CASES = {
    "zr_1x1": (5, 7, 20, 10, 1, 1, (0, 4, 5, 9), "relu6"),
    "zr_3x3_c3_tail": (9, 8, 3, 8, 3, 2, (2, 7), "none"),
}


def _model(model_dir, name, prune=True):
    h, w, cin, cout, k, stride, zero, act = CASES[name]
    fn, shapes = pruned_conv(name, h, w, cin, cout, k, stride, zero, act, prune)
    return convert(fn, shapes, model_dir, name + ("" if prune else "_dense"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiler_marks_zero_rows_and_counts_live_macs(name, model_dir, tmp_path):
    path = _model(model_dir, name)
    plan = compile_program([GraphSpec(path, "net")], tmp_path / "c")
    conv = next(la for la in plan["graphs"][0]["layers"] if la["op"] == "CONV_2D")
    cout, zero = CASES[name][3], CASES[name][6]
    assert conv["live_macs"] == conv["macs"] * (cout - len(zero)) // cout
    assert plan["live_macs"] < plan["macs"]
    assert "net_l0_zero_rows" in (tmp_path / "c" / "mdt_model.c").read_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_portable_kernel_with_zero_rows_is_bit_exact(name, model_dir):
    path = _model(model_dir, name)
    inputs = random_inputs(path, batch=4, seed=11)
    for x in inputs:
        assert np.array_equal(run_model(path, [x])[0], reference(path, [x])[0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_dsp_skips_zero_rows_bit_exact_in_qemu(name, model_dir, tmp_path):
    path = _model(model_dir, name)
    x, run = _run(path, tmp_path / "pruned", seed=3)
    assert np.array_equal(run.output, reference(path, [x])[0].reshape(-1))
    _, naive = _run(path, tmp_path / "pruned", seed=3, defines=("MDT_NO_DSP",))
    assert np.array_equal(naive.output, run.output)
    # the same layer with those rows non-zero costs more: the skipped MACs are really skipped
    _, dense = _run(_model(model_dir, name, prune=False), tmp_path / "dense", seed=3)
    assert run.total < dense.total, (run.total, dense.total)
