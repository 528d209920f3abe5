"""The added ops (MUL, SQUEEZE, TRANSPOSE, CONCATENATION, LOGISTIC, HARD_SWISH, RESIZE_NEAREST_NEIGHBOR,
float32 I/O, FULLY_CONNECTED keep_num_dims / no bias): generated C vs TFLite's reference kernels and vs
the tflite-micro interpreter, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import read_model
from microt_deploy.compiler.host_runner import run_model

from .op_cases_more import MORE_CASES, more_random_cases
from .tflite_models import convert, micro_reference, random_inputs, reference, reshape_to_squeeze


def check_case(name, recipe, args, op_name, model_dir, samples=6, require_op=True) -> tuple[int, int, bool]:
    """Compare one model against both oracles; return (outputs compared, bytes compared, op present)."""
    fn, shapes, opts = recipe(name, *args)
    squeeze = opts.pop("squeeze", False)
    path = convert(fn, shapes, model_dir, name, **opts)
    if squeeze:
        path = reshape_to_squeeze(path)
    present = op_name in {op.code for op in read_model(path).ops}
    assert present or not require_op, "the model does not exercise the op"
    inputs = random_inputs(path, samples, seed=len(name))
    ours = run_model(path, inputs)
    nbytes = 0
    for oracle, label in ((reference, "BUILTIN_REF"), (micro_reference, "tflite-micro")):
        ref = oracle(path, inputs)
        assert len(ours) == len(ref)
        for o, r in zip(ours, ref, strict=True):
            assert o.dtype == r.dtype and o.shape == r.shape, (o.dtype, o.shape, r.dtype, r.shape)
            diff = int(np.count_nonzero(o.view(np.uint8) != r.view(np.uint8)))
            assert diff == 0, f"{name}: {diff} of {r.nbytes} bytes differ from {label}"
            nbytes += r.nbytes
    return len(ours) * 2, nbytes, present


@pytest.mark.parametrize("name", sorted(MORE_CASES))
def test_added_op_matches_both_oracles(name, model_dir):
    recipe, args, op_name = MORE_CASES[name]
    check_case(name, recipe, args, op_name, model_dir)


def test_float_io_model_takes_and_gives_float32(model_dir, tmp_path):
    from microt_deploy.compiler import GraphSpec, compile_program

    recipe, args, _ = MORE_CASES["float_io_conv"]
    fn, shapes, opts = recipe("float_io_conv", *args)
    path = convert(fn, shapes, model_dir, "float_io_conv", **opts)
    plan = compile_program([GraphSpec(path, "f")], tmp_path)
    header = (tmp_path / "mdt_model.h").read_text()
    assert "#define F_INPUT0_DTYPE MDT_DTYPE_FLOAT32" in header and "#define F_OUTPUT0_COUNT 144" in header
    assert plan["graphs"][0]["inputs"][0]["size"] == 4 * 108 and plan["graphs"][0]["outputs"][0]["dtype"] == "float32"
    x = random_inputs(path, 2, seed=1)[0]
    out = run_model(path, [x])[0]
    assert out.dtype == np.float32 and np.array_equal(out, reference(path, [x])[0])


@pytest.mark.slow
def test_random_sweep_added_ops_both_oracles(model_dir, capsys):
    """Many random models per added op; prints how many models and output bytes were compared."""
    cases = more_random_cases(42)
    models = outputs = nbytes = exercised = 0
    for name, (recipe, args, op_name) in sorted(cases.items()):
        # a degenerate random case may be folded by the converter (a TRANSPOSE of size-1 dims -> RESHAPE)
        n_out, n_bytes, present = check_case(name, recipe, args, op_name, model_dir, samples=3, require_op=False)
        models += 1
        outputs += n_out
        nbytes += n_bytes
        exercised += present
    with capsys.disabled():
        print(f"\nadded-op sweep: {models} models ({exercised} with the op under test), {outputs} outputs, "
              f"{nbytes} bytes equal to BUILTIN_REF and tflite-micro")
    assert models == len(cases) and exercised >= 0.8 * models
