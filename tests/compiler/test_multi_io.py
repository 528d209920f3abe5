"""Models with several inputs or outputs and float-I/O models (QUANTIZE / DEQUANTIZE at the edges)
through `infer` (.npy / .npz in and out), `compile` and `bench`, byte for byte against TFLite's
reference kernels (BUILTIN_REF); and unsupported ops refused by the CLI before any file is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from microt_deploy.compiler import GraphSpec, compile_program, read_model
from microt_deploy.compiler.host_runner import infer_files
from microt_deploy.errors import MicrotError

from .tflite_models import convert, random_inputs, reference, tf, weights

CLI = [sys.executable, "-m", "microt_deploy.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COLUMNS": "250",
           "MICROT_CACHE_DIR": os.environ.get("MICROT_CACHE_DIR", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def two_in_two_out(name):
    wt = weights(name, (3, 3, 4, 4))

    def fn(a, b):
        t = tf()
        y = t.nn.relu(t.nn.conv2d(a, wt, strides=1, padding="SAME") + b)
        return {"sum": y, "pooled": t.reduce_mean(y * b, axis=[1, 2])}

    return fn, [(1, 5, 5, 4), (1, 1, 1, 4)]


def _model(model_dir, name, **opts):
    fn, shapes = two_in_two_out(name)
    return convert(fn, shapes, model_dir, name, **opts)


def _names(path):
    interp = tf().lite.Interpreter(model_path=str(path))
    return [d["name"] for d in interp.get_input_details()], [d["name"] for d in interp.get_output_details()]


@pytest.mark.parametrize("name,opts", [("multi_io_int8", {}),
                                       ("multi_io_float", {"float_input": True, "float_output": True})])
def test_infer_npz_in_and_out(name, opts, model_dir, tmp_path):
    path = _model(model_dir, name, **opts)
    graph = read_model(path)
    assert (len(graph.inputs), len(graph.outputs)) == (2, 2)
    in_names, out_names = _names(path)
    xs = random_inputs(path, 3, seed=7)
    np.savez(tmp_path / "in.npz", **dict(zip(in_names, xs, strict=True)))
    res = cli("infer", str(path), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npz"))
    assert res.returncode == 0, res.stderr + res.stdout
    ref = reference(path, xs)
    with np.load(tmp_path / "out.npz") as got:
        assert sorted(got.files) == sorted(out_names)
        for n, r in zip(out_names, ref, strict=True):
            assert got[n].dtype == r.dtype == (np.float32 if opts else np.int8)
            assert got[n].shape == r.shape and got[n].tobytes() == r.tobytes(), n  # bit for bit


def test_compile_declares_every_input_and_output(model_dir, tmp_path):
    path = _model(model_dir, "multi_io_float", float_input=True, float_output=True)
    plan = compile_program([GraphSpec(path, "m")], tmp_path)
    header = (tmp_path / "mdt_model.h").read_text()
    for macro in ("M_NUM_INPUTS 2", "M_NUM_OUTPUTS 2", "M_INPUT1_DTYPE MDT_DTYPE_FLOAT32",
                  "M_OUTPUT1_DTYPE MDT_DTYPE_FLOAT32"):
        assert f"#define {macro}" in header
    g = plan["graphs"][0]
    assert [io["dtype"] for io in g["inputs"] + g["outputs"]] == ["float32"] * 4
    assert all(io["offset"] % 4 == 0 for io in g["inputs"] + g["outputs"])  # native float loads


def test_infer_refuses_what_does_not_fit(model_dir, tmp_path):
    path = _model(model_dir, "multi_io_int8")
    in_names, _ = _names(path)
    xs = random_inputs(path, 1, seed=1)
    np.save(tmp_path / "one.npy", xs[0])
    with pytest.raises(MicrotError, match=r"has 2 input\(s\)") as err:
        infer_files(path, tmp_path / "one.npy", tmp_path / "o.npz")
    assert "an .npz keyed by the input names" in str(err.value) and in_names[1] in str(err.value)
    np.savez(tmp_path / "partial.npz", **{in_names[0]: xs[0]})
    with pytest.raises(MicrotError, match=f"no array for input.*{in_names[1]}"):
        infer_files(path, tmp_path / "partial.npz", tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()


def test_float_model_infer_npy_gives_float_bit_for_bit(model_dir, tmp_path):
    def fn(x):
        t = tf()
        return t.nn.softmax(t.reduce_mean(t.nn.relu6(x * 2.0), axis=[2]))

    path = convert(fn, [(1, 4, 6, 5)], model_dir, "float_io_mean", float_input=True, float_output=True)
    codes = [op.code for op in read_model(path).ops]
    assert codes[0] == "QUANTIZE" and codes[-1] == "DEQUANTIZE"
    x = random_inputs(path, 4, seed=2)[0]
    assert x.dtype == np.float32
    np.save(tmp_path / "x.npy", x)
    res = cli("infer", str(path), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"))
    assert res.returncode == 0, res.stderr + res.stdout
    got, want = np.load(tmp_path / "y.npy"), reference(path, [x])[0]
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


def test_bench_feeds_the_real_input_dtype(model_dir, tmp_path, monkeypatch):
    """`bench` on a float-I/O model with two inputs and two outputs: bit-exact, JSON only where told."""
    for tool in ("qemu-system-arm", "arm-none-eabi-gcc"):  # make test installs them: missing is a failure
        assert shutil.which(tool), f"{tool} is not installed: run `make setup`"
    from rich.console import Console

    from microt_deploy.evaluate import bench

    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(bench, "tflm_host_arena", lambda model: None)  # not this test's business
    path = _model(model_dir, "multi_io_float", float_input=True, float_output=True)
    out = bench.run_bench([path], tmp_path / "b.json", Console(record=True, width=250))
    (entry,) = out["models"]
    assert entry["bit_exact"] and entry["bit_exact_naive"] and entry["differing_bytes"] == 0
    assert (tmp_path / "b.json").is_file() and not (tmp_path / "results.json").exists()


def test_cli_refuses_unsupported_op_before_writing(model_dir, tmp_path):
    """`infer` and a project's `compile`: one line naming the op, its index, its options and the fix,
    a non-zero exit, and no output (the project's compiled/ folder stays as it was)."""
    def fn(a, b):
        t = tf()
        return t.nn.relu(a) + t.math.squared_difference(a, b)

    path = convert(fn, [(1, 6), (1, 6)], model_dir, "int8_squared_difference")
    with pytest.raises(MicrotError) as err:
        read_model(path)
    (op,) = [o for o in range(10) if f"op {o} SQUARED_DIFFERENCE" in str(err.value)]
    text = str(err.value)
    assert "options {" in text and "supported: ADD," in text and "re-export the model without it" in text
    xs = random_inputs(path, 1, seed=0)
    in_names, _ = _names(path)
    np.savez(tmp_path / "in.npz", **dict(zip(in_names, xs, strict=True)))
    res = cli("infer", str(path), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npy"))
    assert res.returncode == 2 and not (tmp_path / "out.npy").exists()
    lines = res.stdout.strip().splitlines() + res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"op {op} SQUARED_DIFFERENCE" in lines[0] and "Traceback" not in lines[0]

    root = tmp_path / "proj"
    assert cli("init", str(root)).returncode == 0
    (root / "export").mkdir()
    for g in ("trunk", "part_head", "rest"):
        shutil.copy(path, root / "export" / f"{g}.tflite")
    (root / "compiled").mkdir()
    (root / "compiled" / "mdt_model.c").write_text("/* the last good compile */\n")
    before = {p.name: p.read_bytes() for p in (root / "compiled").iterdir()}
    res = cli("compile", "-p", str(root))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"op {op} SQUARED_DIFFERENCE" in res.stdout + res.stderr
    assert {p.name: p.read_bytes() for p in (root / "compiled").iterdir()} == before
