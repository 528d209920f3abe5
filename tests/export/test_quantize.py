"""Host-side quantisation against TFLite's own QUANTIZE kernel, and the split-params check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microt_deploy.errors import MicrotError
from microt_deploy.export.quantize import check_split_params, dequantize, quantize, quantize_input


def test_rounding_is_half_away_from_zero_and_saturates():
    values = np.array([0.25, -0.25, 0.75, -0.75, 0.1, 1000.0, -1000.0], dtype=np.float32)
    assert quantize(values, 0.5, 0).tolist() == [1, -1, 2, -2, 0, 127, -128]
    assert quantize(values, 0.5, 3).tolist() == [4, 2, 5, 1, 3, 127, -128]
    back = dequantize(quantize(values[:5], 0.5, 3), 0.5, 3)
    assert np.all(np.abs(back - values[:5]) <= 0.25 + 1e-7)


def test_quantize_matches_tflite_reference_quantize_kernel(tmp_path):
    """A float-input model whose first op is QUANTIZE: its int8 output must equal ``quantize``."""
    from microt_deploy.export.quiet import import_tensorflow, quiet

    tf = import_tensorflow()
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1.3, 0.9, (32, 4, 4, 3)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32)])
    def flat(x):
        return tf.reshape(x, [1, 48])

    converter = tf.lite.TFLiteConverter.from_concrete_functions([flat.get_concrete_function()], flat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_output_type = tf.int8
    with quiet():
        data = converter.convert()
    interp = tf.lite.Interpreter(
        model_content=data, experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF
    )
    interp.allocate_tensors()
    out = interp.get_output_details()[0]
    scale, zp = out["quantization"]
    # ties (x / scale = k + 0.5), values beyond the range and ordinary values
    ties = ((np.arange(48) - 24 + 0.5) * scale).astype(np.float32).reshape(1, 4, 4, 3)
    for sample in [ties, calib[:1] * 1.5, rng.normal(0, 1, (1, 4, 4, 3)).astype(np.float32)]:
        interp.set_tensor(interp.get_input_details()[0]["index"], sample)
        interp.invoke()
        got = interp.get_tensor(out["index"])
        assert np.array_equal(got.reshape(-1), quantize(sample, scale, zp).reshape(-1))


def _meta() -> dict:
    return {"input": {"shape": [1, 4, 4, 3], "scale": 2 / 255, "zero_point": -1}}


def test_quantize_input_takes_dict_file_or_folder(tmp_path):
    images = np.linspace(-1, 1, 2 * 48, dtype=np.float32).reshape(2, 4, 4, 3)
    want = quantize(images, 2 / 255, -1)
    (tmp_path / "export.json").write_text(json.dumps(_meta()))
    for source in (_meta(), tmp_path / "export.json", tmp_path):
        got = quantize_input(images, source)
        assert got.dtype == np.int8 and np.array_equal(got, want)
    # -1.0 saturates; 1.0 / float32(2 / 255) = 127.49999 rounds to 127, plus the zero point -1
    assert got.min() == -128 and got.max() == 126
    with pytest.raises(MicrotError, match="do not match the trunk input"):
        quantize_input(images[:, :2], _meta())
    with pytest.raises(MicrotError, match="microt-deploy export"):
        quantize_input(images, tmp_path / "nowhere")


def _t(scale: float, zp: int, shape=(1, 4, 4, 8)) -> dict:
    return {"shape": list(shape), "scale": scale, "zero_point": zp}


def test_split_params_check():
    trunk = _t(0.0996875911951065, 7)
    assert check_split_params(trunk, {"part_head": _t(0.0996875911951065, 7)}) == 0.0
    # one float32 ulp apart: the same calibration range rounded differently
    rel = check_split_params(trunk, {"part_head": _t(0.0996875986456871, 7), "rest": trunk})
    assert 0 < rel < 1e-6
    with pytest.raises(MicrotError, match="zero point 7 vs rest input scale .* zero point 8"):
        check_split_params(trunk, {"rest": _t(0.0996875911951065, 8)})
    with pytest.raises(MicrotError, match="split tensor quantisation differs"):
        check_split_params(trunk, {"part_head": _t(0.1, 7)})
    with pytest.raises(MicrotError, match="shape"):
        check_split_params(trunk, {"rest": _t(0.0996875911951065, 7, shape=(1, 8, 4, 4))})


def test_conversion_cannot_reach_the_network():
    import requests

    from microt_deploy.export.convert import _no_network

    with _no_network(), pytest.raises(MicrotError, match="tried to download"):
        requests.get("https://github.com/PINTO0309/onnx2tf/releases/download/x.npy", timeout=1)
