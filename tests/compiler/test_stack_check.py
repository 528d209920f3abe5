"""The stack high-water mark: the bench harness's "S" line (painted stack, cmsdk startup), the marks
`bench` keeps per model file (evaluate.stack_marks) and `build`'s stack line / refusal (pipeline.stack_check)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from microt_deploy.boards import load_board
from microt_deploy.errors import MicrotError
from microt_deploy.evaluate import stack_marks
from microt_deploy.evaluate.bench_image import parse_extras
from microt_deploy.pipeline import stack_check


def test_parse_extras_reads_stack_and_paths():
    used, base, paths = parse_extras("U 0\nT 5\nO 00\nS 10640 76\nL 0 0 5\nP 0 6\nP 1 8192\nE\n", 2)
    assert (used, base) == (10640, 76)
    assert paths == [{"conv_small", "conv_words"}, {"add_dsp"}]
    assert parse_extras("U 0\nT 5\nO 00\nE\n", 1) == (None, None, None)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROT_CACHE_DIR", str(tmp_path / "cache"))
    export = tmp_path / "export"
    export.mkdir()
    for g, body in (("trunk", b"trunk-bytes"), ("part_head", b"head-bytes"), ("rest", b"rest-bytes")):
        (export / f"{g}.tflite").write_bytes(body)
    return SimpleNamespace(export_dir=export)


def test_marks_are_kept_per_model_bytes(project):
    trunk = project.export_dir / "trunk.tflite"
    assert stack_marks.lookup(trunk) is None
    stack_marks.record(trunk, {"graph_stack_bytes": 4000})
    assert stack_marks.lookup(trunk)["graph_stack_bytes"] == 4000
    trunk.write_bytes(b"re-exported")  # other bytes: no mark until benched again
    assert stack_marks.lookup(trunk) is None


def test_build_line_sets_the_marks_beside_the_reserve(project):
    board = load_board("qemu_mps2_an386")
    assert "not measured yet" in stack_check(project, board, {})
    stack_marks.record(project.export_dir / "trunk.tflite", {"graph_stack_bytes": 10564})
    stack_marks.record(project.export_dir / "rest.tflite", {"graph_stack_bytes": 2408})
    line = stack_check(project, board, {})
    assert "reserve 16,384 B" in line and "trunk 10,564 B" in line and "rest 2,408 B" in line
    assert "5,820 B left for the app's own frames" in line and "not benched: part_head" in line
    with pytest.raises(MicrotError, match="trunk graph's kernels used 10,564 B of stack"):
        stack_check(project, board, {"stack_bytes": 8192})
    assert stack_check(project, load_board("host"), {}) == ""
