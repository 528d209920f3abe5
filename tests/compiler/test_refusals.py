"""Bad input is refused at compile time with one line naming the problem (and the op) and the fix."""

from __future__ import annotations

import pytest

from microt_deploy.compiler import read_model
from microt_deploy.errors import MicrotError

from .tflite_models import convert, tf

SHARED = "/work/shared/models/mlperf_tiny_kws_ref_model.tflite"


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
    with pytest.raises(MicrotError, match=r"op 0 TANH \(output '.+'\) is not supported") as err:
        read_model(path)
    assert "supported ops are" in _one_line(err.value)


def test_float_op_in_int8_model_named(model_dir):
    path = convert(lambda x: tf().nn.relu6(x), [(1, 8)], model_dir, "float_out", float_output=True)
    with pytest.raises(MicrotError, match=r"op \d+ DEQUANTIZE") as err:
        read_model(path)
    _one_line(err.value)
