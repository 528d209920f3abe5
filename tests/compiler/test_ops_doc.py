"""One list of supported ops and options (microt_deploy/compiler/supported.py): the compiler's reader,
its lowerings, export's check and docs/ops.md all use it; the doc is up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from microt_deploy import compiler
from microt_deploy.compiler import supported
from microt_deploy.compiler.ops import LOWERINGS
from microt_deploy.errors import MicrotError
from microt_deploy.export import tflite_info

from .tflite_models import convert, tf


def test_one_list_everywhere():
    assert set(supported.SUPPORTED_OPS) == set(LOWERINGS) == set(supported.OPS)  # every op has a lowering
    assert compiler.SUPPORTED_OPS == supported.SUPPORTED_OPS
    assert tflite_info.SUPPORTED_OPS == frozenset(supported.SUPPORTED_OPS)


def test_doc_is_generated_from_the_list():
    committed = (Path(__file__).resolve().parents[2] / "docs" / "ops.md").read_text()
    assert committed == supported.ops_markdown(), f"regenerate: {supported.DOCS_COMMAND}"
    for op in supported.SUPPORTED_OPS:
        assert f"| `{op}` |" in committed
    res = subprocess.run([sys.executable, "-m", "microt_deploy.compiler.supported"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout == committed


def test_export_refuses_with_the_compilers_message(model_dir):
    """Export's check names the op, its index, its options and what the compiler really supports."""
    path = convert(lambda x: tf().nn.leaky_relu(x, alpha=0.25), [(1, 8)], model_dir, "int8_leaky_relu")
    with pytest.raises(MicrotError) as err:
        tflite_info.check_ops("trunk", path.read_bytes())
    text = str(err.value)
    assert "\n" not in text and text.startswith("the exported trunk graph: op 0 LEAKY_RELU")
    assert "options {alpha=0.25" in text
    assert f"supported: {', '.join(supported.SUPPORTED_OPS)};" in text
