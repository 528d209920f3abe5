"""Multi-graph programs on one arena (trunk -> part head -> rest, resuming from the split): the bound
split activation survives until `rest` has read it, checked in plan.json and by running the C."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from microt_deploy.compiler import RUNTIME_DIR, GraphSpec, compile_program, runtime_sources
from microt_deploy.errors import MicrotError

from .tflite_models import convert, reference, tf, weights

HARNESS = r"""
#include <stdio.h>
#include "prog.h"
static int8_t arena[MDT_ARENA_SIZE];
int main(void) {
    if (fread(arena + TRUNK_INPUT0_OFFSET, 1, TRUNK_INPUT0_SIZE, stdin) != TRUNK_INPUT0_SIZE) return 2;
    trunk_run(arena);
    fwrite(arena + TRUNK_OUTPUT0_OFFSET, 1, TRUNK_OUTPUT0_SIZE, stdout);
    head_run(arena);
    fwrite(arena + HEAD_OUTPUT0_OFFSET, 1, HEAD_OUTPUT0_SIZE, stdout);
    rest_run(arena);
    fwrite(arena + REST_OUTPUT0_OFFSET, 1, REST_OUTPUT0_SIZE, stdout);
    return 0;
}
"""


def _models(model_dir):
    """trunk: image -> split activation; head and rest both start from the split (float calibration
    of the heads on the trunk's own float outputs keeps the split's quantization identical)."""
    w1, w2 = weights("p1", (3, 3, 3, 8)), weights("p2", (3, 3, 8, 12))
    wh, wr = weights("ph", (8, 6)), weights("pr", (12, 4))
    t = tf()

    def trunk(x):
        return t.nn.relu6(t.nn.conv2d(x, w1, strides=2, padding="SAME"))

    def head(s):
        return t.matmul(t.reduce_mean(s, axis=[1, 2]), wh)

    def rest(s):
        y = t.nn.relu(t.nn.conv2d(s, w2, strides=1, padding="SAME"))
        return t.matmul(t.reduce_mean(y, axis=[1, 2]), wr)

    rng = np.random.default_rng(5)
    split_samples = [np.array(trunk(rng.normal(0, 1.5, (1, 10, 10, 3)).astype(np.float32))) for _ in range(24)]
    # calibrate the heads on exactly the range the trunk's split output was calibrated on: fixed endpoints
    split_samples[0][..., 0, 0, 0] = 0.0
    split_samples[1][..., 0, 0, 0] = 6.0
    paths = [convert(trunk, [(1, 10, 10, 3)], model_dir, "prog_trunk")]
    for name, fn in (("head", head), ("rest", rest)):
        paths.append(_convert_on(fn, split_samples, model_dir, f"prog_{name}"))
    return paths


def _convert_on(fn, samples, model_dir, name):
    path = model_dir / f"{name}.tflite"
    if path.exists():
        return path
    t = tf()
    concrete = t.function(fn, input_signature=[t.TensorSpec(samples[0].shape, t.float32)]).get_concrete_function()
    conv = t.lite.TFLiteConverter.from_concrete_functions([concrete])
    conv.optimizations = [t.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s] for s in samples)
    conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = t.int8
    path.write_bytes(conv.convert())
    return path


def test_bound_split_survives_and_matches_reference(model_dir, tmp_path):
    trunk, head, rest = _models(model_dir)
    specs = [GraphSpec(trunk, "trunk"), GraphSpec(head, "head", {0: ("trunk", 0)}),
             GraphSpec(rest, "rest", {0: ("trunk", 0)})]
    try:
        plan = compile_program(specs, tmp_path, header_name="prog")
    except MicrotError as exc:  # the trunk's output params and the heads' input params must agree
        pytest.fail(f"binding refused: {exc}")
    g_trunk, g_head, g_rest = plan["graphs"]
    split = g_trunk["outputs"][0]
    assert g_head["inputs"][0]["offset"] == split["offset"] == g_rest["inputs"][0]["offset"]
    buf = next(b for b in plan["buffers"] if b["id"] == split["buffer"])
    assert buf["last"] >= g_rest["end_step"]  # live until rest has finished
    # nothing live while the split is live may share its bytes (tensor by tensor: a buffer groups
    # tensors at fixed distances, whose bytes are only in use while each of them is live)
    lo, hi = split["offset"], split["offset"] + split["size"]
    live = [t for t in plan["tensors"] if t["first"] <= buf["last"] and buf["first"] <= t["last"]]
    others = [t for t in live if (t["offset"], t["size"]) != (lo, split["size"])]
    assert len(others) < len(live) and others  # the split (and its bound aliases) and what runs beside it
    split_key = g_trunk["layers"][-1]["output_key"]
    inplace = {(la["inplace"]["input"], la["step"]) for la in g_trunk["layers"]
               if la["inplace"] and la["output_key"] == split_key}
    for t in others:
        if (t["key"], t["last"]) in inplace:  # the trunk's last layer writes the split over its input
            continue
        assert t["offset"] + t["size"] <= lo or hi <= t["offset"], t

    (tmp_path / "harness.c").write_text(HARNESS)
    exe = tmp_path / "prog"
    res = subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(RUNTIME_DIR),
                          "-I", str(tmp_path), str(tmp_path / "harness.c"), str(tmp_path / "prog.c"),
                          *map(str, runtime_sources()), "-o", str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    x = np.random.default_rng(9).integers(-128, 128, size=(1, 10, 10, 3), dtype=np.int8)
    out = np.frombuffer(subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, check=True).stdout,
                        dtype=np.int8)
    s_ref = reference(trunk, [x])[0]
    h_ref, r_ref = reference(head, [s_ref])[0], reference(rest, [s_ref])[0]
    n = s_ref.size
    assert np.array_equal(out[:n], s_ref.reshape(-1))
    assert np.array_equal(out[n:n + h_ref.size], h_ref.reshape(-1))
    assert np.array_equal(out[n + h_ref.size:], r_ref.reshape(-1))


def test_binding_errors_are_one_line(model_dir, tmp_path):
    trunk, head, _ = _models(model_dir)
    with pytest.raises(MicrotError, match="not an earlier graph"):
        compile_program([GraphSpec(head, "head", {0: ("trunk", 0)}), GraphSpec(trunk, "trunk")], tmp_path)
    with pytest.raises(MicrotError, match="does not match output"):  # trunk's input is not the split
        compile_program([GraphSpec(trunk, "a"), GraphSpec(trunk, "b", {0: ("a", 0)})], tmp_path)
    with pytest.raises(MicrotError, match="C identifier"):
        compile_program([GraphSpec(trunk, "1bad")], tmp_path)
    assert not (tmp_path / "mdt_model.c").exists()
