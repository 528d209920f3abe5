"""`microt-deploy bench`: flash, peak SRAM and retired instructions of our compiled models on the
emulated Cortex-M4F, per model and per layer, against TFLM's anchors and against a naive build of
our own kernels (the same C with the DSP fast paths compiled out, -DMDT_NO_DSP).

Every measured inference's output is compared byte for byte with TFLite's reference kernels
(BUILTIN_REF); a mismatch is reported loudly in the table and in the JSON (``bit_exact: false``).
Owns the bench's table, its JSON (``json_path`` and bench/results.json) and the anchors' reading.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from microt_deploy import atomic, children, resources
from microt_deploy.boards import load_board
from microt_deploy.compiler import GraphSpec, compile_program
from microt_deploy.errors import MicrotError
from microt_deploy.evaluate.bench_image import BenchRun, render_bench, run_bench_image
from microt_deploy.evaluate.dense import densify

# The reference models and TFLM's measured figures travel with the repository (bench/README).
BENCH_DIR = resources.path("bench")
MODELS_DIR = BENCH_DIR / "models"
ANCHORS = BENCH_DIR / "anchors" / "tflm_cortex_m4_qemu.json"
RESULTS = BENCH_DIR / "results.json"
BOARD = "qemu_mps2_an386"
INPUT_SEED = 0
VARIANTS = {"dsp": (), "naive": ("MDT_NO_DSP",)}


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


def reference_output(model: Path, x: np.ndarray) -> np.ndarray:
    """Output 0 of TFLite's reference kernels (BUILTIN_REF) on ``x``, flattened."""
    from microt_deploy.export.quiet import import_tensorflow

    tf = import_tensorflow()
    with warnings.catch_warnings():  # its deprecation notice is not the bench's business
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_path=str(model),
                                     experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).reshape(-1).copy()


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


def bench_model(model: Path, work: Path, anchors: dict) -> dict:
    """Compile, build and run one model in both variants; the model's entry of the results."""
    board = load_board(BOARD)
    compiled = work / "compiled"
    plan = compile_program([GraphSpec(model, "net")], compiled)
    graph = plan["graphs"][0]
    x = bench_input(graph["inputs"][0]["shape"])
    expected = reference_output(model, x)
    runs: dict[str, BenchRun] = {}
    for name, defines in VARIANTS.items():
        fw = render_bench(compiled, plan, x, board, work / f"fw_{name}", defines)
        runs[name] = run_bench_image(board, fw, len(graph["layers"]))
    macs, live = plan["macs"], plan["live_macs"]
    anchor = anchors.get(model.name, {})
    dsp, naive = runs["dsp"], runs["naive"]
    entry = {
        "model": model.name, "macs": macs, "live_macs": live, "unit": dsp.unit,
        "const_bytes": plan["const_bytes"], "flash_bytes": dsp.flash_bytes, "text_rodata_bytes": dsp.text_bytes,
        "arena_bytes": plan["arena_bytes"], "ram_bytes": dsp.ram_bytes,
        "instructions": dsp.total, "instructions_naive": naive.total,
        "instr_per_mac": round(dsp.total / macs, 3) if macs else None,
        # per MAC the kernels execute (all-zero filter rows skipped): the kernels' own efficiency
        "instr_per_live_mac": round(dsp.total / live, 3) if live else None,
        "instr_per_mac_naive": round(naive.total / macs, 3) if macs else None,
        "speedup_vs_naive": _ratio(naive.total, dsp.total),
        "bit_exact": bool(np.array_equal(dsp.output, expected)),
        "bit_exact_naive": bool(np.array_equal(naive.output, expected)),
        "differing_bytes": int(np.count_nonzero(dsp.output != expected)) if dsp.output.shape == expected.shape
        else int(expected.size),
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
    for col in ("model", "MACs", "flash B (text+rodata)", "model const B", "arena B", "TFLM arena B",
                "instr", "instr/MAC", "instr/run MAC", "naive instr/MAC", "x naive", "x TFLM ref", "x TFLM+CMSIS-NN",
                "bit-exact"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        exact = "yes" if r["bit_exact"] and r["bit_exact_naive"] else \
            f"[bold red]NO ({r['differing_bytes']} bytes differ)[/bold red]"
        tflm_arena = r["tflm"]["arena_bytes"] or (r["tflm"]["host_arena"] or {}).get("total")
        table.add_row(r["model"].removesuffix(".tflite").removeprefix("mlperf_tiny_"), _fmt(r["macs"]),
                      _fmt(r["text_rodata_bytes"]), _fmt(r["const_bytes"]), _fmt(r["arena_bytes"]), _fmt(tflm_arena),
                      _fmt(r["instructions"]), _fmt(r["instr_per_mac"]), _fmt(r["instr_per_live_mac"]),
                      _fmt(r["instr_per_mac_naive"]),
                      _fmt(r["speedup_vs_naive"]), _fmt(r["vs_tflm_ref"]), _fmt(r["vs_tflm_cmsis_nn"]), exact)
    return table


def run_bench(paths: list[Path] | None, json_path: Path | None, console: Console) -> dict:
    """Bench ``paths`` (None: the shared models); print the table, write JSON; return the results."""
    models = [Path(p) for p in (paths or default_models())]
    if not models:
        raise MicrotError(f"no models to bench (none in {MODELS_DIR})", "pass model paths: bench --models a.tflite")
    for m in models:
        if not m.is_file():
            raise MicrotError(f"no model at {m}", "pass existing .tflite files")
    anchors = load_anchors()
    results = []
    with tempfile.TemporaryDirectory(prefix="microt-bench-") as tmp:
        for i, model in enumerate(models):
            console.print(f"[dim]bench {i + 1}/{len(models)}: {model.name} (compile, build, run in QEMU)[/dim]")
            results.append(bench_model(model, Path(tmp) / f"m{i}", anchors))
            twin = Path(tmp) / f"{model.stem}_dense.tflite"
            if results[-1]["live_macs"] < results[-1]["macs"] and densify(model, twin):
                # its instructions per MAC mix kernel speed with skipped zero rows: measure the kernels
                # alone on the same shapes too
                console.print(f"[dim]bench {i + 1}/{len(models)}: {twin.name} (its all-zero filter rows "
                              "filled: the kernels without the skip)[/dim]")
                results.append({**bench_model(twin, Path(tmp) / f"m{i}d", anchors), "dense_twin_of": model.name})
    console.print(summary_table(results))
    bad = [r["model"] for r in results if not (r["bit_exact"] and r["bit_exact_naive"])]
    if bad:
        console.print(f"[bold red]NOT BIT-EXACT vs TFLite BUILTIN_REF: {', '.join(bad)}[/bold red]")
    out = {"board": BOARD, "unit": results[0]["unit"], "input_seed": INPUT_SEED,
           "note": "instructions are QEMU -icount shift=0 retired instructions; per-layer counts include "
                   "about 30 instructions of counter reads and have a resolution of 40",
           "models": results}
    text = json.dumps(out, indent=1) + "\n"
    for path in {RESULTS, *([Path(json_path)] if json_path else [])}:
        atomic.write_text(path, text)
    return out
