"""The compiled model's host runner in its sanitized mode (ASan + UBSan, the arena an exact-size heap
block): a few op cases of the bit-exactness suite, byte for byte against TFLite's reference kernels,
under a real sanitized build that must run clean. MICROT_SANITIZE=1 puts every host run of the
compiler tests in this mode."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from microt_deploy.compiler.host_runner import build_host_binary, run_model

from .op_cases import FAST_CASES
from .tflite_models import convert, random_inputs, reference

CASES = ["conv_same_relu6", "dw_same_s2", "dense_relu", "add_broadcast_relu", "maxpool_valid", "softmax_10",
         "small_cnn"]


@pytest.mark.parametrize("name", CASES)
def test_sanitized_build_is_bit_exact_and_clean(name, model_dir):
    recipe, args = FAST_CASES[name]
    fn, shapes = recipe(name, *args)
    path = convert(fn, shapes, model_dir, name)
    binary = build_host_binary(path, sanitize=True)
    data = binary.read_bytes()
    assert b"__asan_report" in data and b"__ubsan_handle" in data  # a real ASan + UBSan build
    assert binary != build_host_binary(path, sanitize=False)  # cached apart from the plain build
    inputs = random_inputs(path, 6, seed=len(name))
    ours = run_model(path, inputs, sanitize=True)  # raises on any sanitizer report or non-zero exit
    for o, r in zip(ours, reference(path, inputs), strict=True):
        assert o.shape == r.shape and int(np.count_nonzero(o != r)) == 0, name


def test_sanitize_flags_catch_an_arena_overrun(tmp_path):
    """The mode is not a no-op: a kernel stand-in that writes one byte past the heap arena, built
    with the runner's sanitize flags, is stopped with a sanitizer report."""
    from microt_deploy.compiler.host_runner import CFLAGS, SANITIZE_FLAGS

    (tmp_path / "bad.c").write_text(
        "#include <stdint.h>\n#include <stdlib.h>\n"
        "int main(void) { volatile int n = 48; int8_t *arena = malloc(48); arena[n] = 1; free(arena); return 0; }\n")
    subprocess.run(["gcc", *CFLAGS, *SANITIZE_FLAGS, str(tmp_path / "bad.c"), "-o", str(tmp_path / "bad")],
                   check=True, capture_output=True)
    done = subprocess.run([str(tmp_path / "bad")], capture_output=True, text=True, timeout=60)
    # UBSan's object-size check or ASan's redzone, whichever sees it first
    assert done.returncode != 0 and ("heap-buffer-overflow" in done.stderr or "runtime error" in done.stderr)
