"""Running a .tflite through the generated C on the host: compile, build with gcc (cached by model
and compiler hash), stream samples through stdin/stdout. Also the `infer` verb's file-level entry."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import atomic, children
from ..errors import MicrotError, ToolMissingError
from . import RUNTIME_DIR, runtime_sources
from .codegen import GraphSpec, compile_program
from .patch import FORCE_ENV
from .reader import read_model

HERE = Path(__file__).resolve().parent
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
# The sanitized mode: ASan + UBSan, any report ends the run non-zero; the arena is a heap block of
# exactly MDT_ARENA_SIZE bytes (harness.c, MDT_HARNESS_HEAP_ARENA), so a kernel that runs past it
# is caught too. On for every run with MICROT_SANITIZE=1 (e.g. over the whole bit-exactness suite).
SANITIZE_FLAGS = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
                  "-DMDT_HARNESS_HEAP_ARENA"]
SANITIZE_ENV = "MICROT_SANITIZE"


def _sanitize_default(sanitize: bool | None) -> bool:
    if sanitize is not None:
        return sanitize
    return os.environ.get(SANITIZE_ENV, "") not in ("", "0")


def cache_dir() -> Path:
    root = os.environ.get("MICROT_CACHE_DIR") or Path.home() / ".cache" / "microt-deploy"
    return Path(root) / "host-runner"


def _toolchain_hash() -> str:
    h = hashlib.sha256()
    for path in sorted([*HERE.rglob("*.py"), HERE / "harness.c", *RUNTIME_DIR.glob("*.[ch]")]):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def build_host_binary(tflite_path: str | Path, sanitize: bool | None = None) -> Path:
    """Compile and build the model for the host once; return the cached executable. ``sanitize``:
    an ASan + UBSan build (default: the MICROT_SANITIZE environment variable)."""
    sanitize = _sanitize_default(sanitize)
    model_bytes = Path(tflite_path).read_bytes()
    # (a forced patch stage, patch.FORCE_ENV, changes the generated C: part of the key)
    key = hashlib.sha256(model_bytes + _toolchain_hash().encode() + (b"asan+ubsan" if sanitize else b"")
                         + os.environ.get(FORCE_ENV, "").encode()).hexdigest()[:24]
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
        cmd = ["gcc", *CFLAGS, *(SANITIZE_FLAGS if sanitize else []), "-I", str(work), "-I", str(RUNTIME_DIR),
               str(HERE / "harness.c"), str(work / "mdt_model.c"), *map(str, runtime_sources()), "-o",
               str(work / "model")]
        res = children.run(cmd, capture_output=True, text=True)
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
        names = ", ".join(graph.t(i).name for i in graph.inputs)
        raise MicrotError(f"the model has {len(graph.inputs)} input(s) ({names}) but {len(inputs)} array(s) "
                          "were given", "pass one array per model input (infer: an .npz keyed by the input names)")
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


def run_model(tflite_path: str | Path, inputs: list[np.ndarray], sanitize: bool | None = None) -> list[np.ndarray]:
    """Run the model's generated C on the host over a batch (axis 0); one array per output, in the
    model's I/O types (int8, or float32 for float-I/O models). ``sanitize``: run an ASan + UBSan
    build (default: MICROT_SANITIZE); a sanitizer report fails the run."""
    graph = read_model(tflite_path)
    batch = _batch(graph, inputs)
    shapes = [graph.t(i).shape for i in graph.inputs]
    per_sample = [np.asarray(x).reshape((batch, *s[1:]) if s else (batch,)) for x, s in zip(inputs, shapes,
                                                                                             strict=True)]
    stream = b"".join(x[b].tobytes() for b in range(batch) for x in per_sample)
    sanitize = _sanitize_default(sanitize)
    binary = build_host_binary(tflite_path, sanitize)
    env = None
    if sanitize:  # a clean run is one without any report: make every report fatal and visible
        env = {**os.environ, "ASAN_OPTIONS": "abort_on_error=0:exitcode=86:detect_leaks=0",
               "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87"}
    res = children.run([str(binary)], input=stream, capture_output=True, timeout=600, env=env)
    err = res.stderr.decode(errors="replace")
    if res.returncode != 0 or (sanitize and ("runtime error" in err or "Sanitizer" in err)):
        report = err.strip()
        if sanitize and "Sanitizer" in report:
            report = report[report.find("==") if "==" in report else 0 :]
        raise MicrotError(f"the host build of the model failed (exit {res.returncode}): {report[:600]}",
                          "report this as a compiler bug")
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


def _load_inputs(model: str | Path, input_path: str | Path) -> list[np.ndarray]:
    """An .npy (a single-input model) or an .npz keyed by the model's input tensor names."""
    try:
        loaded = np.load(input_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MicrotError(f"cannot read {input_path} as a .npy or .npz array ({exc})",
                          "pass a file written by numpy.save or numpy.savez") from exc
    if isinstance(loaded, np.ndarray):
        return [loaded]  # run_model refuses it for a model of several inputs
    with loaded:
        graph = read_model(model)
        names = [graph.t(i).name for i in graph.inputs]
        keys = list(loaded.files)
        if len(names) == 1 and len(keys) == 1:
            return [loaded[keys[0]]]
        missing = [n for n in names if n not in keys]
        if missing:
            raise MicrotError(f"{input_path} has no array for input(s) {', '.join(repr(n) for n in missing)} "
                              f"(it holds {', '.join(repr(k) for k in keys) or 'nothing'})",
                              f"key the .npz by the model's input names: {', '.join(names)}")
        return [loaded[n] for n in names]


def infer_files(model: str | Path, input_path: str | Path, output_path: str | Path) -> dict[str, np.ndarray]:
    """`microt-deploy infer`: run the model on an .npy (a single-input model) or an .npz keyed by the
    input tensor names (int8, or float32 for a float-input model), and write the outputs: one .npy for
    a single-output model, an .npz keyed by the output tensor names when there are several (or when the
    output path ends in .npz); atomically, or to standard output (``-``). Returns {name: array} (for a
    single output written as .npy, {"output": array}). An output path that is a link, device, FIFO,
    socket or folder is refused before anything runs."""
    to_stdout = str(output_path) == "-"
    fix = "name a new or regular .npy / .npz file, or - for standard output"
    if not to_stdout:
        atomic.check_file_target(Path(output_path), fix)
    outputs = run_model(model, _load_inputs(model, input_path))
    buf = io.BytesIO()
    if len(outputs) > 1 or str(output_path).endswith(".npz"):
        graph = read_model(model)
        result = dict(zip((graph.t(i).name for i in graph.outputs), outputs, strict=True))
        np.savez(buf, **result)
    else:
        result = {"output": outputs[0]}
        np.save(buf, outputs[0])
    if to_stdout:
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
    else:
        atomic.write_bytes(Path(output_path), buf.getvalue(), fix=fix)
    return result
