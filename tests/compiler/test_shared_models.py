"""The MLPerf Tiny int8 models (models nobody here made): compile, build on the host, compare with
BUILTIN_REF byte for byte; the generated C also cross-compiles for Cortex-M4 with -Werror."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from microt_deploy.compiler import RUNTIME_DIR, GraphSpec, compile_program, runtime_sources, summarize
from microt_deploy.compiler.host_runner import infer_files, run_model
from microt_deploy.compiler.planner import check_plan
from microt_deploy.errors import MicrotError
from microt_deploy.evaluate.bench import MODELS_DIR

from .tflite_models import random_inputs, reference

MODELS = sorted(MODELS_DIR.glob("*.tflite"))


def test_the_four_reference_models_are_there() -> None:
    """The parametrized tests below would silently vanish without them."""
    assert [p.stem.split("_")[2] for p in MODELS] == ["ad01", "kws", "pretrainedResnet", "vww"]
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_shared_model_bit_exact(path):
    inputs = random_inputs(path, 5, seed=7)
    ours = run_model(path, inputs)
    ref = reference(path, inputs)
    for o, r in zip(ours, ref, strict=True):
        assert o.shape == r.shape
        assert np.array_equal(o, r), f"{int(np.count_nonzero(o != r))} bytes differ"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_plan_has_exact_no_overlap_arena(path, tmp_path):
    plan = compile_program([GraphSpec(path, "net")], tmp_path)
    bufs = plan["buffers"]
    assert all(b["offset"] % plan["align"] == 0 for b in bufs)
    check_plan(plan)  # tensor level: overlaps only for aliases and declared in-place pairs
    scratch = [la["scratch"] for la in plan["graphs"][0]["layers"] if la["scratch"]]
    ends = [t["offset"] + t["size"] for t in plan["tensors"]] + [s_["offset"] + s_["size"] for s_ in scratch]
    assert plan["arena_bytes"] == max(ends)  # the peak is where the highest byte in use ends
    for la in plan["graphs"][0]["layers"]:
        assert 0 < la["live_bytes"] <= plan["arena_bytes"]
    # a lower bound: at every step, the bytes in use (live tensors' and that step's scratch ranges,
    # overlaps counted once) must fit
    for la in plan["graphs"][0]["layers"]:
        ranges = sorted([(t["offset"], t["offset"] + t["size"]) for t in plan["tensors"]
                         if t["first"] <= la["step"] <= t["last"]]
                        + ([(la["scratch"]["offset"], la["scratch"]["offset"] + la["scratch"]["size"])]
                           if la["scratch"] else []))
        used, end = 0, 0
        for a, b in ranges:
            used += max(0, b - max(a, end))
            end = max(end, b)
        assert used == la["live_bytes"] <= plan["arena_bytes"]
    text = summarize(plan)
    assert "arena (peak activation SRAM)" in text and plan["graphs"][0]["layers"][0]["op"] in text
    header = (tmp_path / "mdt_model.h").read_text()
    assert f"#define MDT_ARENA_SIZE {plan['arena_size']}" in header and "NET_INPUT0_OFFSET" in header


def test_generated_c_cross_compiles_for_cortex_m4(tmp_path):
    compile_program([GraphSpec(MODELS[0], "net")], tmp_path)
    for src in [tmp_path / "mdt_model.c", *runtime_sources()]:
        res = subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *ARM_FLAGS,
                              "-I", str(RUNTIME_DIR), "-I", str(tmp_path), "-c", str(src),
                              "-o", str(tmp_path / (src.stem + ".o"))], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_infer_files_round_trip_and_refusals(tmp_path):
    path = next(p for p in MODELS if "kws" in p.stem)
    x = random_inputs(path, 3, seed=3)[0]
    np.save(tmp_path / "in.npy", x)
    (out,) = infer_files(path, tmp_path / "in.npy", tmp_path / "out.npy").values()
    assert np.array_equal(np.load(tmp_path / "out.npy"), out)
    assert np.array_equal(out, reference(path, [x])[0])
    np.save(tmp_path / "bad.npy", x.astype(np.float32))
    with pytest.raises(MicrotError, match="float32, the model takes int8"):
        infer_files(path, tmp_path / "bad.npy", tmp_path / "o2.npy")
    np.save(tmp_path / "badshape.npy", x[:, :10])
    with pytest.raises(MicrotError, match="has shape"):
        infer_files(path, tmp_path / "badshape.npy", tmp_path / "o2.npy")
    assert not (tmp_path / "o2.npy").exists()


# TFLM's arena for the same models (shared/REFERENCE.md), which holds its CMSIS-NN scratch buffers; ours
# holds the kernels' working memory likewise (compiler/scratch.py; the stack under 1 KB). Measured:
# VWW 44,832 B (0.445x: in-place chains, row kernels in chunks, depthwise bands of even rows), KWS
# 10,544 (0.462x), ResNet-8 34,807 (0.633x, its 32,864 of activations + the convs' im2col at the peak
# step; peak SRAM with the stack 35.7 KB against the last release's 52.8 KB of arena + static tables +
# stack).
TFLM_ARENA = {"vww_96_int8": (100_708, 0.45), "kws_ref_model": (22_820, 0.5),
              "pretrainedResnet_quant": (54_996, 0.64)}


@pytest.mark.parametrize("stem", sorted(TFLM_ARENA))
def test_arena_well_below_tflm(stem, tmp_path):
    path = next(p for p in MODELS if p.stem.endswith(stem))
    plan = compile_program([GraphSpec(path, "net")], tmp_path)
    tflm, ratio = TFLM_ARENA[stem]
    assert plan["arena_size"] <= ratio * tflm, (plan["arena_size"], tflm)
    assert any(la["inplace"] for la in plan["graphs"][0]["layers"])
    # fused only where it lowers the peak: the residual model, not the plain chains
    assert any(la["fused"] for la in plan["graphs"][0]["layers"]) == (stem == "pretrainedResnet_quant")
