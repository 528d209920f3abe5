"""Every option of each supported op that TFLite's reference kernels accept: small int8 models built
with TF (op_sweep.SWEEP), run through `infer`'s path (the generated C built for the host) and compared
byte for byte with TFLite's reference kernels (BUILTIN_REF). The whole sweep is slow; a representative
part (every MEAN / SUM form, broadcasting ADD / MUL, strides, dilations, pools) runs by default."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import read_model
from microt_deploy.compiler.host_runner import run_model
from microt_deploy.compiler.ops import lower_op

from .op_sweep import SWEEP, relu_as_requantize, with_output_quant_of_input
from .tflite_models import convert, micro_reference, random_inputs, reference

FAST = [
    "add_both_sides", "add_rank3_vs_4", "add_scalar_const", "mul_both_sides", "mul_channel_const",
    "conv_s21_same", "conv_dil21_valid", "dw_m3_same_relu", "max_2x3_s12_valid", "avg_3x2_s21_same",
    "mean_c", "mean_hc", "mean_rank3_last", "mean_transpose_last", "se_two_step", "sum_h",
    "concat_rank3_axis1", "padv2_value",
]


def _compare(name, path, oracles, samples=5):
    inputs = random_inputs(path, samples, seed=len(name))
    ours = run_model(path, inputs)
    for oracle in oracles:
        ref = oracle(path, inputs)
        assert len(ours) == len(ref)
        for o, r in zip(ours, ref, strict=True):
            assert o.dtype == r.dtype and o.shape == r.shape, (o.shape, r.shape)
            diff = int(np.count_nonzero(o.view(np.uint8) != r.view(np.uint8)))
            assert diff == 0, f"{name}: {diff} of {r.nbytes} bytes differ from {oracle.__name__}"


def _check(name, model_dir):
    recipe, args = SWEEP[name]
    fn, shapes, code = recipe(name, *args)
    path = convert(fn, shapes, model_dir, f"sweep_{name}")
    assert code in {op.code for op in read_model(path).ops}, "the model does not exercise the op"
    # TF 2.19's BUILTIN_REF int8 SUM writes garbage (mostly -1, measured); tflite-micro's reference
    # kernel (the same QuantizedMeanOrSum arithmetic) agrees with the exact sum: SUM is checked on it.
    oracles = [micro_reference] if code == "SUM" else [reference]
    _compare(name, path, oracles)
    return path


@pytest.mark.parametrize("name", FAST)
def test_op_option(name, model_dir):
    _check(name, model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(SWEEP) - set(FAST)))
def test_op_option_sweep(name, model_dir):
    _check(name, model_dir)


@pytest.mark.parametrize("name", ["mean_c", "mean_hw_keep"])
def test_mean_with_equal_input_output_quantization(name, model_dir):
    """Equal input and output parameters (patched into the model) take the same folded path in TF 2.19's
    reference: a truncating integer mean would differ on about half of the outputs."""
    recipe, args = SWEEP[name]
    fn, shapes, _ = recipe(name, *args)
    path = with_output_quant_of_input(convert(fn, shapes, model_dir, f"sweep_{name}"), "MEAN")
    graph = read_model(path)
    (op,) = [op for op in graph.ops if op.code == "MEAN"]
    x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
    assert (x.qscale, x.qzero) == (y.qscale, y.qzero)
    _compare(name, path, [reference, micro_reference], samples=8)


def test_reductions_run_one_kernel(model_dir):
    """Every axis set runs the one kernel mdt_reduce; an H x W mean of NHWC sums one run of H * W elements,
    in_c apart, per output (the reduced axes merged and innermost: what its own kernel mdt_mean_hw did)."""
    layers = {}
    for name in ("mean_hw_keep", "mean_c", "se_two_step", "sum_h"):
        recipe, args = SWEEP[name]
        fn, shapes, code = recipe(name, *args)
        graph = read_model(convert(fn, shapes, model_dir, f"sweep_{name}"))
        layers[name] = [lower_op(graph, op) for op in graph.ops if op.code in ("MEAN", "SUM")]
    assert {name: [la.kernel for la in ls] for name, ls in layers.items()} == {
        "mean_hw_keep": ["mdt_reduce"], "mean_c": ["mdt_reduce"], "se_two_step": ["mdt_reduce", "mdt_reduce"],
        "sum_h": ["mdt_reduce"]}
    (hw,) = layers["mean_hw_keep"]
    _, h, w, c = SWEEP["mean_hw_keep"][1][1]
    assert hw.fields["red_dims"] == [1, h * w] and hw.fields["red_strides"] == [0, c]
    assert hw.fields["out_dims"] == [1, c] and hw.fields["out_strides"] == [0, 1]


def test_int8_requantize(model_dir):
    """QUANTIZE int8 -> int8 (a requantize between two parameter sets)."""
    recipe, args = SWEEP["relu_standalone"]
    fn, shapes, _ = recipe("relu_standalone", *args)
    path = relu_as_requantize(convert(fn, shapes, model_dir, "sweep_relu_standalone"))
    graph = read_model(path)
    (op,) = [op for op in graph.ops if op.code == "QUANTIZE"]
    assert graph.t(op.inputs[0]).dtype == graph.t(op.outputs[0]).dtype == "int8"
    assert graph.t(op.inputs[0]).qscale != graph.t(op.outputs[0]).qscale
    _compare("requantize", path, [reference, micro_reference], samples=6)


def test_sweeps_cover_every_supported_op():
    """Every op of the one list has option cases here or in the added-op cases (op_cases_more)."""
    from microt_deploy.compiler.supported import SUPPORTED_OPS

    from .op_cases_more import MORE_CASES

    covered = {recipe(name, *args)[2] for name, (recipe, args) in SWEEP.items()}
    covered |= {op for _, _, op in MORE_CASES.values()} | {"QUANTIZE"}  # int8: test_int8_requantize
    assert set(SUPPORTED_OPS) - covered == set()
