"""The benchmark: the harness's report parsing, the loud not-bit-exact marking, and a real run of the
smallest shared model on QEMU (DSP and naive builds, output checked against BUILTIN_REF, JSON)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from microt_deploy.errors import DeviceError
from microt_deploy.evaluate import bench
from microt_deploy.evaluate.bench import MODELS_DIR
from microt_deploy.evaluate.bench_image import parse_report

AD01 = MODELS_DIR / "mlperf_tiny_ad01_int8.tflite"


def test_parse_report_reads_every_line_kind():
    unit, total, layers, out = parse_report("U 0\nT 1200\nO 7f80ff\nL 0 0 400\nL 0 1 800\nE\n", 2)
    assert (unit, total, layers, out) == ("instructions", 1200, [400, 800], b"\x7f\x80\xff")


def test_parse_report_refuses_a_truncated_report():
    with pytest.raises(DeviceError, match="incomplete bench report"):
        parse_report("U 0\nT 1200\nO 7f", 1)


def test_table_says_loudly_when_not_bit_exact():
    row = {"model": "m.tflite", "macs": 10, "text_rodata_bytes": 1, "const_bytes": 1, "arena_bytes": 1,
           "tflm": {"arena_bytes": None, "host_arena": None}, "instructions": 5, "instr_per_mac": 0.5,
           "instr_per_live_mac": 0.5,
           "instr_per_mac_naive": 1.0, "speedup_vs_naive": 2.0, "vs_tflm_ref": None, "vs_tflm_cmsis_nn": None,
           "bit_exact": False, "bit_exact_naive": True, "differing_bytes": 3}
    console = Console(record=True, width=250)
    console.print(bench.summary_table([row]))
    assert "NO (3 bytes differ)" in console.export_text()


def test_run_bench_on_a_shared_model(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results.json")
    monkeypatch.setenv("MICROT_CACHE_DIR", str(tmp_path / "cache"))  # the stack marks it keeps
    console = Console(record=True, width=250)
    out = bench.run_bench([AD01], tmp_path / "bench.json", console)
    (entry,) = out["models"]
    assert entry["bit_exact"] and entry["bit_exact_naive"] and entry["differing_bytes"] == 0
    assert entry["macs"] == 264192 and entry["unit"] == "instructions"
    assert 0 < entry["instructions"] < entry["instructions_naive"]
    assert entry["instr_per_mac"] == pytest.approx(entry["instructions"] / entry["macs"], abs=1e-3)
    assert entry["tflm"]["cmsis_nn_instructions"] == 583240  # the anchor, read from the shared file
    assert entry["vs_tflm_cmsis_nn"] == pytest.approx(583240 / entry["instructions"], abs=1e-3)
    layer_sum = sum(la["instructions"] for la in entry["layers"])
    assert len(entry["layers"]) == 10 and 0.9 * entry["instructions"] < layer_sum < 1.1 * entry["instructions"]
    assert entry["const_bytes"] < entry["text_rodata_bytes"] and entry["arena_bytes"] > 0
    assert json.loads((tmp_path / "bench.json").read_text()) == out
    assert not (tmp_path / "results.json").exists()  # --json writes only where it is told
    text = console.export_text()
    assert "ad01_int8" in text and "x TFLM+CMSIS-NN" in text
    # the same DSP build at -Os (PlatformIO's default) beside -O2, and the painted stack's high-water mark
    assert entry["bit_exact_os"] and entry["instructions_os"] > 0 and 0 < entry["text_rodata_bytes_os"]
    assert 0 < entry["stack_bytes_naive"] < entry["stack_bytes"] < entry["stack_used_bytes"] < 16384
    assert entry["peak_sram_bytes"] > entry["arena_bytes"] + entry["stack_bytes"]
    assert "instr -Os" in text and "stack B" in text


def _tiny_logits_softmax(tmp_path):
    """Softmax over logits of a ~1e-10 scale (untrained weights do this): TFLite's reference SOFTMAX
    aborts its Prepare (its input scale times 2^26 must exceed 1); its optimised kernel runs."""
    from tests.compiler.keras_models import convert_keras

    build = """
def build():
    inp = tf.keras.Input((4, 4, 2))
    x = layers.Flatten()(inp)
    dense = layers.Dense(5, kernel_initializer=tf.keras.initializers.RandomNormal(stddev=1e-9),
                         bias_initializer="zeros")
    return tf.keras.Model(inp, layers.Softmax()(dense(x)))
"""
    return convert_keras(build, tmp_path / "tiny_logits.tflite")


@pytest.mark.slow  # two TensorFlow children
def test_oracle_survives_reference_kernels_that_abort(tmp_path):
    import numpy as np

    from microt_deploy.errors import MicrotError
    from tests.compiler.tflite_models import tf

    path = _tiny_logits_softmax(tmp_path)
    x = np.random.default_rng(0).integers(-128, 128, (1, 4, 4, 2), dtype=np.int8)
    with pytest.raises(MicrotError, match=r"reference kernels \(BUILTIN_REF\) abort on tiny_logits.tflite") as err:
        bench.reference_outputs(path, [x])  # the interpreter aborted in a child, not this process
    assert "\n" not in str(err.value)
    outs, oracle = bench.oracle_outputs(path, [x])
    assert oracle == bench.ORACLE_BUILTIN
    interp = tf().lite.Interpreter(model_path=str(path))  # TFLite's optimised kernels, in this process
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    assert np.array_equal(outs[0], interp.get_tensor(interp.get_output_details()[0]["index"]).reshape(-1))


@pytest.mark.slow  # a TensorFlow child and QEMU
def test_a_model_that_does_not_fit_is_reported_and_the_others_measured(tmp_path, monkeypatch):
    """2.6 MB of int8 weights against the bench board's 2 MB of flash: the linker's overflow is the
    oracle (region and bytes over); AD01 after it is still measured, the JSON names both, the exit is
    an error naming the model that did not fit."""
    from microt_deploy.errors import MicrotError
    from tests.compiler.keras_models import convert_keras

    big = convert_keras("""
def build():
    inp = tf.keras.Input((2048,))
    return tf.keras.Model(inp, layers.Dense(1280)(inp))
""", tmp_path / "too_big.tflite")
    monkeypatch.setenv("MICROT_CACHE_DIR", str(tmp_path / "cache"))
    console = Console(record=True, width=250)
    with pytest.raises(MicrotError, match=r"1 of 2 models do not fit qemu_mps2_an386: too_big.tflite \(FLASH over") \
            as err:
        bench.run_bench([big, AD01], tmp_path / "bench.json", console, os_variant=False)
    assert "\n" not in str(err.value)
    out = json.loads((tmp_path / "bench.json").read_text())
    (measured,) = out["models"]
    assert measured["model"] == AD01.name and measured["bit_exact"] and measured["bit_exact_naive"]
    (skipped,) = out["unmeasured"]
    assert skipped["model"] == "too_big.tflite" and skipped["region"] == "FLASH"
    # at least the weights beyond the flash: 2048 x 1280 bytes against 2 MB
    assert skipped["over_bytes"] >= 2048 * 1280 - 2 * 1024 * 1024
    assert "too_big.tflite: model does not fit" in console.export_text()
