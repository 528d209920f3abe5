"""Program compilation: graphs -> lowered layers -> arena plan -> generated C (header, source) and
plan.json. The emitted C is a straight sequence of kernel calls on one arena; no interpreter."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import MicrotError
from . import patch
from .fuse import fold_pads
from .ops import Layer, Ref, lower_op
from .patch import StagePolicy
from .planner import ALIGN, Plan, align, check_plan, plan_program
from .planner import PlannedGraph as _Compiled
from .reader import read_model
from .scratch import SCRATCH_KERNELS

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# <P>_INPUT<i>_DTYPE / _OUTPUT<j>_DTYPE: the element type of an I/O buffer. Float32 I/O (models
# converted with float inference_input/output_type) is quantized / dequantized inside the graph;
# its _SCALE is 0.0f and _ZERO_POINT 0 (not quantized). _SIZE is bytes, _COUNT elements.
_DTYPE_MACROS = {"int8": "MDT_DTYPE_INT8", "float32": "MDT_DTYPE_FLOAT32"}
_CTYPES = {"int8": "int8_t", "int32": "int32_t"}
_ARRAY_CTYPES = {"int8": "int8_t", "uint8": "uint8_t", "int32": "int32_t"}  # layers' const arrays
MAX_ARENA_BYTES = 16 * 1024 * 1024  # above every microcontroller board's SRAM (boards/*.toml: <= 512 KiB)


@dataclass
class GraphSpec:
    """One graph of a program: its .tflite (path or bytes), its C prefix, and which of its inputs are
    the very buffers of earlier graphs' outputs: ``input_bindings = {i: (other_prefix, j)}``."""

    model: str | Path | bytes
    prefix: str
    input_bindings: dict[int, tuple[str, int]] = field(default_factory=dict)


def _lower(spec: GraphSpec) -> _Compiled:
    graph = read_model(spec.model, name=spec.prefix)
    layers = []
    for op in graph.ops:
        layer = lower_op(graph, op)
        src, dst = graph.t(layer.args[0]), graph.t(layer.args[-1])
        if layer.alias and src.is_const:  # a reshaped constant is just a constant
            dst.data = src.data.reshape(dst.shape)
            continue
        layers.append(layer)
    return _Compiled(spec, graph, fold_pads(graph, layers))


def _check_program(graphs: list[GraphSpec]) -> None:
    if not graphs:
        raise MicrotError("no graphs to compile", "pass at least one GraphSpec")
    seen: set[str] = set()
    for spec in graphs:
        if not _IDENT.match(spec.prefix) or spec.prefix.upper().startswith("MDT"):
            raise MicrotError(f"graph prefix '{spec.prefix}' is not a usable C identifier",
                              "use letters, digits and underscores, not starting with a digit or 'mdt'")
        if spec.prefix.lower() in seen:
            raise MicrotError(f"graph prefix '{spec.prefix}' is used twice", "give every graph its own prefix")
        seen.add(spec.prefix.lower())


def _c_array(name: str, ctype: str, values: np.ndarray) -> str:
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    rows = [", ".join(flat[i:i + 24]) for i in range(0, len(flat), 24)] or ["0"]
    body = ",\n    ".join(rows)
    # MDT_ALIGN (mdt_runtime.h): the DSP kernels read weights as words (LDR / LDRD), also at -Os
    return f"static const {ctype} {name}[{max(len(flat), 1)}] MDT_ALIGN(MDT_CONST_ALIGN) = {{\n    {body}\n}};\n"


def _c_value(v, layer_name: str) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, Ref):
        return f"{layer_name}_{v.suffix}"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return f"{float(np.float32(v)).hex()}f"
    if isinstance(v, dict):  # a nested params struct (fused layers)
        return "{" + ", ".join(f".{k} = {_c_value(x, layer_name)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "{" + ", ".join(_c_value(x, layer_name) for x in v) + "}"
    return str(int(v))


def _emit_graph(gi: int, c: _Compiled, out: list[str], plan: Plan) -> int:
    """Append the graph's const data and run function to ``out``; return its const bytes."""
    p, g = c.spec.prefix, c.graph
    const_bytes = 0
    consts_done: set[int] = set()
    calls = []
    for li, layer in enumerate(c.layers):
        name = f"{p}_l{li}"
        for suffix, arr in layer.arrays.items():
            ctype = _ARRAY_CTYPES[arr.dtype.name]
            out.append(_c_array(f"{name}_{suffix}", ctype, arr))
            const_bytes += arr.nbytes
        ptrs = []
        for idx in layer.args:
            t = g.t(idx)
            if t.is_const:
                if idx not in consts_done:
                    out.append(_c_array(f"{p}_c{idx}", "int8_t", t.data.astype(np.int8)))
                    const_bytes += t.size
                    consts_done.add(idx)
                ptrs.append(f"{p}_c{idx}")
            else:
                ptrs.append(f"arena + {plan.offset_of[(gi, idx)]}")
        if layer.alias:
            calls.append(f"    /* layer {li}: {layer.op.code} aliases its input (no copy) */")
            continue
        if layer.kernel in SCRATCH_KERNELS:  # its working memory in the arena (scratch.py), last
            sb = plan.scratch.get((gi, li))
            ptrs.append(f"(mdt_scratch){{arena + {sb.offset}, {sb.size}, 0}}" if sb else "MDT_NO_SCRATCH")
        if layer.kernel == patch.STAGE_KERNEL:  # a patch-based stage: its own C function (patch.py)
            sb = plan.scratch[(gi, li)]
            call, stage_bytes = patch.emit_stage(layer, g, name, ptrs[0], ptrs[1], f"arena + {sb.offset}", out,
                                                 _c_array, _c_value, _ARRAY_CTYPES)
            const_bytes += stage_bytes
        elif layer.params_type is None:
            call = f"{layer.kernel}({layer.fields['size']}, {', '.join(ptrs)});"
        elif layer.pack_inputs:
            inits = ",\n    ".join(f".{k} = {_c_value(v, name)}" for k, v in layer.fields.items())
            out.append(f"static const {layer.params_type} {name} = {{\n    {inits}\n}};\n")
            call = (f"{{\n        const int8_t *const ins[{len(ptrs) - 1}] = {{{', '.join(ptrs[:-1])}}};\n"
                    f"        {layer.kernel}(&{name}, ins, {ptrs[-1]});\n    }}")
        else:
            inits = ",\n    ".join(f".{k} = {_c_value(v, name)}" for k, v in layer.fields.items())
            out.append(f"static const {layer.params_type} {name} = {{\n    {inits}\n}};\n")
            rows = [str(layer.inplace["rows"])] if layer.inplace and "rows" in layer.inplace else []
            call = f"{layer.kernel}(&{name}, {', '.join(rows + ptrs)});"  # a row kernel: rows per call first
        if layer.kernel in SCRATCH_KERNELS:  # a block: its mdt_scratch literal shares one stack slot
            call = f"{{ {call} }}"
        what = _op_label(layer, " + ")
        calls.append(f"    MDT_LAYER_BEGIN({gi}, {li}); /* {what} */\n    {call}\n"
                     f"    MDT_LAYER_END({gi}, {li});")
    # (void)arena: a graph of aliases only (a RESHAPE) has no kernel call
    out.append(f"void {p}_run(int8_t *arena)\n{{\n    (void)arena;\n" + "\n".join(calls) + "\n}\n")
    return const_bytes


def _io_macros(gi: int, c: _Compiled, plan: Plan) -> list[str]:
    pu = c.spec.prefix.upper()
    g = c.graph
    lines = [f"/* graph {gi}: {c.spec.prefix} */",
             f"#define {pu}_NUM_LAYERS {len(c.layers)}",
             f"#define {pu}_NUM_INPUTS {len(g.inputs)}",
             f"#define {pu}_NUM_OUTPUTS {len(g.outputs)}"]
    for kind, idxs in (("INPUT", g.inputs), ("OUTPUT", g.outputs)):
        for i, idx in enumerate(idxs):
            t = g.t(idx)
            m = f"{pu}_{kind}{i}"
            lines += [f"#define {m}_OFFSET {plan.offset_of[(gi, idx)]}", f"#define {m}_SIZE {t.nbytes}",
                      f"#define {m}_COUNT {t.size}", f"#define {m}_DTYPE {_DTYPE_MACROS[t.dtype]}",
                      f"#define {m}_SCALE {float(np.float32(t.qscale)):.9g}f",
                      f"#define {m}_ZERO_POINT ({t.qzero})", f"#define {m}_RANK {len(t.shape)}"]
            lines += [f"#define {m}_DIM{k} {d}" for k, d in enumerate(t.shape)]
    lines.append(f"void {c.spec.prefix}_run(int8_t *arena);")
    return lines


def compile_program(graphs: list[GraphSpec], out_dir: str | Path, header_name: str = "mdt_model",
                    stage_policy: StagePolicy | None = None) -> dict:
    """Compile graphs that run in list order on one arena; write ``<header_name>.h/.c`` and plan.json.
    ``stage_policy``: when the planner takes patch stages (patch.StagePolicy; None: the
    MICROT_PATCH_STAGE environment variable, unset off).

    Returns the plan (the same dict as plan.json). Raises MicrotError on anything unsupported, before
    any file is written.
    """
    if not _IDENT.match(header_name):
        raise MicrotError(f"header name '{header_name}' is not a C identifier", "use e.g. mdt_model")
    _check_program(graphs)
    compiled = [_lower(spec) for spec in graphs]
    memory = plan_program(compiled, stage_policy)
    peak = memory.peak
    arena = max(align(peak), ALIGN)
    if arena > MAX_ARENA_BYTES:
        big = max(memory.buffers, key=lambda b: b.size)
        raise MicrotError(f"the program needs a {arena:,}-byte arena (largest tensor '{big.tensors[0]}' "
                          f"{big.size:,} bytes), more than any supported board ({MAX_ARENA_BYTES:,} bytes)",
                          "use a smaller input resolution or fewer channels, or split the model")
    guard = header_name.upper() + "_H"
    header = [f"/* Generated by microt-deploy: {len(compiled)} graph(s) on one {arena}-byte arena. */",
              f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
              f"#define MDT_ARENA_SIZE {arena}", f"#define MDT_ARENA_PEAK_BYTES {peak}",
              f"#define MDT_ARENA_ALIGN {ALIGN}", "",
              "/* Element types of the I/O buffers (<P>_INPUT<i>_DTYPE); a float32 buffer holds",
              "   _COUNT native floats in _SIZE bytes and has _SCALE 0.0f (not quantized). */",
              "#define MDT_DTYPE_INT8 9", "#define MDT_DTYPE_FLOAT32 0", "",
              "/* Per-layer hooks for profiling; define them before including this header. */",
              "#ifndef MDT_LAYER_BEGIN", "#define MDT_LAYER_BEGIN(graph, layer) ((void)0)", "#endif",
              "#ifndef MDT_LAYER_END", "#define MDT_LAYER_END(graph, layer) ((void)0)", "#endif", ""]
    source = [f"/* Generated by microt-deploy. */\n#include <stddef.h>\n#include \"mdt_runtime.h\"\n"
              f"#include \"{header_name}.h\"\n"]
    plan_graphs = []
    total_const = 0
    for gi, c in enumerate(compiled):
        header += _io_macros(gi, c, memory) + [""]
        const_bytes = _emit_graph(gi, c, source, memory)
        total_const += const_bytes
        plan_graphs.append(_graph_plan(gi, c, const_bytes, memory))
    header.append(f"#endif /* {guard} */")
    plan = {
        "version": 1, "header": header_name, "arena_bytes": peak, "arena_size": arena, "align": ALIGN,
        "const_bytes": total_const, "macs": sum(g["macs"] for g in plan_graphs),
        "live_macs": sum(g["live_macs"] for g in plan_graphs), "graphs": plan_graphs,
        "tensors": _tensor_records(compiled, memory),
        "buffers": [{"id": b.id, "offset": b.offset, "size": b.size, "first": b.first, "last": b.last,
                     "tensors": b.tensors} for b in memory.buffers],
    }
    check_plan(plan)  # no two live tensors share bytes: an error on every compile, not an assert
    out = Path(out_dir)
    atomic.write_text(out / f"{header_name}.h", "\n".join(header) + "\n")
    atomic.write_text(out / f"{header_name}.c", "\n".join(source))
    atomic.write_text(out / "plan.json", json.dumps(plan, indent=1) + "\n")
    return plan


def _tensor_records(compiled: list[_Compiled], plan: Plan) -> list[dict]:
    return [{"key": f"{compiled[gi].spec.prefix}:{idx}", "name": compiled[gi].graph.t(idx).name,
             "offset": plan.offset_of[(gi, idx)], "size": plan.size_of[(gi, idx)], "first": f, "last": la,
             "buffer": plan.buffer_of[(gi, idx)].id} for (gi, idx), (f, la) in sorted(plan.first_last.items())]


def _op_label(layer: Layer, sep: str) -> str:
    """The TFLite ops a layer runs: PAD+CONV_2D for a folded PAD, CONV_2D+ADD for a fused ADD."""
    ops = [o.code for o in layer.fused["ops"]] if layer.fused else [layer.op.code]
    return sep.join((["PAD"] if layer.folded_pad else []) + ops)


def _graph_plan(gi: int, c: _Compiled, const_bytes: int, plan: Plan) -> dict:
    g = c.graph

    def io(idx: int) -> dict:
        t, buf = g.t(idx), plan.buffer_of[(gi, idx)]
        return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "offset": plan.offset_of[(gi, idx)],
                "size": t.nbytes,
                "scale": float(t.qscale), "zero_point": t.qzero, "buffer": buf.id}

    layers = []
    for li, layer in enumerate(c.layers):
        t = g.t(layer.args[-1])
        buf = plan.buffer_of[(gi, layer.args[-1])]
        op = _op_label(layer, "+")
        layers.append({"index": li, "op": op, "tflite_op": layer.op.index, "output": t.name,
                       "output_shape": list(t.shape), "macs": layer.macs,
                       "live_macs": layer.macs if layer.live_macs is None else layer.live_macs,
                       "weight_bytes": layer.weight_bytes,
                       "output_offset": plan.offset_of[(gi, layer.args[-1])], "output_size": t.nbytes, "buffer": buf.id,
                       "output_key": f"{c.spec.prefix}:{layer.args[-1]}",
                       "live_bytes": plan.live_bytes(c.start + 1 + li),
                       "inplace": None if not layer.inplace else {
                           "input": f"{c.spec.prefix}:{layer.inplace['input']}", "delta": layer.inplace["delta"],
                           "rows_per_call": layer.inplace.get("rows"),
                           "scratch_size": layer.inplace["scratch"],
                           "scratch_offset": plan.scratch[(gi, li)].offset if layer.inplace["scratch"] else None},
                       "scratch": {"offset": plan.scratch[(gi, li)].offset, "size": plan.scratch[(gi, li)].size}
                       if (gi, li) in plan.scratch else None,
                       "folded_pad": None if not layer.folded_pad else {
                           "tflite_op": layer.folded_pad["op"].index,
                           "intermediate": layer.folded_pad["intermediate"],
                           "pad_before": layer.folded_pad["pad_before"]},
                       "fused": None if not layer.fused else {
                           "ops": [o.code for o in layer.fused["ops"]],
                           "tflite_ops": [o.index for o in layer.fused["ops"]],
                           "intermediate": layer.fused["intermediate"], "chunk_w": layer.fields["chunk_w"]},
                       "patch_stage": patch.plan_record(layer, g),  # None but for a patch stage (patch.py)
                       "step": c.start + 1 + li, "alias": layer.alias,
                       "inputs": [{"name": g.t(i).name, "const": g.t(i).is_const,
                                   "buffer": None if g.t(i).is_const else plan.buffer_of[(gi, i)].id}
                                  for i in layer.args[:-1]]})
    return {"prefix": c.spec.prefix, "index": gi, "start_step": c.start, "end_step": c.end,
            "inputs": [io(i) for i in g.inputs], "outputs": [io(i) for i in g.outputs],
            "bindings": {str(k): list(v) for k, v in c.spec.input_bindings.items()},
            "layers": layers, "macs": sum(la["macs"] for la in layers),
            "live_macs": sum(la["live_macs"] for la in layers), "const_bytes": const_bytes,
            "weight_bytes": sum(la["weight_bytes"] for la in layers)}
