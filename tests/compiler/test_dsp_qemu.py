"""The Cortex-M4 DSP fast paths (mdt_dsp.c), built with arm-none-eabi-gcc -mcpu=cortex-m4 and run in
QEMU mps2-an386: every output byte equal to TFLite's BUILTIN_REF, and the fast path really taken:
every image is built with -DMDT_PATH_TRACE (runtime/mdt_trace.h), the harness reports which kernel
paths each layer ran, and each case names the fast paths it must take (`assert_paths`: the portable
loops, which give the same bytes, fail it); also fewer retired instructions than -DMDT_NO_DSP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microt_deploy.boards import load_board
from microt_deploy.compiler import GraphSpec, compile_program
from microt_deploy.evaluate.bench import MODELS_DIR
from microt_deploy.evaluate.bench_image import PORTABLE_PATHS, render_bench, run_bench_image

from .op_cases import conv, dense, depthwise
from .tflite_models import convert, reference

# Shapes chosen to hit each branch: word im2col with padding and a partial last pixel group, few
# input channels (in_c 3: conv_nat, rows widened once; the byte im2col is fast_nat_c3_dil2_bytes),
# dilation, 1x1 (depth 8: the small-depth path), depthwise at both strides, FC with a tail and an odd
# output count; plus shapes the fast paths leave to the portable kernels (depth multiplier 2).
DSP_CASES = {
    "dsp_conv_words_pad": (conv, (9, 7, 8, 6, 3, 1, "SAME", 1, "relu")),
    "dsp_conv_bytes_s2": (conv, (9, 7, 3, 5, 3, 2, "SAME", 1, "relu6")),
    "dsp_conv_dil2": (conv, (10, 9, 4, 6, 3, 1, "VALID", 2, "none")),
    "dsp_conv_1x1": (conv, (5, 5, 8, 16, 1, 1, "SAME", 1, "none")),
    "dsp_dw_s2": (depthwise, (9, 9, 8, 1, 3, 2, "SAME", 1, "relu6")),
    "dsp_dw_s1": (depthwise, (7, 6, 12, 1, 3, 1, "SAME", 1, "none")),
    "dsp_dw_mult2_fallback": (depthwise, (6, 5, 4, 2, 3, 1, "VALID", 1, "none")),
    "dsp_dense_tail": (dense, (22, 7, "relu")),
}
# The kernel paths (runtime/mdt_trace.h) each case's layers must take, exactly (conv_chan_const: the
# general conv read the channel records the compiler wrote to flash, ops/tables.py).
CC = "conv_chan_const"
DSP_PATHS = {
    "dsp_conv_words_pad": {"conv_words", CC}, "dsp_conv_bytes_s2": {"conv_nat", CC, "conv_nat_const"},
    "dsp_conv_dil2": {"conv_words", CC},
    "dsp_conv_1x1": {"conv_small"}, "dsp_dw_s2": {"dw3_direct"}, "dsp_dw_s1": {"dw3_direct"},
    "dsp_dw_mult2_fallback": {"dw_ref"}, "dsp_dense_tail": {"fc_dsp"},
}


def _run(path: Path, work: Path, seed: int, defines: tuple[str, ...] = ()):
    """Build and run ``path`` with the kernel-path trace on (``run.paths``: per layer, the paths taken;
    one increment per kernel call, nothing per MAC)."""
    board = load_board("qemu_mps2_an386")
    plan = compile_program([GraphSpec(path, "net")], work / "c")
    shape = plan["graphs"][0]["inputs"][0]["shape"]
    x = np.random.default_rng(seed).integers(-128, 128, size=shape, dtype=np.int8)
    defines = (*defines, "MDT_PATH_TRACE")
    fw = render_bench(work / "c", plan, x, board, work / ("fw" + "".join(defines)), defines)
    run = run_bench_image(board, fw, len(plan["graphs"][0]["layers"]), limit_s=60)
    assert run.paths is not None, "the harness reported no kernel paths (built without MDT_PATH_TRACE?)"
    return x, run


def ran(run) -> set[str]:
    """Every kernel path any layer of the run took."""
    return set().union(*run.paths)


def assert_paths(run, expected: set[str], name: str = "", only: tuple[str, ...] = ()) -> None:
    """The kernel paths the run's layers took (those named ``only*`` where given: the kernel under
    test) are exactly ``expected``: a fast path that declined its layer (the portable loop then gives
    the same bytes, and shows up here) fails the case."""
    got = {p for p in ran(run) if not only or p.startswith(only)}
    fallback = sorted((got & PORTABLE_PATHS) - set(expected))
    assert got == set(expected), (f"{name}: ran kernel paths {sorted(got)}, expected {sorted(expected)}"
                                  + (f" (the portable loop {fallback} ran)" if fallback else ""))


def run_bit_exact(path: Path, work: Path, seed: int):
    """Run ``path`` in QEMU on a seeded input and assert every output byte equals BUILTIN_REF's."""
    x, run = _run(path, work, seed=seed)
    expected = reference(path, [x])[0].reshape(-1)
    assert run.output.shape == expected.shape
    diff = int(np.count_nonzero(run.output != expected))
    assert diff == 0, f"{path.stem}: {diff} bytes differ from BUILTIN_REF"
    return run


@pytest.mark.parametrize("name", sorted(DSP_CASES))
def test_dsp_kernel_bit_exact_in_qemu(name, model_dir, tmp_path):
    recipe, args = DSP_CASES[name]
    fn, shapes = recipe(name, *args)
    run = run_bit_exact(convert(fn, shapes, model_dir, name), tmp_path, seed=len(name))
    assert run.unit == "instructions" and run.total > 0
    assert_paths(run, DSP_PATHS[name], name)


def test_dsp_path_is_taken_and_faster(model_dir, tmp_path):
    recipe, args = DSP_CASES["dsp_conv_words_pad"]
    fn, shapes = recipe("dsp_conv_words_pad", *args)
    path = convert(fn, shapes, model_dir, "dsp_conv_words_pad")
    x, fast = _run(path, tmp_path, seed=3)
    _, naive = _run(path, tmp_path, seed=3, defines=("MDT_NO_DSP",))
    assert np.array_equal(fast.output, naive.output)
    assert np.array_equal(fast.output, reference(path, [x])[0].reshape(-1))
    assert fast.total * 2 < naive.total, (fast.total, naive.total)
    # the trace tells the builds apart: the same bytes, from the fast path and from the portable loop
    assert ran(fast) == {"conv_words", CC} and ran(naive) == {"conv_ref"}
    # the painted stack: the fast path's im2col is in the arena (the layer's scratch), not on the stack
    assert 0 < naive.graph_stack < 1024 and 0 < fast.graph_stack < 1024, (naive.graph_stack, fast.graph_stack)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.tflite")), ids=lambda p: p.stem)
def test_dsp_shared_models_bit_exact_in_qemu(path, tmp_path):
    x, run = _run(path, tmp_path, seed=11)
    expected = reference(path, [x])[0].reshape(-1)
    assert np.array_equal(run.output, expected), f"{int(np.count_nonzero(run.output != expected))} bytes differ"
    # every conv, depthwise, FC and ADD layer of the MLPerf Tiny models takes a fast path
    assert not ran(run) & PORTABLE_PATHS, sorted(ran(run))
