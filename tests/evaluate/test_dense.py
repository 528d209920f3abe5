"""The benchmark's dense twin of a pruned model: every all-zero filter row filled, nothing else moved,
still a model TFLite and our compiler run bit-exactly."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import GraphSpec, compile_program
from microt_deploy.compiler.host_runner import run_model
from microt_deploy.evaluate.bench import MODELS_DIR
from microt_deploy.evaluate.dense import densify

from ..compiler.test_zero_rows import pruned_conv
from ..compiler.tflite_models import convert, random_inputs, reference


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def test_twin_fills_every_zero_row_and_stays_bit_exact(model_dir, tmp_path):
    fn, shapes = pruned_conv("dense_twin", 6, 6, 8, 12, 3, 1, (0, 5, 11), "relu6")
    path = convert(fn, shapes, model_dir, "dense_twin")
    before = path.read_bytes()
    twin = tmp_path / "twin.tflite"
    assert densify(path, twin) == 3
    assert path.read_bytes() == before and twin.stat().st_size == len(before)
    plan = compile_program([GraphSpec(twin, "net")], tmp_path / "c")
    assert plan["live_macs"] == plan["macs"]
    for x in random_inputs(twin, batch=3, seed=2):
        assert np.array_equal(run_model(twin, [x])[0], reference(twin, [x])[0])


def test_model_without_zero_rows_has_no_twin(model_dir, tmp_path):
    fn, shapes = pruned_conv("dense_none", 5, 5, 8, 6, 1, 1, (), "none")
    path = convert(fn, shapes, model_dir, "dense_none")
    assert densify(path, tmp_path / "twin.tflite") == 0
    assert not (tmp_path / "twin.tflite").exists()


def test_vww_twin_runs_every_mac(tmp_path):
    """The MLPerf VWW model: 971 all-zero rows (42 % of its MACs); its twin has none."""
    vww = MODELS_DIR / "mlperf_tiny_vww_96_int8.tflite"
    assert densify(vww, tmp_path / "vww_dense.tflite") == 971
    pruned = compile_program([GraphSpec(vww, "net")], tmp_path / "a")
    dense = compile_program([GraphSpec(tmp_path / "vww_dense.tflite", "net")], tmp_path / "b")
    assert pruned["live_macs"] == 4_358_528 and pruned["macs"] == dense["macs"] == dense["live_macs"] == 7_489_664
