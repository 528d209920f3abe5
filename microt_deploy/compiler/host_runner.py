"""Running a .tflite through the generated C on the host: compile, build with gcc (cached by model
and compiler hash), stream samples through stdin/stdout. Also the `infer` verb's file-level entry."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import MicrotError, ToolMissingError
from . import RUNTIME_DIR, runtime_sources
from .codegen import GraphSpec, compile_program
from .reader import read_model

HERE = Path(__file__).resolve().parent
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]


def cache_dir() -> Path:
    root = os.environ.get("MICROT_CACHE_DIR") or Path.home() / ".cache" / "microt-deploy"
    return Path(root) / "host-runner"


def _toolchain_hash() -> str:
    h = hashlib.sha256()
    for path in sorted([*HERE.rglob("*.py"), HERE / "harness.c", *RUNTIME_DIR.glob("*.[ch]")]):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def build_host_binary(tflite_path: str | Path) -> Path:
    """Compile and build the model for the host once; return the cached executable."""
    model_bytes = Path(tflite_path).read_bytes()
    key = hashlib.sha256(model_bytes + _toolchain_hash().encode()).hexdigest()[:24]
    final = cache_dir() / key
    binary = final / "model"
    if binary.is_file():
        return binary
    if shutil.which("gcc") is None:
        raise ToolMissingError("gcc is not installed", "install it (apt-get install gcc)")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        plan = compile_program([GraphSpec(model_bytes, "m")], work, header_name="mdt_model")
        g = plan["graphs"][0]

        def arr(items, key_):
            return "{" + ", ".join(str(io[key_]) for io in items) + "}"

        cfg = ["#include \"mdt_model.h\"", "#define H_RUN m_run",
               f"#define H_INPUT_OFFSETS {arr(g['inputs'], 'offset')}",
               f"#define H_INPUT_SIZES {arr(g['inputs'], 'size')}",
               f"#define H_OUTPUT_OFFSETS {arr(g['outputs'], 'offset')}",
               f"#define H_OUTPUT_SIZES {arr(g['outputs'], 'size')}"]
        (work / "harness_cfg.h").write_text("\n".join(cfg) + "\n")
        cmd = ["gcc", *CFLAGS, "-I", str(work), "-I", str(RUNTIME_DIR), str(HERE / "harness.c"),
               str(work / "mdt_model.c"), *map(str, runtime_sources()), "-o", str(work / "model")]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise MicrotError(f"host build of the generated C failed: {res.stderr.strip()[:400]}",
                              "report this as a compiler bug with the model attached")
        try:
            os.replace(work, final)
        except OSError:  # another process built the same key first; use theirs
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return binary


def _batch(graph, inputs: list[np.ndarray]) -> int:
    if len(inputs) != len(graph.inputs):
        raise MicrotError(f"the model has {len(graph.inputs)} input(s) but {len(inputs)} array(s) were given",
                          "pass one array per model input")
    batch = None
    for i, (idx, x) in enumerate(zip(graph.inputs, inputs, strict=True)):
        t = graph.t(idx)
        x = np.asarray(x)
        if x.dtype != np.dtype(t.dtype):
            fix = (f"quantize it first: q = clip(round(x / {t.qscale:.9g}) + {t.qzero}, -128, 127).astype(int8)"
                   if t.dtype == "int8" else "pass float32 values (the model quantizes them itself)")
            raise MicrotError(f"input {i} '{t.name}' is {x.dtype}, the model takes {t.dtype}", fix)
        if tuple(x.shape) == t.shape:
            b = 1
        elif t.shape[:1] == (1,) and tuple(x.shape[1:]) == t.shape[1:] and x.shape[0] >= 1:
            b = x.shape[0]
        else:
            dims = ", ".join(map(str, t.shape[1:]))
            raise MicrotError(f"input {i} '{t.name}' has shape {list(x.shape)}, the model takes "
                              f"{list(t.shape)}", f"pass a {t.dtype} array of shape [N, {dims}]")
        if batch is not None and b != batch:
            raise MicrotError("the inputs have different batch sizes", "give every input the same first dimension")
        batch = b
    return batch or 1


def run_model(tflite_path: str | Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run the model's generated C on the host over a batch (axis 0); one array per output, in the
    model's I/O types (int8, or float32 for float-I/O models)."""
    graph = read_model(tflite_path)
    batch = _batch(graph, inputs)
    shapes = [graph.t(i).shape for i in graph.inputs]
    per_sample = [np.asarray(x).reshape((batch, *s[1:]) if s else (batch,)) for x, s in zip(inputs, shapes,
                                                                                             strict=True)]
    stream = b"".join(x[b].tobytes() for b in range(batch) for x in per_sample)
    binary = build_host_binary(tflite_path)
    res = subprocess.run([str(binary)], input=stream, capture_output=True, timeout=600)
    if res.returncode != 0:
        raise MicrotError(f"the host build of the model failed (exit {res.returncode}): "
                          f"{res.stderr.decode(errors='replace').strip()[:200]}", "report this as a compiler bug")
    outs = [graph.t(i) for i in graph.outputs]
    step = sum(t.nbytes for t in outs)
    data = np.frombuffer(res.stdout, dtype=np.uint8)
    if data.size != step * batch:
        raise MicrotError(f"the host build wrote {data.size} bytes, expected {step * batch}",
                          "report this as a compiler bug")
    data = data.reshape(batch, step)
    results, pos = [], 0
    for t in outs:
        chunk = data[:, pos:pos + t.nbytes].copy().view(np.dtype(t.dtype))
        pos += t.nbytes
        # samples are concatenated along axis 0, like running them one by one and np.concatenate
        shape = (batch * t.shape[0], *t.shape[1:]) if t.shape else (batch,)
        results.append(chunk.reshape(shape))
    return results


def infer_files(model: str | Path, input_npy: str | Path, output_npy: str | Path) -> np.ndarray:
    """`microt-deploy infer`: run the single-input model on an .npy (int8, or float32 for float-input
    models), write the output .npy atomically."""
    try:
        x = np.load(input_npy, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MicrotError(f"cannot read {input_npy} as a .npy array ({exc})", "pass a file written by numpy.save") \
            from exc
    outputs = run_model(model, [x])
    if len(outputs) != 1:
        raise MicrotError(f"the model has {len(outputs)} outputs; infer writes one .npy",
                          "use microt_deploy.compiler.host_runner.run_model for multi-output models")
    with tempfile.TemporaryFile() as handle:
        np.save(handle, outputs[0])
        handle.seek(0)
        atomic.write_bytes(Path(output_npy), handle.read())
    return outputs[0]
