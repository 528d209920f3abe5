"""The Cortex-M4 DSP fast paths (mdt_dsp.c), built with arm-none-eabi-gcc -mcpu=cortex-m4 and run in
QEMU mps2-an386: every output byte equal to TFLite's BUILTIN_REF, and the fast path really taken
(fewer retired instructions than the same C built with -DMDT_NO_DSP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microt_deploy.boards import load_board
from microt_deploy.compiler import GraphSpec, compile_program
from microt_deploy.evaluate.bench import MODELS_DIR
from microt_deploy.evaluate.bench_image import render_bench, run_bench_image

from .op_cases import conv, dense, depthwise
from .tflite_models import convert, reference

# Shapes chosen to hit each branch: word im2col with padding and a partial last pixel group, byte
# im2col with a depth % 4 tail, dilation, 1x1, depthwise at both strides, FC with a tail and an odd
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


def _run(path: Path, work: Path, seed: int, defines: tuple[str, ...] = ()):
    board = load_board("qemu_mps2_an386")
    plan = compile_program([GraphSpec(path, "net")], work / "c")
    shape = plan["graphs"][0]["inputs"][0]["shape"]
    x = np.random.default_rng(seed).integers(-128, 128, size=shape, dtype=np.int8)
    fw = render_bench(work / "c", plan, x, board, work / ("fw" + "".join(defines)), defines)
    return x, run_bench_image(board, fw, len(plan["graphs"][0]["layers"]), limit_s=60)


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


def test_dsp_path_is_taken_and_faster(model_dir, tmp_path):
    recipe, args = DSP_CASES["dsp_conv_words_pad"]
    fn, shapes = recipe("dsp_conv_words_pad", *args)
    path = convert(fn, shapes, model_dir, "dsp_conv_words_pad")
    x, fast = _run(path, tmp_path, seed=3)
    _, naive = _run(path, tmp_path, seed=3, defines=("MDT_NO_DSP",))
    assert np.array_equal(fast.output, naive.output)
    assert np.array_equal(fast.output, reference(path, [x])[0].reshape(-1))
    assert fast.total * 2 < naive.total, (fast.total, naive.total)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.tflite")), ids=lambda p: p.stem)
def test_dsp_shared_models_bit_exact_in_qemu(path, tmp_path):
    x, run = _run(path, tmp_path, seed=11)
    expected = reference(path, [x])[0].reshape(-1)
    assert np.array_equal(run.output, expected), f"{int(np.count_nonzero(run.output != expected))} bytes differ"
