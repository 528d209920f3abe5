"""`microt-deploy bench`: flash, peak SRAM and retired instructions of our compiled models on the
emulated Cortex-M4F, per model and per layer, against TFLM's anchors and against a naive build of
our own kernels (the same C with the DSP fast paths compiled out, -DMDT_NO_DSP).

Every measured inference's output is compared byte for byte with TFLite's reference kernels
(BUILTIN_REF); a mismatch is reported loudly in the table and in the JSON (``bit_exact: false``).
Owns the bench's table, its JSON (written to ``json_path`` only; `make bench` records bench/results.json
that way) and the anchors' reading. Models may have several inputs and outputs and float32 edges.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from microt_deploy import atomic, children, resources
from microt_deploy.boards import load_board
from microt_deploy.compiler import GraphSpec, compile_program
from microt_deploy.errors import MicrotError
from microt_deploy.evaluate import stack_marks
from microt_deploy.evaluate.bench_image import BenchRun, render_bench, run_bench_image
from microt_deploy.evaluate.dense import densify
from microt_deploy.export import paper_models
from microt_deploy.firmware.render import KERNEL_STATIC_BYTES
from microt_deploy.targets.toolchain import FitError

# The reference models and TFLM's measured figures travel with the repository (bench/README).
BENCH_DIR = resources.path("bench")
MODELS_DIR = BENCH_DIR / "models"
ANCHORS = BENCH_DIR / "anchors" / "tflm_cortex_m4_qemu.json"
RESULTS = BENCH_DIR / "results.json"
BOARD = "qemu_mps2_an386"
INPUT_SEED = 0
VARIANTS = {"dsp": (), "naive": ("MDT_NO_DSP",)}
# What the real boards would get at PlatformIO's default optimisation: the DSP build at -Os (one more
# image per model; `bench --no-os` leaves it out). The firmware's own flags are -O2 (targets/direct.py,
# targets/stm32 OPTIMIZE).
OS_OPT = "-Os"


def default_models() -> list[Path]:
    """The shared MLPerf Tiny models the anchors were measured on."""
    return sorted(MODELS_DIR.glob("*.tflite"))


def load_anchors(path: Path = ANCHORS) -> dict:
    """TFLM's measurements per model file name ({} when the anchors file is absent)."""
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("models", {})


def bench_input(shape: list[int], seed: int = INPUT_SEED) -> np.ndarray:
    """The deterministic int8 input every bench run uses for a graph of this input shape."""
    return np.random.default_rng(seed).integers(-128, 128, size=shape, dtype=np.int8)


def bench_inputs(model: Path, seed: int = INPUT_SEED) -> list[np.ndarray]:
    """One deterministic input per graph input, in the model's own dtype: int8 bytes, or for a float
    input (a QUANTIZE at the edge) float32 values spread over the range that QUANTIZE represents."""
    from microt_deploy.compiler import read_model

    graph = read_model(model)
    rng = np.random.default_rng(seed)
    xs = []
    for idx in graph.inputs:
        t = graph.t(idx)
        if t.dtype == "int8":
            xs.append(rng.integers(-128, 128, size=t.shape, dtype=np.int8))
            continue
        q = next((graph.t(op.outputs[0]) for op in graph.ops if op.code == "QUANTIZE" and op.inputs[0] == idx),
                 None)
        scale, zp = (q.qscale, q.qzero) if q is not None else (1.0, 0)
        lo, hi = (-128 - zp) * scale, (127 - zp) * scale
        xs.append(rng.uniform(lo, hi, size=t.shape).astype(np.float32))
    return xs


# TFLite's interpreter in a child: its kernels abort the process on some quantisation they refuse
# (BUILTIN_REF's SOFTMAX Prepare on a logit scale its fixed-point multiplier cannot hold, as Keras
# models with untrained weights have), which must not take the CLI down with it.
_ORACLE_SCRIPT = """
import sys, warnings
import numpy as np
from microt_deploy.export.quiet import import_tensorflow
tf = import_tensorflow()
kinds = tf.lite.experimental.OpResolverType
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    it = tf.lite.Interpreter(model_path=sys.argv[1], experimental_op_resolver_type=getattr(kinds, sys.argv[3]))
it.allocate_tensors()
xs = np.load(sys.argv[2])
for i, d in enumerate(it.get_input_details()):
    it.set_tensor(d["index"], np.asarray(xs["x%d" % i], dtype=d["dtype"]).reshape(d["shape"]))
it.invoke()
np.savez(sys.argv[2] + ".out.npz", **{"y%d" % i: it.get_tensor(d["index"]).reshape(-1)
                                       for i, d in enumerate(it.get_output_details())})
"""
# what a bench entry names as its oracle
ORACLE_REF = "BUILTIN_REF"
ORACLE_BUILTIN = "BUILTIN (BUILTIN_REF aborted)"


def _interpreter_outputs(model: Path, xs: list[np.ndarray], resolver: str) -> list[np.ndarray] | None:
    """The outputs of TFLite's interpreter with ``resolver`` ("BUILTIN_REF" / "BUILTIN") in a child
    process, or None if the interpreter aborted (killed by a signal)."""
    if importlib.util.find_spec("tensorflow") is None:  # the training extra is missing: the CLI says which
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
    with tempfile.TemporaryDirectory(prefix="mdt_oracle_") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **{f"x{i}": np.asarray(x) for i, x in enumerate(xs)})
        res = children.run([sys.executable, "-c", _ORACLE_SCRIPT, str(model), str(inputs), resolver],
                           capture_output=True, text=True, timeout=600)
        if res.returncode < 0:
            return None
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["no message"])[-1]
            raise MicrotError(f"TFLite's interpreter ({resolver}) failed on {model.name}: {last}",
                              "check that the model runs in TFLite (tf.lite.Interpreter) as it is")
        with np.load(f"{inputs}.out.npz") as out:
            return [out[f"y{i}"].copy() for i in range(len(out.files))]


def reference_outputs(model: Path, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Every output of TFLite's reference kernels (BUILTIN_REF) on the inputs ``xs`` (the model's own
    input dtypes), flattened, in the model's output dtypes. A one-line MicrotError if they abort."""
    outs = _interpreter_outputs(model, xs, "BUILTIN_REF")
    if outs is None:
        raise MicrotError(f"TFLite's reference kernels (BUILTIN_REF) abort on {model.name}: a quantisation they "
                          "refuse (e.g. a SOFTMAX whose input scale their fixed-point multiplier cannot hold)",
                          "bench it (its oracle falls back to TFLite's BUILTIN kernels) or use trained weights")
    return outs


def oracle_outputs(model: Path, xs: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """The bench's oracle: TFLite's reference kernels, or where they abort on the model, TFLite's
    BUILTIN (optimised) kernels; with the name of the one that answered."""
    outs = _interpreter_outputs(model, xs, "BUILTIN_REF")
    if outs is not None:
        return outs, ORACLE_REF
    outs = _interpreter_outputs(model, xs, "BUILTIN")
    if outs is None:
        raise MicrotError(f"TFLite's interpreter aborts on {model.name} with both its reference and its optimised "
                          "kernels", "check that the model runs in TFLite (tf.lite.Interpreter) as it is")
    return outs, ORACLE_BUILTIN


def reference_output(model: Path, x: np.ndarray) -> np.ndarray:
    """Output 0 of TFLite's reference kernels (BUILTIN_REF) on ``x`` (a single-input model), flattened."""
    return reference_outputs(model, [x])[0]


def split_outputs(graph: dict, raw: np.ndarray) -> list[np.ndarray]:
    """The bench image's output span (bench_image.io_span) -> each output in its own dtype, flattened."""
    start = min(o["offset"] for o in graph["outputs"])
    data = np.asarray(raw).view(np.uint8).reshape(-1)
    return [data[o["offset"] - start: o["offset"] - start + o["size"]].copy().view(np.dtype(o["dtype"]))
            for o in graph["outputs"]]


def _differing_bytes(got: list[np.ndarray], expected: list[np.ndarray]) -> int:
    total = 0
    for g, e in zip(got, expected, strict=True):
        gb, eb = g.view(np.uint8).reshape(-1), e.view(np.uint8).reshape(-1)
        total += int(np.count_nonzero(gb != eb)) if gb.shape == eb.shape else int(eb.size)
    return total


_TFLM_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_TFLM_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TFLM_SCRIPT = ("import sys\nfrom tflite_micro.python.tflite_micro import runtime as r\n"
                "r.Interpreter.from_file(sys.argv[1]).print_allocations()\n")


def tflm_host_arena(model: Path) -> dict | None:
    """Arena bytes the tflite-micro host interpreter allocates (total, and head = activations), or
    None when the package is unavailable. Runs in a child: the allocator prints from C."""
    try:
        res = children.run([sys.executable, "-c", _TFLM_SCRIPT, str(model)], capture_output=True, text=True,
                             timeout=120)
    except subprocess.TimeoutExpired:
        return None
    total, head = _TFLM_TOTAL.search(res.stdout + res.stderr), _TFLM_HEAD.search(res.stdout + res.stderr)
    if res.returncode != 0 or total is None:
        return None
    return {"total": int(total[1]), "head": int(head[1]) if head else None}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def bench_model(model: Path, work: Path, anchors: dict, os_variant: bool = True) -> dict:
    """Compile, build and run one model in both variants (and the DSP build at -Os with ``os_variant``);
    the model's entry of the results."""
    board = load_board(BOARD)
    compiled = work / "compiled"
    plan = compile_program([GraphSpec(model, "net")], compiled)
    graph = plan["graphs"][0]
    xs = bench_inputs(model)  # the model's real input dtypes (float32 for a float-input model)
    expected, oracle = oracle_outputs(model, xs)
    runs: dict[str, BenchRun] = {}
    for name, defines in VARIANTS.items():
        fw = render_bench(compiled, plan, xs, board, work / f"fw_{name}", defines)
        runs[name] = run_bench_image(board, fw, len(graph["layers"]))
    if os_variant:
        fw = render_bench(compiled, plan, xs, board, work / "fw_os", (), opt=OS_OPT)
        runs["os"] = run_bench_image(board, fw, len(graph["layers"]))
    macs, live = plan["macs"], plan["live_macs"]
    anchor = anchors.get(model.name, {})
    dsp, naive = runs["dsp"], runs["naive"]
    entry = {
        "model": model.name, "macs": macs, "live_macs": live, "unit": dsp.unit,
        "const_bytes": plan["const_bytes"], "flash_bytes": dsp.flash_bytes, "text_rodata_bytes": dsp.text_bytes,
        "arena_bytes": plan["arena_bytes"], "ram_bytes": dsp.ram_bytes,
        # the painted stack's high-water mark of one inference: the graph's own frames (below the
        # harness's call) and from the stack's top; peak SRAM = arena + the DSP kernels' static tables
        # + the graph's measured stack
        "stack_bytes": dsp.graph_stack, "stack_used_bytes": dsp.stack_used,
        "stack_bytes_naive": naive.graph_stack,
        "peak_sram_bytes": (plan["arena_size"] + KERNEL_STATIC_BYTES + dsp.graph_stack
                            if dsp.graph_stack is not None else None),
        "instructions": dsp.total, "instructions_naive": naive.total,
        "instr_per_mac": round(dsp.total / macs, 3) if macs else None,
        # per MAC the kernels execute (all-zero filter rows skipped): the kernels' own efficiency
        "instr_per_live_mac": round(dsp.total / live, 3) if live else None,
        "instr_per_mac_naive": round(naive.total / macs, 3) if macs else None,
        "speedup_vs_naive": _ratio(naive.total, dsp.total),
        "oracle": oracle,
        "bit_exact": _differing_bytes(split_outputs(graph, dsp.output), expected) == 0,
        "bit_exact_naive": _differing_bytes(split_outputs(graph, naive.output), expected) == 0,
        "differing_bytes": _differing_bytes(split_outputs(graph, dsp.output), expected),
        "tflm": {
            "ref_instructions": anchor.get("tflm_ref_instructions"),
            "cmsis_nn_instructions": anchor.get("tflm_cmsis_nn_instructions"),
            "arena_bytes": (anchor.get("tflm_arena_used_bytes") or {}).get("cmsis_nn"),
            "firmware_flash_bytes": (anchor.get("firmware_flash_bytes") or {}).get("cmsis_nn"),
            "host_arena": tflm_host_arena(model),
        },
        "layers": [{"index": la["index"], "op": la["op"], "output_shape": la["output_shape"], "macs": la["macs"],
                    "live_macs": la["live_macs"], "instructions": dsp.layers[la["index"]],
                    "instructions_naive": naive.layers[la["index"]],
                    "instr_per_mac": round(dsp.layers[la["index"]] / la["macs"], 3) if la["macs"] else None}
                   for la in graph["layers"]],
    }
    entry["vs_tflm_ref"] = _ratio(entry["tflm"]["ref_instructions"], dsp.total)
    entry["vs_tflm_cmsis_nn"] = _ratio(entry["tflm"]["cmsis_nn_instructions"], dsp.total)
    if "os" in runs:  # the same DSP build at -Os: what PlatformIO's default would give
        os_run = runs["os"]
        entry.update({"instructions_os": os_run.total, "flash_bytes_os": os_run.flash_bytes,
                      "text_rodata_bytes_os": os_run.text_bytes, "stack_bytes_os": os_run.graph_stack,
                      "bit_exact_os": _differing_bytes(split_outputs(graph, os_run.output), expected) == 0})
    return entry


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}"


def summary_table(results: list[dict]) -> Table:
    """ONE table: per model, size, memory, instructions and the ratios (x = TFLM's count / ours)."""
    table = Table(title=f"microt-deploy on {BOARD} (QEMU -icount shift=0: retired instructions, not cycles)")
    # -Os: the same DSP build at PlatformIO's default optimisation; stack B: the graph's measured
    # high-water mark (painted stack); peak SRAM: arena + the DSP kernels' static tables + that stack
    for col in ("model", "MACs", "flash B (text+rodata)", "flash B -Os", "model const B", "arena B", "stack B",
                "peak SRAM B", "TFLM arena B", "instr", "instr -Os", "instr/MAC", "instr/run MAC", "naive instr/MAC",
                "x naive", "x TFLM ref", "x TFLM+CMSIS-NN", "bit-exact"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        exact = "yes" if r["bit_exact"] and r["bit_exact_naive"] and r.get("bit_exact_os", True) else \
            f"[bold red]NO ({r['differing_bytes']} bytes differ)[/bold red]"
        if r.get("oracle", ORACLE_REF) != ORACLE_REF:
            exact += " (vs BUILTIN*)"
        tflm_arena = r["tflm"]["arena_bytes"] or (r["tflm"]["host_arena"] or {}).get("total")
        table.add_row(r["model"].removesuffix(".tflite").removeprefix("mlperf_tiny_"), _fmt(r["macs"]),
                      _fmt(r["text_rodata_bytes"]), _fmt(r.get("text_rodata_bytes_os")), _fmt(r["const_bytes"]),
                      _fmt(r["arena_bytes"]), _fmt(r.get("stack_bytes")), _fmt(r.get("peak_sram_bytes")),
                      _fmt(tflm_arena), _fmt(r["instructions"]), _fmt(r.get("instructions_os")),
                      _fmt(r["instr_per_mac"]), _fmt(r["instr_per_live_mac"]),
                      _fmt(r["instr_per_mac_naive"]),
                      _fmt(r["speedup_vs_naive"]), _fmt(r["vs_tflm_ref"]), _fmt(r["vs_tflm_cmsis_nn"]), exact)
    return table


def run_bench(paths: list[Path] | None, json_path: Path | None, console: Console, os_variant: bool = True) -> dict:
    """Bench ``paths`` (None: the shared models); print the table, write JSON; return the results.
    ``os_variant``: also the DSP build at -Os (instructions and flash; not for the dense twins). Each
    model's measured stack is kept for `microt-deploy build` (stack_marks)."""
    models = [Path(p) for p in (paths or default_models())]
    if not models:
        raise MicrotError(f"no models to bench (none in {MODELS_DIR})", "pass model paths: bench --models a.tflite")
    for m in models:
        if not m.is_file():
            raise MicrotError(f"no model at {m}", "pass existing .tflite files")
    anchors = load_anchors()
    results: list[dict] = []
    unmeasured: list[dict] = []  # models that do not fit the bench board: reported, the others still run
    with tempfile.TemporaryDirectory(prefix="microt-bench-") as tmp:
        for i, model in enumerate(models):
            console.print(f"[dim]bench {i + 1}/{len(models)}: {model.name} (compile, build, run in QEMU)[/dim]")
            try:
                results.append(bench_model(model, Path(tmp) / f"m{i}", anchors, os_variant))
            except FitError as err:
                unmeasured.append({"model": model.name, "reason": err.problem, "region": err.region,
                                   "over_bytes": err.over})
                console.print(f"[bold yellow]{model.name}: {err.problem}; not measured[/bold yellow]")
                continue
            r = results[-1]
            if r.get("stack_bytes") is not None:
                stack_marks.record(model, {"board": BOARD, "opt": "-O2", "graph_stack_bytes": r["stack_bytes"],
                                           "graph_stack_bytes_os": r.get("stack_bytes_os"),
                                           "stack_used_bytes": r["stack_used_bytes"]})
            twin = Path(tmp) / f"{model.stem}_dense.tflite"
            if results[-1]["live_macs"] < results[-1]["macs"] and densify(model, twin):
                # its instructions per MAC mix kernel speed with skipped zero rows: measure the kernels
                # alone on the same shapes too
                console.print(f"[dim]bench {i + 1}/{len(models)}: {twin.name} (its all-zero filter rows "
                              "filled: the kernels without the skip)[/dim]")
                results.append({**bench_model(twin, Path(tmp) / f"m{i}d", anchors, os_variant=False),
                                "dense_twin_of": model.name})
    if results:
        console.print(summary_table(results))
    backbones = paper_models.published_table(results)
    if backbones:
        table = Table(title="paper backbones at 176x176: peak SRAM (arena + kernel tables + measured stack) "
                            "against the engines' published figures")
        for col in backbones[0]:
            table.add_column(col, justify="left" if col == "backbone" else "right")
        for row in backbones:
            table.add_row(*("-" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
        console.print(table)
    fallback = [r["model"] for r in results if r.get("oracle", ORACLE_REF) != ORACLE_REF]
    if fallback:
        console.print(f"* TFLite's reference kernels abort on {', '.join(fallback)} (a quantisation they refuse, "
                      "e.g. a SOFTMAX input scale): compared with TFLite's BUILTIN kernels instead")
    bad = [r["model"] for r in results if not (r["bit_exact"] and r["bit_exact_naive"] and r.get("bit_exact_os", True))]
    if bad:
        oracles = "/".join(sorted({r.get("oracle", ORACLE_REF) for r in results}))
        console.print(f"[bold red]NOT BIT-EXACT vs TFLite's {oracles}: {', '.join(bad)}[/bold red]")
    out = {"board": BOARD, "unit": results[0]["unit"] if results else "instructions", "input_seed": INPUT_SEED,
           "note": "instructions are QEMU -icount shift=0 retired instructions; per-layer counts include "
                   "about 30 instructions of counter reads and have a resolution of 40",
           "models": results, "backbones": backbones, "unmeasured": unmeasured}
    if json_path:  # only where it is told (`make bench` passes --json bench/results.json)
        atomic.write_text(Path(json_path), json.dumps(out, indent=1) + "\n")
    if unmeasured:  # after the table and the JSON: what fits is measured, the exit says what did not
        names = ", ".join(f"{u['model']} ({u['region']} over by {u['over_bytes']:,} B)" for u in unmeasured)
        raise MicrotError(f"{len(unmeasured)} of {len(models)} models do not fit {BOARD}: {names}; the others are "
                          f"measured{f' in {json_path}' if json_path else ''}",
                          "bench them on a board with more memory, or shrink them (fewer channels, pruning)")
    return out
