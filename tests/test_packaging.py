"""`pip install .` (not editable) gives a working `microt-deploy`: the wheel carries the firmware
templates, board files and bench data as package data, declares every runtime dependency, and the
CLI installed from it into a clean virtual environment (offline, from `make setup`'s .wheelhouse/)
lists the boards, runs `infer` bit-exactly against TFLite's reference kernels and builds a project's
firmware for the emulated board, run from a folder where the repository cannot be found.

The quick tests check the source side: the editable install uses the top-level folders in place,
and pyproject.toml's dependencies cover what the runtime code imports, at requirements.lock's versions.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from microt_deploy import resources

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / ".wheelhouse"
BOARD = "qemu_mps2_an386"
# What a wheel is built from (a copy of these, so the build leaves nothing in the working tree).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "requirements.lock", "microt_deploy",
           "firmware_templates", "boards", "bench")
DATA = ("firmware_templates", "boards", "bench/anchors", "bench/models")
JUNK_PARTS = {"__pycache__", ".pio"}
JUNK_SUFFIXES = {".pyc", ".pyo", ".o"}
# Packages whose code is training / export only (the `train` extra).
TRAIN_ONLY = ("model", "export")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _junk(rel: Path) -> bool:
    return bool(JUNK_PARTS.intersection(rel.parts)) or rel.suffix in JUNK_SUFFIXES


# ------------------------------------------------------------------------------------ quick checks


def test_the_source_checkout_uses_the_top_level_folders() -> None:
    assert not resources.DATA_DIR.exists(), "microt_deploy/_data belongs in wheels only, not in the source tree"
    assert resources.data_root() == REPO and not resources.installed()
    from microt_deploy import boards, compiler
    from microt_deploy.evaluate import bench
    from microt_deploy.firmware import render

    assert boards.BOARDS_DIR == REPO / "boards"
    assert render.TEMPLATES == REPO / "firmware_templates"
    assert compiler.RUNTIME_DIR == REPO / "firmware_templates" / "runtime"
    assert bench.BENCH_DIR == REPO / "bench"
    assert resources.path("firmware_templates/app/mdt_protocol.h").is_file()
    with pytest.raises(ValueError):
        resources.path("tests")


def test_declared_dependencies_hold_the_locked_versions() -> None:
    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            lock[canonicalize_name(name.strip())] = version.strip()
    project = _pyproject()["project"]
    for dep in [*project["dependencies"], *project["optional-dependencies"]["train"]]:
        req = Requirement(dep)
        version = lock.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is declared but not pinned in requirements.lock"
        assert req.specifier.contains(version, prereleases=True), f"{dep} excludes the locked {version}"


def _imported_top_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_imports_are_declared_dependencies() -> None:
    """Every third-party module the runtime code imports (anywhere, lazily too) outside the training
    and export packages comes from a declared dependency, and `pio` (PlatformIO) is one too."""
    package = REPO / "microt_deploy"
    imported: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] in TRAIN_ONLY:
            continue
        for name in _imported_top_names(path):
            imported.setdefault(name, []).append(str(rel))
    declared = {canonicalize_name(Requirement(d).name) for d in _pyproject()["project"]["dependencies"]}
    train = {canonicalize_name(Requirement(d).name) for d in _pyproject()["project"]["optional-dependencies"]["train"]}
    dists = packages_distributions()
    missing = []
    for name, where in sorted(imported.items()):
        if name in sys.stdlib_module_names or name in ("microt_deploy", "__future__"):
            continue
        owners = {canonicalize_name(d) for d in dists.get(name, [name])}
        if not owners & declared and not (name == "tensorflow" and owners & train):
            missing.append(f"{name} ({', '.join(sorted(owners))}) imported by {', '.join(where)}")
    assert not missing, "runtime imports not in pyproject.toml's dependencies:\n" + "\n".join(missing)
    assert "platformio" in declared, "the STM32 / --pio builds run PlatformIO's `pio`"


# ------------------------------------------------------------------------------ wheel and clean venv


def _run(cmd: list[str], *, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert res.returncode == 0, (f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n"
                                 f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel . --no-deps --no-build-isolation` of a copy of the working tree."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        source = REPO / name
        assert source.exists(), f"{source} is missing"
        if source.is_dir():  # build junk is copied too: the build must leave it out
            shutil.copytree(source, src / name, symlinks=True)
        else:
            shutil.copy2(source, src / name)
    out = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", out],
         cwd=src)
    wheels = sorted(out.glob("microt_deploy-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, got {wheels}"
    return wheels[0]


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment for the clean venv's commands: its bin first, nothing of the repository's
    venv, no pip configuration (so pip sees the wheelhouse only), a fresh home and caches."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    repo_bins = {str(Path(sys.prefix) / "bin"), str(REPO / ".venv" / "bin")}
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p not in repo_bins]
    env.update(PATH=os.pathsep.join([str(venv / "bin"), *path]), VIRTUAL_ENV=str(venv), HOME=str(home),
               PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               MICROT_CACHE_DIR=str(home / "microt-cache"), MPLCONFIGDIR=str(home / "mpl"),
               XDG_CACHE_HOME=str(home / ".cache"), MICROT_PIO_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A clean venv (no system site-packages) with the wheel and its dependencies installed offline
    from .wheelhouse/; ``cwd``: a folder outside the repository to run commands in."""
    wheels = sorted(WHEELHOUSE.glob("*.whl")) if WHEELHOUSE.is_dir() else []
    if not wheels:
        pytest.fail(f"no wheelhouse at {WHEELHOUSE} (the runtime dependencies' wheels): run `make setup`")
    root = tmp_path_factory.mktemp("clean")
    venv, home, cwd = root / "venv", root / "home", root / "work"
    home.mkdir()
    cwd.mkdir()
    # the venv module of the interpreter under the repo venv makes a venv of the base Python, not of it
    _run([sys.executable, "-m", "venv", venv])
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    env = _clean_env(venv, home)
    python = venv / "bin" / "python"
    res = subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--find-links", WHEELHOUSE, wheel],
                         capture_output=True, text=True, timeout=900, env=env, cwd=cwd)
    assert res.returncode == 0, (f"installing {wheel.name} offline from {WHEELHOUSE} failed (a dependency not "
                                 f"in the wheelhouse? run `make setup` again):\n{res.stdout[-3000:]}\n"
                                 f"{res.stderr[-3000:]}")
    return {"venv": venv, "python": python, "cli": venv / "bin" / "microt-deploy", "env": env, "cwd": cwd,
            "root": root}


def _cli(installed: dict, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    return _run([installed["cli"], *args], timeout=timeout, env=installed["env"], cwd=installed["cwd"])


@pytest.mark.slow
def test_the_wheel_carries_the_templates_boards_and_bench_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    data = {n[len("microt_deploy/_data/"):] for n in names if n.startswith("microt_deploy/_data/")}
    for folder in DATA:
        expected = {str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*")
                    if p.is_file() and not _junk(p.relative_to(REPO))}
        assert expected, f"{folder} is empty in the repository"
        got = {n for n in data if n.startswith(folder + "/")}
        assert got == expected, f"{folder}: missing {sorted(expected - got)[:10]}, extra {sorted(got - expected)[:10]}"
    for must in ("firmware_templates/runtime/mdt_runtime.h", "firmware_templates/app/mdt_protocol.h",
                 f"boards/{BOARD}.toml", "bench/anchors/tflm_cortex_m4_qemu.json"):
        assert must in data, f"{must} is not in {wheel.name}"
    assert "microt_deploy/compiler/harness.c" in names
    assert "microt_deploy/resources.py" in names
    junk = [n for n in names if _junk(Path(n))]
    assert not junk, f"build junk in the wheel: {junk[:10]}"
    outside = sorted({n.split("/")[0] for n in names} - {"microt_deploy", wheel.name.split("-")[0] + "-"
                                                          + wheel.name.split("-")[1] + ".dist-info"})
    assert not outside, f"the wheel installs more than the package: {outside}"
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = {canonicalize_name(Requirement(line.split(":", 1)[1].strip()).name)
                for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert {"platformio", "scons", "pyyaml", "tomli-w", "tflite", "jinja2"} <= requires


@pytest.mark.slow
def test_the_clean_install_finds_its_data_and_lacks_the_repository(installed: dict) -> None:
    res = _run([installed["python"], "-c",
                "import importlib.util, microt_deploy.resources as r; "
                "print(r.data_root()); print(r.installed()); print(importlib.util.find_spec('tensorflow'))"],
               env=installed["env"], cwd=installed["cwd"])
    root, is_installed, tf = res.stdout.split()
    assert Path(root).is_relative_to(installed["venv"]) and is_installed == "True", res.stdout
    assert tf == "None", "the clean venv sees TensorFlow: it is not clean"


@pytest.mark.slow
def test_installed_cli_lists_the_boards(installed: dict) -> None:
    out = _cli(installed, "boards").stdout
    for board in sorted((REPO / "boards").glob("*.toml")):
        assert board.stem in out, f"{board.stem} missing from `microt-deploy boards`:\n{out}"


@pytest.fixture(scope="module")
def split_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """trunk / part_head / rest .tflite, built with the repository's TensorFlow."""
    from tests.targets.split_model import build_split_model

    return build_split_model(tmp_path_factory.mktemp("graphs") / "export")


def _reference(model: Path, x: np.ndarray) -> np.ndarray:
    """TFLite's reference kernels (BUILTIN_REF), sample by sample, stacked like `infer`'s output."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(model),
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outs = []
    for sample in x:
        interp.set_tensor(inp["index"], sample[None])
        interp.invoke()
        outs.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(outs)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["trunk", "rest"])
def test_installed_infer_is_bit_exact_with_tflite(installed: dict, split_graphs: dict[str, Path], graph: str) -> None:
    model = installed["cwd"] / f"{graph}.tflite"
    shutil.copy2(split_graphs[graph], model)
    import tensorflow as tf

    shape = tf.lite.Interpreter(model_path=str(model)).get_input_details()[0]["shape"]
    x = np.random.default_rng(7).integers(-128, 128, size=(5, *shape[1:]), dtype=np.int8)
    np.save(installed["cwd"] / f"{graph}_x.npy", x)
    _cli(installed, "infer", model.name, "--input", f"{graph}_x.npy", "--output", f"{graph}_y.npy")
    got = np.load(installed["cwd"] / f"{graph}_y.npy")
    want = _reference(model, x)
    assert got.dtype == np.int8 and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    assert got.tobytes() == want.tobytes(), f"{graph}: {np.count_nonzero(got != want)} bytes differ from BUILTIN_REF"


@pytest.mark.slow
def test_installed_cli_compiles_and_builds_a_project(installed: dict, split_graphs: dict[str, Path]) -> None:
    import tensorflow as tf

    _cli(installed, "init", "proj", "--board", BOARD)
    project = installed["cwd"] / "proj"
    export = project / "export"
    export.mkdir(parents=True, exist_ok=True)
    for graph, path in split_graphs.items():
        shutil.copy2(path, export / f"{graph}.tflite")
    inp = tf.lite.Interpreter(model_path=str(split_graphs["trunk"])).get_input_details()[0]
    scale, zero_point = inp["quantization"]
    (export / "export.json").write_text(json.dumps(
        {"input": {"shape": [int(d) for d in inp["shape"]], "scale": float(scale), "zero_point": int(zero_point)}}))
    _cli(installed, "compile", "--project", "proj")
    assert (project / "compiled" / "mdt_model.c").is_file()
    out = _cli(installed, "build", "--project", "proj", "--board", BOARD).stdout
    image = project / "firmware" / BOARD / "firmware.elf"
    assert image.is_file() and image.stat().st_size > 0, f"no firmware image at {image}:\n{out}"
    assert image.read_bytes()[:4] == b"\x7fELF"
    assert f"built {BOARD}" in out, out


@pytest.mark.slow
def test_installed_cli_without_the_training_extra_says_what_to_install(installed: dict,
                                                                        split_graphs: dict[str, Path]) -> None:
    # bench compares with TensorFlow's reference kernels, in the training extra: one line, exit 4
    model = installed["cwd"] / "bench_trunk.tflite"
    shutil.copy2(split_graphs["trunk"], model)
    res = subprocess.run([str(installed["cli"]), "bench", "--models", model.name], capture_output=True, text=True,
                         timeout=300, env=installed["env"], cwd=installed["cwd"])
    assert res.returncode == 4, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'microt-deploy[train]'" in lines[-1], res.stderr
