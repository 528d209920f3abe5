"""Fused CONV_2D+ADD (fuse.py, mdt_fused.c): residual blocks built with TF, compiled with the fusion the
planner picks (or a forced chunk), run on the host (portable kernels) and in QEMU (DSP fast paths on
pixel windows with a negative left padding): every output byte equal to TFLite's BUILTIN_REF; the
plan checker sees the fused layer's scratch; the choice keeps a fusion only where the peak drops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microt_deploy.compiler import GraphSpec, compile_program, fuse
from microt_deploy.compiler.host_runner import run_model
from microt_deploy.compiler.planner import check_plan
from microt_deploy.errors import MicrotError

from .tflite_models import convert, random_inputs, reference, tf, weights


def _conv(x, name, cin, cout, k, stride=1, relu=True):
    y = tf().nn.conv2d(x, weights(name, (k, k, cin, cout)), strides=stride, padding="SAME")
    y = y + weights(name + "b", (cout,))
    return tf().nn.relu(y) if relu else y


def residual(name, h, w, cin, c, k, skip_first, relu_out):
    """x -> a -> b -> conv_k(b) + a: the skip `a` and the conv's input `b` are both live at the ADD."""

    def fn(x):
        a = _conv(x, name + "a", cin, c, 3)
        b = _conv(a, name + "b", c, 2 * c, k)
        m = _conv(b, name + "m", 2 * c, c, k, relu=False)
        y = a + m if skip_first else m + a
        return tf().nn.relu(y) if relu_out else y

    return fn, [(1, h, w, cin)]


def downsample(name, h, w, cin, c):
    """ResNet's strided block: a 1x1 stride-2 skip and a 3x3 stride-2 conv of the same input, added."""

    def fn(x):
        a = _conv(x, name + "a", cin, c, 3)
        s = _conv(a, name + "s", c, 2 * c, 1, stride=2, relu=False)
        m = _conv(a, name + "m", c, 2 * c, 3, stride=2, relu=False)
        return tf().nn.relu(s + m)

    return fn, [(1, h, w, cin)]


# (recipe, args): output widths 13 (chunks 6+6+1 or 12+1), 8 at stride 2 (6+2), a 1x1 fused conv of
# depth 16 (the DSP small-depth path on a window) and the ADD's operands either way round
CASES = {
    "fuse_s1_w13": (residual, (9, 13, 3, 8, 3, False, True)),
    "fuse_skip_first_1x1": (residual, (7, 10, 2, 8, 1, True, False)),
    "fuse_s2_w15": (downsample, (10, 15, 2, 12)),
    # a fused conv of depth 6 (in_c % 4 != 0: the widened-row path, conv_nat), chunks 6+6+1: the
    # chunks after the first start inside the row (a negative pad_w)
    "fuse_nat_w13": (residual, (9, 13, 3, 3, 3, False, True)),
}


# Cases whose fusion no longer lowers the peak (the unfused ADD reads its operand tables from flash and
# takes no scratch, ops/tables.py; the row-wise 1x1 conv then peaks as low as the fused kernel), so the
# planner drops it: fused here by force, for the kernel's coverage (1x1 window, operands swapped).
FORCED = {"fuse_skip_first_1x1", "fuse_nat_w13"}


def _force_fusion(name, monkeypatch):
    if name in FORCED:
        monkeypatch.setattr("microt_deploy.compiler.planner.choose_fusions", lambda cands, peak_of: {
            (gi, li): fuse.chunk_options(conv)[-1] for gi, li, conv in cands})


def _model(name, model_dir):
    recipe, args = CASES[name]
    fn, shapes = recipe(name, *args)
    return convert(fn, shapes, model_dir, name)


def _fused_layers(plan):
    return [la for g in plan["graphs"] for la in g["layers"] if la["fused"]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_residual_bit_exact_on_host(name, model_dir, tmp_path, monkeypatch):
    _force_fusion(name, monkeypatch)
    path = _model(name, model_dir)
    plan = compile_program([GraphSpec(path, "net")], tmp_path)
    check_plan(plan)
    (fused,) = _fused_layers(plan)
    assert fused["op"] == "CONV_2D+ADD" and fused["fused"]["ops"] == ["CONV_2D", "ADD"]
    # the chunk first, then the conv's working memory (test_scratch.py checks that part's size)
    assert fused["inplace"] is not None and fused["scratch"]["size"] >= fused["fused"]["chunk_w"] * \
        fused["output_shape"][-1]
    inputs = random_inputs(path, 3, seed=5)
    ours, ref = run_model(path, inputs)[0], reference(path, inputs)[0]
    assert np.array_equal(ours, ref), f"{int(np.count_nonzero(ours != ref))} bytes differ"


def test_skip_that_is_the_convs_input_is_not_overwritten(model_dir, tmp_path, monkeypatch):
    """a + conv3x3(a): the fused layer's skip is its conv's input, which later output rows still read
    around them, so the output must not take the skip's place (it did: 406 bytes wrong)."""

    def fn(x):
        a = _conv(x, "selfa", 8, 8, 1)
        return a + _conv(a, "selfm", 8, 8, 3, relu=False)

    path = convert(fn, [(1, 7, 9, 8)], model_dir, "fuse_self_skip")
    monkeypatch.setattr("microt_deploy.compiler.planner.choose_fusions", lambda cands, peak_of: {
        (gi, li): fuse.chunk_options(conv)[-1] for gi, li, conv in cands})
    plan = compile_program([GraphSpec(path, "net")], tmp_path)
    (fused,) = _fused_layers(plan)
    assert fused["inplace"] is None
    inputs = random_inputs(path, 3, seed=6)
    ours, ref = run_model(path, inputs)[0], reference(path, inputs)[0]
    assert np.array_equal(ours, ref), f"{int(np.count_nonzero(ours != ref))} bytes differ"


def test_fusion_lowers_the_peak(model_dir, tmp_path, monkeypatch):
    path = _model("fuse_s1_w13", model_dir)
    fused = compile_program([GraphSpec(path, "net")], tmp_path / "f")
    monkeypatch.setattr("microt_deploy.compiler.planner.fusion_candidates", lambda graph, layers: [])
    plain = compile_program([GraphSpec(path, "net")], tmp_path / "p")
    assert not _fused_layers(plain)
    # a = 9*13*8, b = 2a: unfused the ADD's conv needs a + b + its output (or a row-wise scratch)
    assert fused["arena_bytes"] < plain["arena_bytes"], (fused["arena_bytes"], plain["arena_bytes"])
    # + the kernels' working memory in the arena (one layer's at a time)
    work = max(la["scratch"]["size"] for la in fused["graphs"][0]["layers"] if la["scratch"])
    assert fused["arena_bytes"] <= 3 * 9 * 13 * 8 + 16 * 8 + 32 + work


@pytest.mark.parametrize("pixels", [1, 4])
def test_forced_chunks_bit_exact_on_host(pixels, model_dir, tmp_path, monkeypatch):
    """Chunk widths the planner would not pick (1 pixel, 4 with a tail of 1) give the same bytes."""
    monkeypatch.setenv("MICROT_CACHE_DIR", str(tmp_path / "cache"))  # the host build keys on the model only
    monkeypatch.setattr(fuse, "chunk_options", lambda layer: [pixels])
    path = _model("fuse_s1_w13", model_dir)
    plan = compile_program([GraphSpec(path, "net")], tmp_path)
    assert _fused_layers(plan)[0]["fused"]["chunk_w"] == pixels
    inputs = random_inputs(path, 2, seed=9)
    assert np.array_equal(run_model(path, inputs)[0], reference(path, inputs)[0])


def test_check_plan_sees_fused_scratch(model_dir, tmp_path):
    path = _model("fuse_s1_w13", model_dir)
    plan = compile_program([GraphSpec(path, "net")], tmp_path)
    fused = _fused_layers(plan)[0]
    conv_in = next(t for t in plan["tensors"] if t["name"] == fused["inputs"][0]["name"])
    fused["scratch"]["offset"] = conv_in["offset"]  # the scratch on the conv's input: a real clash
    with pytest.raises(MicrotError, match="scratch"):
        check_plan(plan)


def test_choose_fusions_keeps_only_what_lowers_the_peak():
    """Candidate A lowers the peak by its output minus its scratch, B does not; A's chunk grows while
    the peak stays (a chunk of 12 pixels still fits the hole, 16 does not)."""
    class Conv:
        fields = {"out_w": 16}

    def peak_of(chosen):
        peak = 1000
        if (0, 1) in chosen:
            peak = 900 + max(0, chosen[(0, 1)] - 12)
        return peak

    chosen = fuse.choose_fusions([(0, 1, Conv()), (0, 5, Conv())], peak_of)
    assert chosen == {(0, 1): 12}
    assert fuse.chunk_options(Conv()) == [16, 12, 6]


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_residual_bit_exact_in_qemu(name, model_dir, tmp_path, monkeypatch):
    from .test_dsp_qemu import _run

    _force_fusion(name, monkeypatch)
    path = _model(name, model_dir)
    x, run = _run(path, tmp_path, seed=len(name))
    expected = reference(path, [x])[0].reshape(-1)
    assert np.array_equal(run.output, expected), f"{int(np.count_nonzero(run.output != expected))} bytes differ"
    if name == "fuse_nat_w13":  # the fused layer's chunks went through the widened-row path
        fused = [i for i, la in enumerate(json.loads((tmp_path / "c" / "plan.json").read_text())["graphs"][0]["layers"])
                 if la["fused"]]
        assert fused and all("conv_nat" in run.paths[i] for i in fused), run.paths
    if name == "fuse_s2_w15":  # the portable build of the same fused kernel
        _, naive = _run(path, tmp_path, seed=len(name), defines=("MDT_NO_DSP",))
        assert np.array_equal(naive.output, expected)
