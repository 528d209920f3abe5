"""Bad input is refused at compile time with one line naming the problem (and the op) and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from microt_deploy.compiler import GraphSpec, compile_program, read_model
from microt_deploy.errors import MicrotError
from microt_deploy.evaluate.bench import MODELS_DIR

from .tflite_models import convert, tf

SHARED = str(MODELS_DIR / "mlperf_tiny_kws_ref_model.tflite")


def _one_line(exc: MicrotError) -> str:
    text = str(exc)
    assert "\n" not in text and ";" in text
    return text


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(MicrotError, match="is not a file"):
        read_model(tmp_path / "nope.tflite")
    data = open(SHARED, "rb").read()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(MicrotError, match="truncated or corrupt") as err:
        read_model(cut)
    _one_line(err.value)
    other = tmp_path / "x.tflite"
    other.write_bytes(b"\x00" * 64)
    with pytest.raises(MicrotError, match="not a TFLite flatbuffer"):
        read_model(other)


def test_float_model_refused(model_dir):
    path = convert(lambda x: tf().nn.relu(x), [(1, 8)], model_dir, "float_relu", quantize=False)
    with pytest.raises(MicrotError, match="float-only model") as err:
        read_model(path)
    assert "int8" in _one_line(err.value)


def test_unsupported_op_named_with_index_and_output(model_dir):
    path = convert(lambda x: tf().tanh(x), [(1, 8)], model_dir, "int8_tanh")
    with pytest.raises(MicrotError, match=r"op 0 TANH \(output '.+', options \{.*\}\) is not supported") as err:
        read_model(path)
    assert "supported: ADD, " in _one_line(err.value)


def test_float_island_in_int8_model_named(model_dir, tmp_path):
    """An op left in float32 between DEQUANTIZE and QUANTIZE (no int8 kernel) is named; float32 is
    accepted only at a graph edge (QUANTIZE's input, DEQUANTIZE's output)."""
    path = model_dir / "float_island.tflite"
    if not path.exists():
        t = tf()
        fn = t.function(lambda x: t.math.floor(t.nn.relu6(x) * 3.0),
                        input_signature=[t.TensorSpec([1, 8], t.float32)]).get_concrete_function()
        conv = t.lite.TFLiteConverter.from_concrete_functions([fn])
        conv.optimizations = [t.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([np.full((1, 8), v, np.float32)] for v in (-2.0, 0.0, 7.0))
        conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8, t.lite.OpsSet.TFLITE_BUILTINS]
        conv.inference_input_type = conv.inference_output_type = t.int8
        path.write_bytes(conv.convert())
    with pytest.raises(MicrotError, match=r"op \d+ FLOOR \(output '.+', options \{.*\}\) is not supported") as err:
        compile_program([GraphSpec(path, "m")], tmp_path)
    _one_line(err.value)
    assert not list(tmp_path.iterdir())


def test_dynamic_shape_refused(model_dir):
    path = model_dir / "dynamic_rows.tflite"
    if not path.exists():
        t = tf()
        fn = t.function(lambda x: t.nn.relu(x), input_signature=[t.TensorSpec([1, None, 4], t.float32)])
        conv = t.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        conv.optimizations = [t.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([np.ones((1, 3, 4), np.float32) * v] for v in (-1.0, 2.0))
        conv.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = t.int8
        path.write_bytes(conv.convert())
    with pytest.raises(MicrotError, match="dynamic shape") as err:
        read_model(path)
    assert "fixed input shape" in _one_line(err.value)


def test_arena_larger_than_any_board_refused(model_dir, tmp_path):
    """A 4100 x 4100 activation (16.8 MB) fits no board: refused at compile time, nothing written."""
    path = convert(lambda x: tf().pad(x, [[0, 0], [2046, 2046], [2046, 2046], [0, 0]]), [(1, 8, 8, 1)],
                   model_dir, "huge_pad")
    with pytest.raises(MicrotError, match="more than any supported board") as err:
        compile_program([GraphSpec(path, "m")], tmp_path)
    _one_line(err.value)
    assert not list(tmp_path.iterdir())
