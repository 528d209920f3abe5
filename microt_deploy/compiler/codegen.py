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
from .fuse import FUSED_KERNEL, apply_fusions, choose_fusions, fusion_candidates, scratch_bytes
from .ir import Graph
from .ops import Layer, Ref, lower_op
from .planner import (
    ALIGN,
    ELEMENTWISE_INPLACE,
    ROW_KERNELS,
    Buffer,
    align,
    check_plan,
    conv_row_inplace,
    place_best,
    span,
)
from .reader import read_model

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


@dataclass
class _Compiled:
    spec: GraphSpec
    graph: Graph
    layers: list[Layer]
    start: int = 0  # program step where the graph's inputs are written
    end: int = 0  # program step of its last layer


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
    return _Compiled(spec, graph, layers)


# A bound buffer's bytes are passed on unchanged; each graph keeps its own parameters (as the
# reference interpreter chain does). Scales that differ by float32 rounding of one calibration range
# (relative 1e-5: under 3e-3 of a step even at |q - zp| = 255) mean the same values, so they bind.
# The export stage checks the same bound (microt_deploy.export.quantize uses this constant).
BINDING_SCALE_RTOL = 1e-5


def _same_scale(a: object, b: object) -> bool:
    sa = np.atleast_1d(np.asarray(a, dtype=np.float64))
    sb = np.atleast_1d(np.asarray(b, dtype=np.float64))
    return sa.shape == sb.shape and bool(np.all(np.abs(sa - sb) <= BINDING_SCALE_RTOL * np.abs(sb)))


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


def _decide_and_place(compiled, keys, first, last, find, offset_in_root, union, kernels, disabled):
    """In-place decisions in program order (an input read for the last time by this layer gives its
    place to the output: element-wise kernels at the same address, convs row by row at an offset),
    then groups -> buffers, plus one scratch row per in-place conv, placed on the arena."""
    members: dict = {}
    for key in keys:
        members.setdefault(find(key), []).append(key)

    def group_last(key):
        return max(last[k] for k in members[find(key)])

    def extent(root):
        spans = [(offset_in_root(k)[1], offset_in_root(k)[1] + compiled[k[0]].graph.t(k[1]).nbytes)
                 for k in members[root]]
        return min(a for a, _ in spans), max(b for _, b in spans)

    def merge(a, b, delta):
        ra, rb = find(a), find(b)
        union(a, b, delta)
        root = find(a)
        members[root] = members.pop(ra, []) + (members.pop(rb, []) if rb != ra else [])

    _scratch.clear()
    for gi, c in enumerate(compiled):
        g = c.graph
        for li, layer in enumerate(c.layers):
            layer.inplace = None
            layer.kernel = kernels[(gi, li)]
            if layer.alias or (gi, li) in disabled:
                continue
            st = c.start + 1 + li
            out_key = (gi, layer.args[-1])
            y = g.t(layer.args[-1])
            if layer.kernel in ELEMENTWISE_INPLACE:
                for idx in layer.args[:-1]:
                    x = g.t(idx)
                    if x.is_const or x.size != y.size or find((gi, idx)) == find(out_key):
                        continue
                    if group_last((gi, idx)) == st:
                        merge(out_key, (gi, idx), 0)
                        layer.inplace = {"input": idx, "delta": 0, "scratch": 0}
                        break
            elif layer.kernel == FUSED_KERNEL:  # output element i reads skip element i only
                idx = layer.args[1]
                if find((gi, idx)) != find(out_key) and g.t(idx).size == y.size and group_last((gi, idx)) == st:
                    merge(out_key, (gi, idx), 0)
                    layer.inplace = {"input": idx, "delta": 0, "scratch": 0}
            elif layer.kernel in ROW_KERNELS and layer.fields["batches"] == 1:
                idx = layer.args[0]
                x = g.t(idx)
                if x.is_const or group_last((gi, idx)) != st:
                    continue
                delta, scratch = conv_row_inplace(layer.fields)
                # the merged group must not outgrow both what it was and the output alone (drift)
                old_lo, old_hi = extent(find((gi, idx)))
                _, oi = offset_in_root((gi, idx))
                _, oo = offset_in_root(out_key)
                out_lo, out_hi = extent(find(out_key))
                new_size = max(old_hi, oi + delta - oo + out_hi) - min(old_lo, oi + delta - oo + out_lo)
                if span(x.nbytes, y.nbytes, delta) + scratch < x.nbytes + y.nbytes and \
                        new_size <= max(old_hi - old_lo, y.nbytes) + scratch:
                    merge(out_key, (gi, idx), delta)
                    layer.inplace = {"input": idx, "delta": delta, "scratch": scratch}
                    layer.kernel = ROW_KERNELS[layer.kernel]

    groups: dict = {}
    lo: dict = {}
    for key in keys:
        root, off = offset_in_root(key)
        gi, idx = key
        t = compiled[gi].graph.t(idx)
        buf = groups.get(root)
        if buf is None:
            buf = groups[root] = Buffer(len(groups), 0, first[key], last[key])
            lo[root], hi = off, off + t.nbytes
        else:
            hi = max(buf.size + lo[root], off + t.nbytes)
            lo[root] = min(lo[root], off)
        buf.size = hi - lo[root]
        buf.first = min(buf.first, first[key])
        buf.last = max(buf.last, last[key])
        buf.tensors.append(f"{compiled[gi].spec.prefix}:{t.name}")
    buffers = list(groups.values())
    for gi, c in enumerate(compiled):
        for li, layer in enumerate(c.layers):
            size = max(layer.inplace["scratch"] if layer.inplace else 0, scratch_bytes(layer))
            if size:
                st = c.start + 1 + li
                sb = Buffer(len(buffers), size, st, st, [f"{c.spec.prefix}:scratch{li}"])
                buffers.append(sb)
                _scratch[(gi, li)] = sb
    peak = place_best(buffers)
    return peak, buffers, groups, lo


def _plan(compiled: list[_Compiled]) -> list[Buffer]:
    """Group tensors that share memory (aliases at the same address, in-place outputs at a fixed
    offset from their input), compute each group's live range in program steps, then place groups
    and per-layer scratch rows on the arena."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}
    rel: dict[tuple[int, int], int] = {}  # byte offset of a key relative to its parent

    def find(k):
        path = []
        while parent.setdefault(k, k) != k:
            path.append(k)
            k = parent[k]
        for p_ in reversed(path):  # compress: offsets become relative to the root
            if parent[p_] != k:
                rel[p_] = rel.get(p_, 0) + rel.get(parent[p_], 0)
                parent[p_] = k
        return k

    def offset_in_root(k):
        root = find(k)
        return root, (0 if k == root else rel.get(k, 0))

    def union(a, b, delta=0):
        """Place a's group so that a starts ``delta`` bytes after b."""
        ra, oa = offset_in_root(a)
        rb, ob = offset_in_root(b)
        if ra != rb:
            parent[ra] = rb
            rel[ra] = ob + delta - oa

    prefixes = {c.spec.prefix: gi for gi, c in enumerate(compiled)}
    first: dict[tuple[int, int], int] = {}
    last: dict[tuple[int, int], int] = {}

    def touch(key, step, define=False):
        if define:
            first[key] = min(first.get(key, step), step)
        last[key] = max(last.get(key, step), step)

    step = 0
    for gi, c in enumerate(compiled):
        g = c.graph
        c.start = step
        for idx in g.inputs:
            touch((gi, idx), step, define=True)
        for layer in c.layers:
            step += 1
            for idx in layer.args[:-1]:
                if not g.t(idx).is_const:
                    touch((gi, idx), step)
            touch((gi, layer.args[-1]), step, define=True)
            if layer.alias:
                union((gi, layer.args[-1]), (gi, layer.args[0]))
        c.end = step
        step += 1
        for i, (other, j) in c.spec.input_bindings.items():
            if other not in prefixes or prefixes[other] >= gi:
                raise MicrotError(f"graph '{c.spec.prefix}' binds input {i} to '{other}', which is not an "
                                  "earlier graph", "list the producing graph first")
            src_c = compiled[prefixes[other]]
            if not 0 <= i < len(g.inputs) or not 0 <= j < len(src_c.graph.outputs):
                raise MicrotError(f"graph '{c.spec.prefix}' binds input {i} to output {j} of '{other}', "
                                  "which does not exist", "fix input_bindings")
            a, b = g.t(g.inputs[i]), src_c.graph.t(src_c.graph.outputs[j])
            if a.shape != b.shape or a.qzero != b.qzero or not _same_scale(a.qscale, b.qscale):
                raise MicrotError(
                    f"input {i} '{a.name}' of '{c.spec.prefix}' {list(a.shape)} scale {a.qscale} zp {a.qzero} "
                    f"does not match output {j} '{b.name}' of '{other}' {list(b.shape)} scale {b.qscale} "
                    f"zp {b.qzero}", "calibrate both graphs on the same split activation and re-export")
            union((gi, g.inputs[i]), (prefixes[other], src_c.graph.outputs[j]))
            touch((gi, g.inputs[i]), c.end)  # kept intact until this reader has finished
        for idx in g.outputs:  # the firmware reads outputs until the next graph's inputs are written
            touch((gi, idx), c.end + 1)

    keys = sorted(first.keys() | last.keys())
    for key in keys:
        first.setdefault(key, last[key])
    base_parent, base_rel = dict(parent), dict(rel)
    kernels = {(gi, li): layer.kernel for gi, c in enumerate(compiled) for li, layer in enumerate(c.layers)}

    def build(disabled: set) -> tuple[int, list[Buffer], dict, dict]:
        parent.clear()
        parent.update(base_parent)
        rel.clear()
        rel.update(base_rel)
        return _decide_and_place(compiled, keys, first, last, find, offset_in_root, union, kernels, disabled)

    # In-place chains drift (each row-wise conv starts its output a little before its input); a long
    # chain can cost more than it saves, so drop single in-place decisions while the arena shrinks.
    # A row-wise conv also runs slower than the whole-layer (DSP) kernel, so it is dropped as well
    # when the arena does not grow without it: it is kept only where it lowers the peak.
    peak, *_ = build(set())
    disabled: set = set()
    for cand in [(gi, li) for gi, c in enumerate(compiled) for li, la in enumerate(c.layers) if la.inplace]:
        trial, *_ = build(disabled | {cand})
        # (the layer still names its whole-layer kernel here; build() switches it to the row kernel)
        row_wise = compiled[cand[0]].layers[cand[1]].kernel in ROW_KERNELS
        if trial < peak or (row_wise and trial == peak):
            peak, disabled = trial, disabled | {cand}
    peak, buffers, groups, lo = build(disabled)
    _buffer_of.clear()
    _offset_of.clear()
    _first_last.clear()
    _size_of.clear()
    for key in keys:
        root, off = offset_in_root(key)
        _buffer_of[key] = groups[root]
        _offset_of[key] = groups[root].offset + off - lo[root]
        _first_last[key] = (first[key], last[key])
        _size_of[key] = compiled[key[0]].graph.t(key[1]).nbytes
    return buffers


def _plan_fused(compiled: list[_Compiled]) -> list[Buffer]:
    """Plan with the conv+ADD fusions that lower the peak (fuse.choose_fusions), each trial on fresh
    copies of the lowered layers; the last _plan call leaves the chosen plan in the module state."""
    base = [c.layers for c in compiled]
    cands = [(gi, li, base[gi][li]) for gi, c in enumerate(compiled) for li in fusion_candidates(c.graph, base[gi])]

    def plan_with(chosen: dict) -> list[Buffer]:
        for gi, c in enumerate(compiled):
            c.layers = apply_fusions(c.graph, base[gi], {li: k for (g, li), k in chosen.items() if g == gi})
        return _plan(compiled)

    def peak_of(chosen: dict) -> int:
        return max((b.offset + b.size for b in plan_with(chosen)), default=0)

    return plan_with(choose_fusions(cands, peak_of))


_buffer_of: dict[tuple[int, int], Buffer] = {}
_offset_of: dict[tuple[int, int], int] = {}  # arena byte offset of each tensor
_first_last: dict[tuple[int, int], tuple[int, int]] = {}
_scratch: dict[tuple[int, int], Buffer] = {}  # (graph, layer) -> its row scratch
_size_of: dict[tuple[int, int], int] = {}


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


def _emit_graph(gi: int, c: _Compiled, out: list[str]) -> int:
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
                ptrs.append(f"arena + {_offset_of[(gi, idx)]}")
        if layer.alias:
            calls.append(f"    /* layer {li}: {layer.op.code} aliases its input (no copy) */")
            continue
        if (gi, li) in _scratch:  # in-place row kernels take a one-row scratch last
            ptrs.append(f"arena + {_scratch[(gi, li)].offset}")
        if layer.params_type is None:
            call = f"{layer.kernel}({layer.fields['size']}, {', '.join(ptrs)});"
        elif layer.pack_inputs:
            inits = ",\n    ".join(f".{k} = {_c_value(v, name)}" for k, v in layer.fields.items())
            out.append(f"static const {layer.params_type} {name} = {{\n    {inits}\n}};\n")
            call = (f"{{\n        const int8_t *const ins[{len(ptrs) - 1}] = {{{', '.join(ptrs[:-1])}}};\n"
                    f"        {layer.kernel}(&{name}, ins, {ptrs[-1]});\n    }}")
        else:
            inits = ",\n    ".join(f".{k} = {_c_value(v, name)}" for k, v in layer.fields.items())
            out.append(f"static const {layer.params_type} {name} = {{\n    {inits}\n}};\n")
            call = f"{layer.kernel}(&{name}, {', '.join(ptrs)});"
        what = " + ".join(o.code for o in layer.fused["ops"]) if layer.fused else layer.op.code
        calls.append(f"    MDT_LAYER_BEGIN({gi}, {li}); /* {what} */\n    {call}\n"
                     f"    MDT_LAYER_END({gi}, {li});")
    # (void)arena: a graph of aliases only (a RESHAPE) has no kernel call
    out.append(f"void {p}_run(int8_t *arena)\n{{\n    (void)arena;\n" + "\n".join(calls) + "\n}\n")
    return const_bytes


def _io_macros(gi: int, c: _Compiled) -> list[str]:
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
            lines += [f"#define {m}_OFFSET {_offset_of[(gi, idx)]}", f"#define {m}_SIZE {t.nbytes}",
                      f"#define {m}_COUNT {t.size}", f"#define {m}_DTYPE {_DTYPE_MACROS[t.dtype]}",
                      f"#define {m}_SCALE {float(np.float32(t.qscale)):.9g}f",
                      f"#define {m}_ZERO_POINT ({t.qzero})", f"#define {m}_RANK {len(t.shape)}"]
            lines += [f"#define {m}_DIM{k} {d}" for k, d in enumerate(t.shape)]
    lines.append(f"void {c.spec.prefix}_run(int8_t *arena);")
    return lines


def compile_program(graphs: list[GraphSpec], out_dir: str | Path, header_name: str = "mdt_model") -> dict:
    """Compile graphs that run in list order on one arena; write ``<header_name>.h/.c`` and plan.json.

    Returns the plan (the same dict as plan.json). Raises MicrotError on anything unsupported, before
    any file is written.
    """
    if not _IDENT.match(header_name):
        raise MicrotError(f"header name '{header_name}' is not a C identifier", "use e.g. mdt_model")
    _check_program(graphs)
    compiled = [_lower(spec) for spec in graphs]
    buffers = _plan_fused(compiled)
    peak = max((b.offset + b.size for b in buffers), default=0)
    arena = max(align(peak), ALIGN)
    if arena > MAX_ARENA_BYTES:
        big = max(buffers, key=lambda b: b.size)
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
        header += _io_macros(gi, c) + [""]
        const_bytes = _emit_graph(gi, c, source)
        total_const += const_bytes
        plan_graphs.append(_graph_plan(gi, c, const_bytes))
    header.append(f"#endif /* {guard} */")
    plan = {
        "version": 1, "header": header_name, "arena_bytes": peak, "arena_size": arena, "align": ALIGN,
        "const_bytes": total_const, "macs": sum(g["macs"] for g in plan_graphs),
        "live_macs": sum(g["live_macs"] for g in plan_graphs), "graphs": plan_graphs,
        "tensors": _tensor_records(compiled),
        "buffers": [{"id": b.id, "offset": b.offset, "size": b.size, "first": b.first, "last": b.last,
                     "tensors": b.tensors} for b in buffers],
    }
    check_plan(plan)  # no two live tensors share bytes: an error on every compile, not an assert
    out = Path(out_dir)
    atomic.write_text(out / f"{header_name}.h", "\n".join(header) + "\n")
    atomic.write_text(out / f"{header_name}.c", "\n".join(source))
    atomic.write_text(out / "plan.json", json.dumps(plan, indent=1) + "\n")
    return plan


def _live_bytes(step: int) -> int:
    """Bytes of the arena in use at a program step: the union of live tensors' and scratch ranges."""
    ranges = sorted({(_offset_of[k], _offset_of[k] + _size_of[k]) for k, (f, la) in _first_last.items()
                     if f <= step <= la} | {(b.offset, b.offset + b.size) for b in _scratch.values()
                                            if b.first == step})
    total, end = 0, 0
    for a, b in ranges:
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _tensor_records(compiled: list[_Compiled]) -> list[dict]:
    return [{"key": f"{compiled[gi].spec.prefix}:{idx}", "name": compiled[gi].graph.t(idx).name,
             "offset": _offset_of[(gi, idx)], "size": _size_of[(gi, idx)], "first": f, "last": la,
             "buffer": _buffer_of[(gi, idx)].id} for (gi, idx), (f, la) in sorted(_first_last.items())]


def _graph_plan(gi: int, c: _Compiled, const_bytes: int) -> dict:
    g = c.graph

    def io(idx: int) -> dict:
        t, buf = g.t(idx), _buffer_of[(gi, idx)]
        return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "offset": _offset_of[(gi, idx)],
                "size": t.nbytes,
                "scale": float(t.qscale), "zero_point": t.qzero, "buffer": buf.id}

    layers = []
    for li, layer in enumerate(c.layers):
        t = g.t(layer.args[-1])
        buf = _buffer_of[(gi, layer.args[-1])]
        op = "+".join(o.code for o in layer.fused["ops"]) if layer.fused else layer.op.code
        layers.append({"index": li, "op": op, "tflite_op": layer.op.index, "output": t.name,
                       "output_shape": list(t.shape), "macs": layer.macs,
                       "live_macs": layer.macs if layer.live_macs is None else layer.live_macs,
                       "weight_bytes": layer.weight_bytes,
                       "output_offset": _offset_of[(gi, layer.args[-1])], "output_size": t.nbytes, "buffer": buf.id,
                       "output_key": f"{c.spec.prefix}:{layer.args[-1]}", "live_bytes": _live_bytes(c.start + 1 + li),
                       "inplace": None if not layer.inplace else {
                           "input": f"{c.spec.prefix}:{layer.inplace['input']}", "delta": layer.inplace["delta"],
                           "scratch_size": layer.inplace["scratch"],
                           "scratch_offset": _scratch[(gi, li)].offset if layer.inplace["scratch"] else None},
                       "scratch": {"offset": _scratch[(gi, li)].offset, "size": _scratch[(gi, li)].size}
                       if (gi, li) in _scratch else None,
                       "fused": None if not layer.fused else {
                           "ops": [o.code for o in layer.fused["ops"]],
                           "tflite_ops": [o.index for o in layer.fused["ops"]],
                           "intermediate": layer.fused["intermediate"], "chunk_w": layer.fields["chunk_w"]},
                       "step": c.start + 1 + li, "alias": layer.alias,
                       "inputs": [{"name": g.t(i).name, "const": g.t(i).is_const,
                                   "buffer": None if g.t(i).is_const else _buffer_of[(gi, i)].id}
                                  for i in layer.args[:-1]]})
    return {"prefix": c.spec.prefix, "index": gi, "start_step": c.start, "end_step": c.end,
            "inputs": [io(i) for i in g.inputs], "outputs": [io(i) for i in g.outputs],
            "bindings": {str(k): list(v) for k, v in c.spec.input_bindings.items()},
            "layers": layers, "macs": sum(la["macs"] for la in layers),
            "live_macs": sum(la["live_macs"] for la in layers), "const_bytes": const_bytes,
            "weight_bytes": sum(la["weight_bytes"] for la in layers)}
