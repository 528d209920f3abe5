"""Patch-based first stages (patch.py, mdt_patch.c): TF-built models with a high-resolution start,
compiled with a stage forced (patch.FORCE_ENV) and with the planner's own choice, run on the host
(portable kernels) and in QEMU's Cortex-M4 (DSP fast paths on regions): every output byte equal to
TFLite's BUILTIN_REF; the plan has the stage; the arena is lower with it where the model is built so
that it should be. Also the MCUNet backbone at 64x64."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import GraphSpec, compile_program, patch
from microt_deploy.compiler.host_runner import run_model
from microt_deploy.compiler.planner import check_plan
from microt_deploy.errors import MicrotError

from .test_dsp_qemu import run_bit_exact
from .tflite_models import convert, random_inputs, reference, tf, weights


def _conv(x, name, cin, cout, k, stride=1, relu=True):
    y = tf().nn.conv2d(x, weights(name, (k, k, cin, cout)), strides=stride, padding="SAME")
    y = y + weights(name + "b", (cout,))
    return tf().nn.relu6(y) if relu else y


def _dw(x, name, c, stride=1, relu=True, pad=False):
    t = tf()
    if pad:  # an explicit PAD before a VALID stride-2 depthwise (folded into it: fuse.fold_pads)
        x = t.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])
    y = t.nn.depthwise_conv2d(x, weights(name, (3, 3, c, 1)), strides=[1, stride, stride, 1],
                              padding="VALID" if pad else "SAME")
    y = y + weights(name + "b", (c,))
    return t.nn.relu6(y) if relu else y


def chain(name, size, c):
    """64x64x3 -> conv s2 -> dw -> pw -> pw expand -> dw s2 -> pw project -> a small tail: the peak is
    the expansion at half resolution, which a stage ending after the stride-2 block removes."""

    def fn(x):
        y = _conv(x, name + "c0", 3, c, 3, stride=2)
        y = _dw(y, name + "d1", c)
        y = _conv(y, name + "p1", c, c, 1, relu=False)
        y = _conv(y, name + "e2", c, 4 * c, 1)
        y = _dw(y, name + "d2", 4 * c, stride=2, pad=True)
        y = _conv(y, name + "p2", 4 * c, c, 1, relu=False)
        y = _conv(y, name + "t", c, 8, 3, stride=2)
        return tf().reduce_mean(y, axis=[1, 2])

    return fn, [(1, size, size, 3)]


def residual(name, size, c):
    """A stage with an inverted-residual block (expand, dw, project + skip) at half resolution, then a
    stride-2 block: the skip is held on the expansion's halo region and added on the output's."""

    def fn(x):
        a = _conv(x, name + "c0", 3, c, 3, stride=2)
        y = _conv(a, name + "e1", c, 3 * c, 1)
        y = _dw(y, name + "d1", 3 * c)
        y = _conv(y, name + "p1", 3 * c, c, 1, relu=False)
        y = y + a
        y = _conv(y, name + "e2", c, 4 * c, 1)
        y = _dw(y, name + "d2", 4 * c, stride=2)
        y = _conv(y, name + "p2", 4 * c, 2 * c, 1, relu=False)
        return tf().reduce_mean(y, axis=[1, 2])

    return fn, [(1, size, size, 3)]


CASES = {"patch_chain": (chain, (64, 8)), "patch_residual": (residual, (48, 8))}
# the forced stages of each case (patch.FORCE_ENV): "<last lowered layer>:<n>", two in sequence with a comma
FORCED = {"patch_chain": ["5:2", "5:3", "2:4"], "patch_residual": ["7:2", "4:2,7:3", "7:4"]}


def _model(name, model_dir):
    recipe, args = CASES[name]
    fn, shapes = recipe(name, *args)
    return convert(fn, shapes, model_dir, name)


def _stages(plan):
    return [la for g in plan["graphs"] for la in g["layers"] if la["patch_stage"]]


def _compile(path, out, monkeypatch, force=None):
    if force is None:
        monkeypatch.delenv(patch.FORCE_ENV, raising=False)
    else:
        monkeypatch.setenv(patch.FORCE_ENV, force)
    out.mkdir(parents=True, exist_ok=True)
    plan = compile_program([GraphSpec(path, "net")], out)
    check_plan(plan)
    return plan


def _host_exact(path):
    inputs = random_inputs(path, 3, seed=7)
    ours, ref = run_model(path, inputs)[0], reference(path, inputs)[0]
    assert np.array_equal(ours, ref), f"{int(np.count_nonzero(ours != ref))} bytes differ"


@pytest.mark.parametrize("name", sorted(CASES))
def test_forced_stages_bit_exact_on_host(name, model_dir, tmp_path, monkeypatch):
    path = _model(name, model_dir)
    for force in FORCED[name]:
        plan = _compile(path, tmp_path / force, monkeypatch, force)
        stages = _stages(plan)
        assert [(st["patch_stage"]["layers"][-1], st["patch_stage"]["n"]) for st in stages] == \
            [tuple(int(v) for v in part.split(":")) for part in force.split(",")]
        for st in stages:
            assert st["op"] == "PATCH_STAGE" and st["patch_stage"]["extra_macs"] > 0
            assert st["scratch"]["size"] == st["patch_stage"]["scratch_size"]
        _host_exact(path)  # (the host runner's build cache is keyed by FORCE_ENV too)
    inputs = random_inputs(path, 2, seed=4)  # the last stage again, every access checked
    assert np.array_equal(run_model(path, inputs, sanitize=True)[0], reference(path, inputs)[0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_planner_chooses_a_stage_that_lowers_the_arena(name, model_dir, tmp_path, monkeypatch):
    path = _model(name, model_dir)
    off = _compile(path, tmp_path / "off", monkeypatch, "off")
    assert not _stages(off)
    plan = _compile(path, tmp_path / "min", monkeypatch, "min")  # least SRAM, whatever it recomputes
    stages = _stages(plan)
    assert stages, "the planner chose no patch stage"
    assert plan["arena_bytes"] < off["arena_bytes"], (plan["arena_bytes"], off["arena_bytes"])
    assert plan["macs"] == off["macs"] + sum(st["patch_stage"]["extra_macs"] for st in stages)
    _host_exact(path)
    # "auto": only stages whose recomputed halos stay within the budget
    auto = _compile(path, tmp_path / "auto", monkeypatch, "auto")
    extra = sum(st["patch_stage"]["extra_macs"] for st in _stages(auto))
    assert extra <= patch.MAX_EXTRA_MACS * off["macs"], (extra, off["macs"])
    assert auto["arena_bytes"] <= off["arena_bytes"]


def test_fit_takes_stages_only_when_the_arena_exceeds_the_budget(model_dir, tmp_path, monkeypatch):
    """StagePolicy "fit" (a project's default): nothing while the stage-free arena is within the budget;
    over it, a stage whose arena is within it and that recomputes no more than the lowest-peak choice;
    under the lowest peak any stage reaches, the lowest peak (the build then refuses the board)."""
    path = _model("patch_chain", model_dir)
    off = _compile(path, tmp_path / "off", monkeypatch, "off")
    least = _compile(path, tmp_path / "min", monkeypatch, "min")
    monkeypatch.delenv(patch.FORCE_ENV, raising=False)

    def fit(budget, out):
        out.mkdir()
        plan = compile_program([GraphSpec(path, "net")], out, stage_policy=patch.StagePolicy("fit", budget))
        check_plan(plan)
        return plan

    roomy = fit(off["arena_bytes"], tmp_path / "roomy")
    assert not _stages(roomy) and roomy["arena_bytes"] == off["arena_bytes"]
    budget = (off["arena_bytes"] + least["arena_bytes"]) // 2
    tight = fit(budget, tmp_path / "tight")
    assert _stages(tight) and tight["arena_bytes"] <= budget < off["arena_bytes"]
    extra = sum(st["patch_stage"]["extra_macs"] for st in _stages(tight))
    assert extra <= sum(st["patch_stage"]["extra_macs"] for st in _stages(least))
    short = fit(least["arena_bytes"] - 1, tmp_path / "short")
    assert short["arena_bytes"] == least["arena_bytes"]


def test_stage_policy_text():
    assert patch.StagePolicy.parse("fit", 1000) == patch.StagePolicy("fit", 1000)
    assert patch.StagePolicy.parse(" 5:2,9:3 ").forced == ((5, 2), (9, 3))
    with pytest.raises(MicrotError, match=r"^--patch-stages = 'fits' is neither") as err:
        patch.StagePolicy.parse("fits", where="--patch-stages")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_stage_bit_exact_in_qemu(name, model_dir, tmp_path, monkeypatch):
    path = _model(name, model_dir)
    for force in FORCED[name][:2] + ["min"]:  # min: the planner's choice of the lowest peak
        plan = _compile(path, tmp_path / f"plan{force}", monkeypatch, force)
        assert _stages(plan)
        run_bit_exact(path, tmp_path / f"qemu{force}", seed=3)


@pytest.fixture(scope="module")
def mcunet64(tmp_path_factory):
    from microt_deploy.export import paper_models

    return paper_models.generate("mcunet-in3", size=64, out=tmp_path_factory.mktemp("mcunet") / "m.tflite")


def test_mcunet_backbone_at_64(mcunet64, tmp_path, monkeypatch):
    path = mcunet64
    off = _compile(path, tmp_path / "off", monkeypatch, "off")
    plan = _compile(path, tmp_path / "auto", monkeypatch, "auto")
    stages = [st["patch_stage"] for st in _stages(plan)]
    print(f"mcunet-in3@64: arena {off['arena_bytes']} -> {plan['arena_bytes']} bytes, stages "
          f"{[(rec['layers'][0], rec['layers'][-1], rec['n']) for rec in stages]}, "
          f"extra MACs {sum(rec['extra_macs'] for rec in stages)} of {off['macs']}")
    assert plan["arena_bytes"] <= off["arena_bytes"]
    _host_exact(path)


@pytest.mark.parametrize("force", ["20:2", "5:3,20:2"])
def test_mcunet_deep_stage_with_residual_blocks(force, mcunet64, tmp_path, monkeypatch):
    """Stem, block 1 (7x7 stride-2 depthwise), the three residual blocks at 16x16 and block 5's 5x5
    stride-2 depthwise as one stage (or the first two blocks, then the rest): exact under ASan + UBSan
    on the host and with the DSP paths in QEMU, its mdt_scratch literals not piling up on the stack."""
    plan = _compile(mcunet64, tmp_path / "c", monkeypatch, force)
    recs = [st["patch_stage"] for st in _stages(plan)]
    assert sum(rec["ops"].count("ADD") for rec in recs) == 3
    assert [i for rec in recs for i in rec["layers"]] == list(range(21))
    inputs = random_inputs(mcunet64, 2, seed=9)
    ours, ref = run_model(mcunet64, inputs, sanitize=True)[0], reference(mcunet64, inputs)[0]
    assert np.array_equal(ours, ref), f"{int(np.count_nonzero(ours != ref))} bytes differ"
    run = run_bit_exact(mcunet64, tmp_path / "qemu", seed=2)
    assert run.graph_stack is not None and 0 < run.graph_stack < 1024, run.graph_stack


def test_forced_stage_refusals(model_dir, tmp_path, monkeypatch):
    path = _model("patch_chain", model_dir)
    for force, match in (("7:2", "cannot run as a patch stage"), ("5:40", "cannot run as a patch stage"),
                         ("five", "neither 'fit', 'off', 'auto', 'min' nor")):
        monkeypatch.setenv(patch.FORCE_ENV, force)
        with pytest.raises(MicrotError, match=match) as err:
            compile_program([GraphSpec(path, "net")], tmp_path)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "plan.json").exists()
