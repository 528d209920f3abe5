"""The memory planner: every decision about where a program's tensors live on its one arena.

Liveness of every activation over the whole program (all graphs in order on one arena, bound inputs
sharing their producers' bytes), the in-place decisions (element-wise outputs on their input, convs
row by row at an offset), the conv+ADD fusion choice (fuse.py builds the fused layers), per-layer
kernel scratch (scratch.py sizes it), the placement (segment-aware greedy orders, then a bisection
on the bound with two-sided placement) and the no-overlap check. ``plan_program`` returns a
:class:`Plan`, which codegen reads; the peak is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MicrotError
from .fuse import FUSED_KERNEL, apply_fusions, choose_fusions, fusion_candidates, scratch_bytes
from .ir import Graph
from .ops import Layer
from .patch import StagePolicy, apply_stages, choose_stages, layer_scratch

if TYPE_CHECKING:
    from .codegen import GraphSpec

ALIGN = 16


@dataclass
class Buffer:
    """One region of the arena shared by tensors placed at fixed distances from each other: aliases
    at the same address (RESHAPE, bound graph inputs) and in-place outputs at their offset from the
    input. ``segments`` say which bytes of the region are in use when: ``(first, last, lo, hi)``
    relative to the region's start, one per tensor (a single segment covering it all by default), so
    a chain of in-place layers only occupies what its live members cover at each step."""

    id: int
    size: int
    first: int  # program step of the first write
    last: int  # program step of the last read (inclusive)
    tensors: list[str] = field(default_factory=list)  # "prefix:tensor_name"
    offset: int = -1
    segments: list[tuple[int, int, int, int]] = field(default_factory=list)

    def parts(self) -> list[tuple[int, int, int, int]]:
        return self.segments or [(self.first, self.last, 0, self.size)]

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def live_extent(buffers: list[Buffer]) -> int:
    """A lower bound of any placement's arena: the most bytes the buffers' live segments span at
    one step (a group counts from its lowest to its highest live byte: those are rigid), and at least
    the largest buffer (a chain of in-place layers whose outputs drift is rigid too: all its extent
    must fit, whichever of its members are live)."""
    steps = sorted({b.first for b in buffers} | {b.last for b in buffers})
    best = max((b.size for b in buffers), default=0)
    for step in steps:
        total = 0
        for b in buffers:
            if b.first <= step <= b.last:
                live = [(lo, hi) for f, la, lo, hi in b.parts() if f <= step <= la]
                if live:
                    total += max(hi for _, hi in live) - min(lo for lo, _ in live)
        best = max(best, total)
    return best


def place_best(buffers: list[Buffer]) -> int:
    """The smallest arena found: greedy lowest-fit under a few orders (largest first, earliest first,
    longest-lived first, ...), then a search for a smaller bound that two-sided placement in program
    order still meets (each buffer at the top or bottom of the free space, away from what is live:
    what a chain of layers needs, its tensors alternating ends of the arena)."""
    orders = [lambda b: (-b.size, b.first, b.id), lambda b: (b.first, -b.size, b.id),
              lambda b: (-(b.last - b.first), -b.size, b.id), lambda b: (-b.size * (b.last - b.first + 1), b.id)]
    best, best_offsets = None, None
    for order in orders:
        peak = place(buffers, order)
        if best is None or peak < best:
            best, best_offsets = peak, [b.offset for b in buffers]
    if best:
        lo, hi = align(live_extent(buffers)), best - 1
        while lo <= hi:  # smallest bound two-sided placement meets (a heuristic: probed by bisection)
            mid = align((lo + hi) // 2)
            if mid > hi:
                break
            if place_two_sided(buffers, mid):
                best, best_offsets, hi = max(b.offset + b.size for b in buffers), [b.offset for b in buffers], mid - 1
            else:
                lo = mid + ALIGN
    for b, off in zip(buffers, best_offsets or [], strict=True):
        b.offset = off
    return best or 0


def _forbidden(buf: Buffer, other: Buffer) -> list[tuple[int, int]]:
    """Offsets ``o`` (open intervals) at which ``buf`` would share a live byte with placed ``other``."""
    out = []
    for f1, l1, lo1, hi1 in buf.parts():
        for f2, l2, lo2, hi2 in other.parts():
            if f1 <= l2 and f2 <= l1:
                out.append((other.offset + lo2 - hi1, other.offset + hi2 - lo1))
    return out


def _free_offsets(buf: Buffer, placed: list[Buffer], limit: int) -> list[tuple[int, int]]:
    """Aligned offset ranges [a, b] where ``buf`` fits below ``limit`` beside ``placed``."""
    busy = sorted(iv for p in placed if p.overlaps_in_time(buf) for iv in _forbidden(buf, p))
    top = (limit - buf.size) // ALIGN * ALIGN
    free, offset = [], 0
    for start, end in busy:
        if offset <= start:  # offsets up to start (inclusive: the intervals are open) are free
            last = min(start // ALIGN * ALIGN, top)
            if last >= offset:
                free.append((offset, last))
        offset = max(offset, align(end))
    if offset <= top:
        free.append((offset, top))
    return free


def place_two_sided(buffers: list[Buffer], limit: int, budget: int = 4000) -> bool:
    """Place in program order within ``limit`` bytes; False if no placement was found.

    Each buffer goes to one end of a free range: the tightest range first (best fit), and of its two
    ends the one away from the bytes live when it is written (their midpoint), so a chain of layers
    alternates ends of the arena. A buffer that fits nowhere sends the search back to try the next
    candidates of the buffers before it, ``budget`` placements in all."""
    order = sorted(buffers, key=lambda b: (b.first, -b.size, b.id))
    placed: list[Buffer] = []
    tried = 0

    def candidates(buf: Buffer) -> list[int]:
        free = _free_offsets(buf, placed, limit)
        live = [p for p in placed if p.first <= buf.first <= p.last]
        weight = sum(p.size for p in live)
        middle = sum((p.offset + p.size / 2) * p.size for p in live) / weight if weight else limit
        ranked = []
        for a, b in free:
            ends = [b, a] if middle < limit / 2 else [a, b]
            for end in dict.fromkeys(ends):
                ranked.append((b - a, ends.index(end), end))
        return [off for *_, off in sorted(ranked)[:3]]

    def go(i: int) -> bool:
        nonlocal tried
        if i == len(order):
            return True
        buf = order[i]
        for off in candidates(buf):
            tried += 1
            if tried > budget:
                return False
            buf.offset = off
            placed.append(buf)
            if go(i + 1):
                return True
            placed.pop()
        return False

    return go(0)


def place(buffers: list[Buffer], order=lambda b: (-b.size, b.first, b.id)) -> int:
    """Give every buffer the lowest aligned offset where none of its live bytes meets a live byte of
    a buffer placed before it; return the arena size (end of the highest buffer)."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=order):
        buf.offset = _free_offsets(buf, placed, 1 << 62)[0][0]
        placed.append(buf)
    return max((b.offset + b.size for b in buffers), default=0)


# Kernels whose output element i depends only on input element i (same index): the output may take
# the input's place when that input is read for the last time. DEQUANTIZE writes backwards (its float
# output is 4x wider), QUANTIZE float->int8 forwards, so both are safe at the same start address.
ELEMENTWISE_INPLACE = frozenset({"mdt_add", "mdt_mul", "mdt_requantize", "mdt_lookup", "mdt_quantize_f32",
                                 "mdt_dequantize_f32"})
ROW_KERNELS = {"mdt_conv2d": "mdt_conv2d_rows", "mdt_depthwise_conv2d": "mdt_dwconv_rows"}
# Output rows per call of a row kernel, at most: the per-call cost (the window's edge rows re-read,
# the call's setup) is mostly gone by 8, and larger chunks only crowd the placement.
MAX_ROWS_PER_CALL = 8


def conv_row_inplace(f: dict) -> tuple[int, int]:
    """(delta, scratch) for running a conv / depthwise one output row at a time over its input.

    Row r is computed into a one-row scratch, then copied to output + r * out_row. After row r the
    kernel still reads input rows from max(0, (r + 1) * stride - pad) on, so the copy must end at or
    before that row's start: delta (output start - input start) <= that bound for every r but the last.
    """
    in_row, out_row = f["in_w"] * f["in_c"], f["out_w"] * f["out_c"]
    bound = min((max(0, (r + 1) * f["stride_h"] - f["pad_h"]) * in_row - (r + 1) * out_row
                 for r in range(f["out_h"] - 1)), default=0)
    return min(bound, 0), out_row


def span(in_size: int, out_size: int, delta: int) -> int:
    """Bytes covered by an input and an output placed ``delta`` bytes after it."""
    return max(in_size, delta + out_size) - min(0, delta)


def _range(off: int, size: int) -> str:
    return f"[{off}, {off + size})"


def check_plan(plan: dict) -> None:
    """Refuse (MicrotError) a plan in which two tensors live at the same step share bytes, except an
    alias (same bytes: RESHAPE, bound graph inputs) or a declared in-place pair at the step it runs,
    or in which a layer's scratch shares bytes with a tensor live at that layer's step. Runs on every
    compile (codegen.compile_program), also under `python -O`: a plan that breaks it would make the
    generated C overwrite a live tensor, so it is a compiler bug, reported before any C is written."""
    tensors = plan["tensors"]
    pairs = {(la["inplace"]["input"], la["output_key"], la["step"])
             for g in plan["graphs"] for la in g["layers"] if la.get("inplace")}
    # every layer's scratch (row-wise in-place convs, fused conv+ADD chunks) is private at its step
    scratch = [(la["scratch"]["offset"], la["scratch"]["size"], la["step"])
               for g in plan["graphs"] for la in g["layers"] if la.get("scratch")]
    fix = "this is a compiler bug: report it with the model attached"
    # sweep by offset: only tensors whose byte ranges can meet are compared
    order = sorted(tensors, key=lambda t: (t["offset"], t["offset"] + t["size"]))
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if b["offset"] >= a["offset"] + a["size"]:
                break
            live = a["first"] <= b["last"] and b["first"] <= a["last"]
            apart = a["offset"] + a["size"] <= b["offset"] or b["offset"] + b["size"] <= a["offset"]
            if not live or apart or (a["offset"], a["size"]) == (b["offset"], b["size"]):
                continue
            ok = any({x, y} == {a["key"], b["key"]} and step == min(a["last"], b["last"])
                     == max(a["first"], b["first"]) for x, y, step in pairs)
            if not ok:
                raise MicrotError(
                    f"memory plan error: tensors {a['key']} (arena bytes {_range(a['offset'], a['size'])}, steps "
                    f"{a['first']}..{a['last']}) and {b['key']} (bytes {_range(b['offset'], b['size'])}, steps "
                    f"{b['first']}..{b['last']}) overlap while both live", fix)
    for a in tensors:
        for off, size, step in scratch:
            if a["first"] <= step <= a["last"] and not (off + size <= a["offset"] or a["offset"] + a["size"] <= off):
                raise MicrotError(
                    f"memory plan error: the scratch of step {step} (arena bytes {_range(off, size)}) overlaps "
                    f"tensor {a['key']} (bytes {_range(a['offset'], a['size'])}, live at steps "
                    f"{a['first']}..{a['last']})", fix)


# ---- the program plan: liveness, in-place and fusion decisions, placement ----

@dataclass
class PlannedGraph:
    """One graph of a program as the planner sees it: its spec, IR, lowered layers and program steps."""

    spec: GraphSpec  # codegen.GraphSpec: model, prefix, input_bindings
    graph: Graph
    layers: list[Layer]
    start: int = 0  # program step where the graph's inputs are written
    end: int = 0  # program step of its last layer


# A bound buffer's bytes are passed on unchanged; each graph keeps its own parameters (as the
# reference interpreter chain does). Scales that differ by float32 rounding of one calibration range
# (relative 1e-5: under 3e-3 of a step even at |q - zp| = 255) mean the same values, so they bind.
# The export stage checks the same bound (microt_deploy.export.quantize uses this constant).
BINDING_SCALE_RTOL = 1e-5


def same_scale(a: object, b: object) -> bool:
    sa = np.atleast_1d(np.asarray(a, dtype=np.float64))
    sb = np.atleast_1d(np.asarray(b, dtype=np.float64))
    return sa.shape == sb.shape and bool(np.all(np.abs(sa - sb) <= BINDING_SCALE_RTOL * np.abs(sb)))


@dataclass
class Plan:
    """Where every tensor and every layer's scratch lives on the arena, and when. Built by
    ``plan_program``; read by codegen (offsets in the emitted C, plan.json) and nothing else.
    Keys are ``(graph index, tensor index)``; scratch keys ``(graph index, layer index)``."""

    buffers: list[Buffer]
    peak: int
    scratch: dict[tuple[int, int], Buffer] = field(default_factory=dict)
    buffer_of: dict[tuple[int, int], Buffer] = field(default_factory=dict)
    offset_of: dict[tuple[int, int], int] = field(default_factory=dict)  # arena byte offset of each tensor
    first_last: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    size_of: dict[tuple[int, int], int] = field(default_factory=dict)

    def live_bytes(self, step: int) -> int:
        """Bytes of the arena in use at a program step: the union of live tensors' and scratch ranges."""
        ranges = sorted({(self.offset_of[k], self.offset_of[k] + self.size_of[k])
                         for k, (f, la) in self.first_last.items() if f <= step <= la}
                        | {(b.offset, b.offset + b.size) for b in self.scratch.values() if b.first == step})
        total, end = 0, 0
        for a, b in ranges:
            if b > end:
                total += b - max(a, end)
                end = b
        return total


# (layer id, kernel, rows per call) -> (the layer, kept so that its id stays its own; its kernel scratch)
_SCRATCH_MEMO: dict[tuple[int, str, int], tuple[Layer, int]] = {}


def _decide_and_place(compiled, keys, first, last, find, offset_in_root, union, kernels, disabled, placed=True,
                      chunks=None):
    """In-place decisions in program order (an input read for the last time by this layer gives its
    place to the output: element-wise kernels at the same address, convs row by row at an offset),
    then groups -> buffers, plus one scratch row per in-place conv, placed on the arena (or, with
    ``placed`` False, only measured: the peak returned is then the live-bytes lower bound)."""
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

    scratch_of: dict[tuple[int, int], Buffer] = {}
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
            elif layer.kernel == FUSED_KERNEL:  # output element i reads skip element i only...
                idx = layer.args[1]
                # ...but the conv half reads its input around i: not when the skip is (or shares
                # bytes with) that input, as in x + conv(x)
                if find((gi, idx)) != find(out_key) and find((gi, idx)) != find((gi, layer.args[0])) and \
                        g.t(idx).size == y.size and group_last((gi, idx)) == st:
                    merge(out_key, (gi, idx), 0)
                    layer.inplace = {"input": idx, "delta": 0, "scratch": 0}
            elif layer.kernel in ROW_KERNELS and layer.fields["batches"] == 1:
                idx = layer.args[0]
                x = g.t(idx)
                if x.is_const or group_last((gi, idx)) != st:
                    continue
                delta, scratch = conv_row_inplace(layer.fields)
                # the merged group may grow by this layer's own slack, not more: chains of in-place
                # layers would otherwise drift (each output a little before its input) and outgrow
                # what they save; the planner's pruning below drops merges that still cost bytes
                old_lo, old_hi = extent(find((gi, idx)))
                _, oi = offset_in_root((gi, idx))
                _, oo = offset_in_root(out_key)
                out_lo, out_hi = extent(find(out_key))
                new_size = max(old_hi, oi + delta - oo + out_hi) - min(old_lo, oi + delta - oo + out_lo)
                if span(x.nbytes, y.nbytes, delta) + scratch < x.nbytes + y.nbytes and \
                        new_size <= max(old_hi - old_lo, y.nbytes) + max(0, -delta):
                    merge(out_key, (gi, idx), delta)
                    rows = (chunks or {}).get((gi, li), 1)  # output rows per call (_plan picks them)
                    layer.inplace = {"input": idx, "delta": delta, "scratch": scratch * rows, "rows": rows}
                    layer.kernel = ROW_KERNELS[layer.kernel]

    groups: dict = {}
    lo: dict = {}
    spans: dict = {}  # root -> [(first, last, offset in root, end in root)] of its tensors
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
        spans.setdefault(root, []).append((first[key], last[key], off, off + t.nbytes))
    for root, buf in groups.items():  # a group occupies only its live members' bytes at each step
        buf.segments = [(f, la, a - lo[root], b - lo[root]) for f, la, a, b in spans[root]]
    buffers = list(groups.values())
    for gi, c in enumerate(compiled):
        for li, layer in enumerate(c.layers):
            # (a patch stage's scratch is its working memory: patch.py)
            key = (id(layer), layer.kernel, layer.inplace["rows"] if layer.inplace and "rows" in layer.inplace else 0)
            if key not in _SCRATCH_MEMO:  # the same layer is weighed in many trial plans
                _SCRATCH_MEMO[key] = (layer, layer_scratch(layer, scratch_bytes))
            size = (layer.inplace["scratch"] if layer.inplace else 0) + _SCRATCH_MEMO[key][1]
            if size:
                st = c.start + 1 + li
                sb = Buffer(len(buffers), size, st, st, [f"{c.spec.prefix}:scratch{li}"])
                buffers.append(sb)
                scratch_of[(gi, li)] = sb
    peak = place_best(buffers) if placed else live_extent(buffers)
    return peak, buffers, groups, lo, scratch_of


def _plan(compiled: list[PlannedGraph], placed: bool = True) -> Plan:
    """Group tensors that share memory (aliases at the same address, in-place outputs at a fixed
    offset from their input), compute each group's live range in program steps, then place groups
    and per-layer scratch rows on the arena (``placed`` False: decide only, offsets left unset)."""
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
            if a.shape != b.shape or a.qzero != b.qzero or not same_scale(a.qscale, b.qscale):
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
    _SCRATCH_MEMO.clear()

    def build(disabled: set, placed: bool = False,
              chunks: dict | None = None) -> tuple[int, list[Buffer], dict, dict, dict]:
        parent.clear()
        parent.update(base_parent)
        rel.clear()
        rel.update(base_rel)
        return _decide_and_place(compiled, keys, first, last, find, offset_in_root, union, kernels, disabled,
                                 placed, chunks)

    # In-place chains drift (each row-wise conv starts its output a little before its input) and a
    # chain is rigid, so a long one can cost more than it saves: first drop single in-place decisions
    # while that strictly lowers the peak (passes until none does). A row-wise conv also runs slower
    # than the whole-layer (DSP) kernel, so then each is dropped where the peak does not grow above
    # that floor without it: it is kept only where it lowers the peak. Decisions are judged on the
    # live bytes (what any placement needs at least), not on one placement's result, whose
    # fragmentation would make them noise; the placement comes once, at the end.
    peak, *_ = build(set())
    disabled: set = set()
    cands = [(gi, li) for gi, c in enumerate(compiled) for li, la in enumerate(c.layers) if la.inplace]
    improved = True
    while improved:  # best first: the drops that lower the peak most (a chain breaks where it should)
        improved = False
        trials = sorted((build(disabled | {cand})[0], cand) for cand in cands if cand not in disabled)
        for first_trial, cand in trials:
            if first_trial >= peak:
                break
            trial = build(disabled | {cand})[0]  # again: the drops before it changed the plan
            if trial < peak:
                peak, disabled, improved = trial, disabled | {cand}, True
    for cand in cands:
        if cand in disabled:
            continue
        trial, *_ = build(disabled | {cand})
        # (the layer names its whole-layer kernel again once disabled; row-wise ones are convs)
        if compiled[cand[0]].layers[cand[1]].kernel in ROW_KERNELS and trial <= peak:
            disabled |= {cand}
    # A drop taken early may be one that later drops made needless (proxyless-w0.3 at 176: the first
    # break of its 59-layer chain lands on the peak layer's own in-place run, a 5x5 stride-2 depthwise;
    # once the chain is also broken after it, that layer in place lowers the peak by 8 KB): take those
    # back while that lowers the peak.
    improved = True
    while improved:
        improved = False
        for cand in sorted(disabled):
            trial = build(disabled - {cand})[0]
            if trial < peak:
                peak, disabled, improved = trial, disabled - {cand}, True
    # Each row-wise conv that is left computes as many output rows per call as fit: fewer calls, and a
    # fast path re-reads its window's edge rows once per call. The most that keeps the live bytes
    # under the peak (bisection), then halved until the placed arena is no larger than without.
    build(disabled)  # leaves the layers' kernels as this plan runs them (chunks change no decision)
    row_wise = [c for c in cands if compiled[c[0]].layers[c[1]].kernel in ROW_KERNELS.values()]
    chunks: dict = {}
    best = build(disabled, placed)[0] if placed and row_wise else peak
    for cand in row_wise:
        lo_rows, hi_rows = 1, min(compiled[cand[0]].layers[cand[1]].fields["out_h"], MAX_ROWS_PER_CALL)
        while lo_rows < hi_rows:
            mid = (lo_rows + hi_rows + 1) // 2
            if build(disabled, False, {**chunks, cand: mid})[0] <= peak:
                lo_rows = mid
            else:
                hi_rows = mid - 1
        while lo_rows > 1:
            trial = build(disabled, placed, {**chunks, cand: lo_rows})[0]
            if trial <= best:
                chunks[cand], best = lo_rows, trial
                break
            lo_rows //= 2
    peak, buffers, groups, lo, scratch_of = build(disabled, placed, chunks)
    plan = Plan(buffers=buffers, peak=peak, scratch=scratch_of)
    for key in keys:
        root, off = offset_in_root(key)
        plan.buffer_of[key] = groups[root]
        plan.offset_of[key] = groups[root].offset + off - lo[root]
        plan.first_last[key] = (first[key], last[key])
        plan.size_of[key] = compiled[key[0]].graph.t(key[1]).nbytes
    return plan


def plan_program(compiled: list[PlannedGraph], stage_policy: StagePolicy | None = None) -> Plan:
    """The program's memory plan: in-place and conv+ADD fusion decisions (fuse.choose_fusions, each
    trial on fresh copies of the lowered layers, judged on live bytes), patch stages as
    ``stage_policy`` asks (patch.StagePolicy; None: patch.FORCE_ENV, unset off), then the placement.
    The graphs' ``layers`` are left as the chosen plan runs them (fused, row-wise kernels, stages)."""
    policy = stage_policy or StagePolicy.from_env()
    base = [c.layers for c in compiled]
    cands = [(gi, li, base[gi][li]) for gi, c in enumerate(compiled) for li in fusion_candidates(c.graph, base[gi])]

    def plan_with(chosen: dict, placed: bool = True, stages: list[Layer] | None = None) -> Plan:
        for gi, c in enumerate(compiled):
            fusions = {li: k for (g, li), k in chosen.items() if g == gi}
            c.layers = (apply_stages(c.graph, base[gi], fusions, stages, apply_fusions) if gi == 0 and stages
                        else apply_fusions(c.graph, base[gi], fusions))
        return _plan(compiled, placed)

    def peak_of(chosen: dict, stages: list[Layer] | None = None) -> int:  # live bytes, as _plan's own decisions
        return plan_with(chosen, placed=False, stages=stages).peak

    chosen = choose_fusions(cands, peak_of)
    # patch-based stages (patch.py, MCUNetV2): composite layers for the first graph's high-resolution
    # layers, kept only where they lower the peak with the fusions chosen above (a fusion inside a
    # stage is dropped: the stage runs the unfused layers per patch)
    stages = choose_stages(compiled[0].graph, base[0], lambda sts: peak_of(chosen, sts), policy) if compiled else []
    if not stages or policy.mode in ("min", "forced"):
        return plan_with(chosen, stages=stages)
    without = plan_with(chosen).peak  # judged on live bytes: kept only if the placed arena is lower too
    with_stages = plan_with(chosen, stages=stages)
    return with_stages if with_stages.peak < without else plan_with(chosen)
