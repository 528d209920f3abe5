"""The user's commands on a real compiled split model: compile, build for the emulated and a real
board, infer; and the one-line refusals on bad input (no half-written output)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from microt_deploy.compiler.host_runner import run_model

CLI = [sys.executable, "-m", "microt_deploy.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "COLUMNS": "200", "MICROT_PIO_OFFLINE": "1"})


@pytest.fixture(scope="module")
def project(split_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "proj"
    assert cli("init", str(root)).returncode == 0
    (root / "export").mkdir()
    for name, path in split_model["paths"].items():
        shutil.copy(path, root / "export" / f"{name}.tflite")
    res = cli("compile", "-p", str(root))
    assert res.returncode == 0, res.stderr
    assert "arena" in res.stdout and (root / "compiled" / "plan.json").is_file()
    return root


def test_build_emulated_board_reports_flash_and_ram(project: Path) -> None:
    res = cli("build", "-p", str(project), "--board", "qemu_mps2_an386")
    assert res.returncode == 0, res.stderr
    assert "built qemu_mps2_an386: flash" in res.stdout and "of 655,360" in res.stdout
    assert (project / "firmware" / "qemu_mps2_an386" / "build.json").is_file()


def test_build_real_board_writes_a_validated_platformio_project(project: Path) -> None:
    res = cli("build", "-p", str(project), "--board", "nucleo_l4r5zi", "--offline")
    assert res.returncode == 0, res.stderr
    assert "built nucleo_l4r5zi: flash" in res.stdout and "[PlatformIO, offline" in res.stdout
    ini = (project / "firmware" / "nucleo_l4r5zi" / "platformio.ini").read_text()
    assert "platform = ststm32" in ini and "board = nucleo_l4r5zi" in ini


def test_pio_flag_is_refused_for_a_real_board(project: Path) -> None:
    res = cli("build", "-p", str(project), "--board", "nucleo_l4r5zi", "--pio")
    assert res.returncode == 2 and "--pio is for the emulated board" in res.stderr


def test_infer_matches_the_reference_and_refuses_bad_input(split_model, tmp_path: Path) -> None:
    trunk = split_model["paths"]["trunk"]
    x = np.random.default_rng(3).integers(-128, 128, (5, 1, 8, 8, 3), dtype=np.int8).reshape(5, 8, 8, 3)
    np.save(tmp_path / "in.npy", x)
    res = cli("infer", str(trunk), "--input", str(tmp_path / "in.npy"), "--output", str(tmp_path / "out.npy"))
    assert res.returncode == 0, res.stderr
    got = np.load(tmp_path / "out.npy")
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(trunk),
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    want = []
    for sample in x:
        interp.set_tensor(interp.get_input_details()[0]["index"], sample[None])
        interp.invoke()
        want.append(interp.get_tensor(interp.get_output_details()[0]["index"])[0])
    assert np.array_equal(got.reshape(5, -1), np.stack(want).reshape(5, -1))
    assert np.array_equal(run_model(trunk, [x])[0].reshape(5, -1), got.reshape(5, -1))

    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(trunk.read_bytes()[:300])
    res = cli("infer", str(corrupt), "--input", str(tmp_path / "in.npy"), "--output", str(tmp_path / "bad.npy"))
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "bad.npy").exists()
    res = cli("infer", str(tmp_path / "missing.tflite"), "--input", str(tmp_path / "in.npy"),
              "--output", str(tmp_path / "bad.npy"))
    assert res.returncode != 0 and "missing.tflite" in res.stderr and not (tmp_path / "bad.npy").exists()
