"""The memory plan's no-overlap check (planner.check_plan): an error (MicrotError naming both tensors
and their byte ranges) on every compile, not an assert that `python -O` removes. Crafted plans: an
overlap of two live tensors is refused, the same bytes at different steps, aliases and a declared
in-place pair at its step are not; a scratch on a live tensor is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from microt_deploy.compiler import codegen, planner
from microt_deploy.compiler.planner import check_plan
from microt_deploy.errors import MicrotError


def _t(key, offset, size, first, last):
    return {"key": key, "offset": offset, "size": size, "first": first, "last": last}


def _plan(tensors, layers=()):
    return {"tensors": list(tensors), "graphs": [{"layers": list(layers)}]}


def test_live_overlap_is_refused_with_both_tensors_and_their_ranges():
    plan = _plan([_t("net:a", 0, 64, 0, 2), _t("net:b", 48, 32, 1, 3), _t("net:c", 96, 16, 0, 3)])
    with pytest.raises(MicrotError) as err:
        check_plan(plan)
    msg = str(err.value)
    assert "net:a" in msg and "net:b" in msg and "net:c" not in msg
    assert "[0, 64)" in msg and "[48, 80)" in msg and "overlap while both live" in msg


def test_disjoint_in_time_or_space_and_aliases_pass():
    check_plan(_plan([
        _t("net:a", 0, 64, 0, 1), _t("net:b", 0, 64, 2, 3),   # same bytes, one after the other
        _t("net:c", 64, 32, 0, 3), _t("net:d", 96, 16, 0, 3),  # side by side
        _t("net:e", 64, 32, 1, 2),                             # an alias of c (RESHAPE): same bytes
    ]))


def test_declared_inplace_pair_passes_only_at_its_step():
    tensors = [_t("net:in", 0, 64, 0, 2), _t("net:out", 16, 64, 2, 4)]
    at_step = {"inplace": {"input": "net:in"}, "output_key": "net:out", "step": 2}
    check_plan(_plan(tensors, [at_step]))
    with pytest.raises(MicrotError, match="net:in"):
        check_plan(_plan(tensors, [{**at_step, "step": 1}]))
    with pytest.raises(MicrotError, match="overlap"):
        check_plan(_plan(tensors))  # not declared


def test_scratch_on_a_live_tensor_is_refused():
    tensors = [_t("net:a", 0, 64, 0, 2), _t("net:b", 64, 64, 3, 4)]
    check_plan(_plan(tensors, [{"step": 3, "scratch": {"offset": 0, "size": 32}}]))  # a is dead by step 3
    with pytest.raises(MicrotError, match=r"scratch of step 3 \(arena bytes \[100, 132\)\) overlaps tensor net:b"):
        check_plan(_plan(tensors, [{"step": 3, "scratch": {"offset": 100, "size": 32}}]))


def test_compile_program_runs_the_check(monkeypatch, tmp_path):
    """compile_program refuses a plan whose placement put two live tensors on the same bytes, before
    any C is written (the placement is broken on purpose: every buffer at offset 0)."""
    from microt_deploy.evaluate.bench import MODELS_DIR

    def stacked(buffers):
        for b in buffers:
            b.offset = 0
        return max((b.size for b in buffers), default=0)

    monkeypatch.setattr(planner, "place_best", stacked)
    with pytest.raises(MicrotError, match="memory plan error: tensors .* overlap while both live"):
        codegen.compile_program([codegen.GraphSpec(MODELS_DIR / "mlperf_tiny_ad01_int8.tflite", "net")], tmp_path)
    assert not (tmp_path / "mdt_model.c").exists()


def test_the_check_survives_python_O():
    """Under `python -O` (asserts removed) the check still refuses."""
    code = ("from microt_deploy.compiler.planner import check_plan\n"
            "from microt_deploy.errors import MicrotError\n"
            "t = [dict(key='a', offset=0, size=8, first=0, last=1), dict(key='b', offset=4, size=8, first=1, last=2)]\n"
            "try:\n    check_plan({'tensors': t, 'graphs': []})\nexcept MicrotError:\n    print('refused')\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "refused", out.stderr
