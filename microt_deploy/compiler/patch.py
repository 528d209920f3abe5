"""Patch-based execution of a graph's high-resolution first stages (MCUNetV2's idea).

Owns: which runs of layers may become a patch stage, the regions every stage tensor needs per patch,
the per-patch kernel parameters, the layout of the stage's working memory, the choice of stages
(only where they lower the planner's peak) and the C of the composite layer (a ``<name>_stage``
function and its tables). The planner sees a stage as ONE layer: args (stage input, stage output),
a scratch region holding the patch buffers, MACs including the recomputed halos.

A stage is a run of layers of the first graph, from a convolution (the first one, or the first after
an earlier stage: at most MAX_STAGES in sequence, for a first stage whose output is still large) to
a layer whose output is spatially smaller than the stage's input (after a stride-2 layer), made only of CONV_2D,
DEPTHWISE_CONV_2D (folded PADs included) and same-shape ADDs (residual blocks), whose inner tensors
nobody after it reads. The stage's output is cut into an n x n grid of patches; going backwards,
each tensor of a patch needs the bounding box of what its readers' windows touch, clipped to the
tensor (halos overlap between patches and are recomputed). Per patch: the input's region is copied
out of the arena, each layer runs its ordinary kernel over its output tensor's region, and the
output's region is copied into place in the whole output.

Why a kernel run over a region is exact: the conv kernels skip taps outside [0, in_h) x [0, in_w),
which is TFLite's zero-contribution padding. A region's buffer is passed with in_w its width and
pad_w how far the layer's first window starts left of it (never negative: a stage where a region is
wider on the left than a reader needs is refused, since conv_nat and dw3 assume pad_w >= 0); rows
are passed as a pointer to the first row the layer needs, in_h the rows from there to the region's
end and pad_h the window's rows above it. Where the region ends inside the tensor, no window reaches
past it (the region covers every reader's need); where it ends at the tensor's border, the taps past
it are the padding. An ADD reads each operand on the output's region through its element strides
(mdt_add_params: any strides), so a skip tensor held on a larger region (it is also read by a conv
with a halo) needs no copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..errors import MicrotError
from .ir import Graph, Op
from .ops import Layer
from .scratch import kernel_scratch_bytes, row_window

STAGE_KERNEL = "mdt_patch_stage"  # the composite layer's kernel name (the C is emitted per stage)
# For tests and experiments on models compiled outside a project (a project has `[compile]
# patch_stages`): a StagePolicy.parse value, e.g. "<last layer>:<n>" (the stage ending at that index of
# the first graph's lowered layers, after PAD folding, on an n x n grid); unset: off.
FORCE_ENV = "MICROT_PATCH_STAGE"
GRIDS = (2, 3, 4, 5, 6)
CONVS = ("mdt_conv2d", "mdt_depthwise_conv2d")
MAX_STAGE_LAYERS = 48

Region = tuple[int, int, int, int]  # rows [y0, y1), columns [x0, x1)


@dataclass
class Stage:
    """One chosen stage: the layers it covers (indices ``first..last`` of the lowered layers), its
    grid, per patch the region of every stage tensor, and the layout of its working memory."""

    first: int
    last: int
    n: int
    layers: list[Layer]
    input: int
    output: int
    regions: list[dict[int, Region]]  # per patch: tensor -> region
    calls: list[list[tuple[dict, list[int]]]]  # per patch, per layer: (kernel fields, operand offsets)
    buffer_size: dict[int, int] = field(default_factory=dict)  # tensor -> patch buffer bytes
    buffer_offset: dict[int, int] = field(default_factory=dict)  # tensor -> offset in the scratch
    kernel_scratch: list[tuple[int, int]] = field(default_factory=list)  # per layer: (offset, size)
    scratch: int = 0
    macs: int = 0
    live_macs: int = 0
    extra_macs: int = 0


def _h_w_c(graph: Graph, idx: int) -> tuple[int, int, int]:
    _, h, w, c = graph.t(idx).shape
    return h, w, c


def _area(r: Region) -> int:
    return (r[1] - r[0]) * (r[3] - r[2])


def _union(a: Region | None, b: Region) -> Region:
    return b if a is None else (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def _supported(graph: Graph, layer: Layer) -> bool:
    if layer.kernel in CONVS:
        return layer.fields["batches"] == 1
    if layer.kernel != "mdt_add":
        return False
    shapes = {graph.t(i).shape for i in layer.args}
    if len(shapes) != 1:
        return False
    (shape,) = shapes
    return len(shape) == 4 and shape[0] == 1


def _need(layer: Layer, r: Region) -> list[tuple[int, Region]]:
    """What each input of ``layer`` must hold for it to compute region ``r`` of its output, clipped
    to the input (an ADD: the same region of both operands)."""
    if layer.kernel == "mdt_add":
        return [(i, r) for i in layer.args[:-1]]
    f = layer.fields
    y0, _, h = row_window(r[0], r[1] - r[0], f["stride_h"], f["pad_h"], f["k_h"], f["dil_h"], f["in_h"])
    x0, _, w = row_window(r[2], r[3] - r[2], f["stride_w"], f["pad_w"], f["k_w"], f["dil_w"], f["in_w"])
    return [(layer.args[0], (y0, y0 + h, x0, x0 + w))]


def candidates(graph: Graph, layers: list[Layer], start: int = 0) -> list[tuple[int, int]]:
    """(first, last) of every run of layers from the first convolution at or after ``start`` that
    may become a stage (see the module's doc)."""
    first = next((i for i, la in enumerate(layers) if i >= start and la.kernel in CONVS), None)
    if first is None:
        return []
    x = layers[first].args[0]
    if graph.t(x).is_const or len(graph.t(x).shape) != 4 or graph.t(x).shape[0] != 1:
        return []
    produced: list[int] = []
    found = []
    for last in range(first, min(len(layers), first + MAX_STAGE_LAYERS)):
        la = layers[last]
        if not _supported(graph, la) or any(i != x and i not in produced for i in la.args[:-1]):
            break
        produced.append(la.args[-1])
        y = la.args[-1]
        if graph.t(y).shape[1] * graph.t(y).shape[2] >= graph.t(x).shape[1] * graph.t(x).shape[2]:
            continue
        later = {i for other in layers[last + 1:] for i in other.args[:-1]} | set(graph.outputs)
        if any(t in later for t in produced[:-1]):
            continue
        found.append((first, last))
    return found


def build_stage(graph: Graph, layers: list[Layer], first: int, last: int, n: int) -> Stage | None:
    """The stage ``layers[first..last]`` on an n x n grid, or None where it cannot run by patches
    (a grid finer than the output, a tensor no patch reads, a region wider on the left than a
    conv reader needs)."""
    from .planner import Buffer, place_best  # the planner imports this module

    sl = layers[first:last + 1]
    x, y = sl[0].args[0], sl[-1].args[-1]
    h, w, _ = _h_w_c(graph, y)
    if h < n or w < n:
        return None
    regions: list[dict[int, Region]] = []
    for i in range(n):
        for j in range(n):
            reg: dict[int, Region] = {y: (i * h // n, (i + 1) * h // n, j * w // n, (j + 1) * w // n)}
            for la in reversed(sl):
                r = reg.get(la.args[-1])
                if r is None:
                    return None
                for t, need in _need(la, r):
                    if need[0] >= need[1] or need[2] >= need[3]:
                        return None
                    reg[t] = _union(reg.get(t), need)
            regions.append(reg)
    calls: list[list[tuple[dict, list[int]]]] = []
    macs = live = 0
    for reg in regions:
        per_layer = []
        for la in sl:
            out = reg[la.args[-1]]
            oh, ow = out[1] - out[0], out[3] - out[2]
            yh, yw, yc = _h_w_c(graph, la.args[-1])
            macs += la.macs * oh * ow // (yh * yw)
            live += (la.macs if la.live_macs is None else la.live_macs) * oh * ow // (yh * yw)
            if la.kernel == "mdt_add":
                offs, strides = [], []
                for t in la.args[:-1]:
                    a = reg[t]
                    aw = a[3] - a[2]
                    offs.append(((out[0] - a[0]) * aw + out[2] - a[2]) * yc)
                    strides.append([(a[1] - a[0]) * aw * yc, aw * yc, yc, 1])
                f = dict(la.fields, dims=[1, oh, ow, yc], stride1=strides[0], stride2=strides[1])
                per_layer.append((f, offs))
                continue
            f = la.fields
            inp = reg[la.args[0]]
            # the rows from the window's first (the region may reach further: other readers' windows)
            top, pad_h, _ = row_window(out[0], oh, f["stride_h"], f["pad_h"], f["k_h"], f["dil_h"], f["in_h"])
            pad_w = f["pad_w"] + inp[2] - out[2] * f["stride_w"]
            if pad_w < 0:
                return None
            in_w = inp[3] - inp[2]
            q = dict(f, in_h=inp[1] - top, in_w=in_w, pad_h=pad_h, pad_w=pad_w, out_h=oh, out_w=ow)
            per_layer.append((q, [(top - inp[0]) * in_w * f["in_c"]]))
        calls.append(per_layer)
    st = Stage(first, last, n, sl, x, y, regions, calls)
    st.macs, st.live_macs = macs, live
    st.extra_macs = macs - sum(la.macs for la in sl)
    # the working memory: a patch buffer per tensor (the input's region is copied out of the arena)
    # at steps 0 (copy in), 1..L (the layers), L + 1 (copy out), and each layer's kernel scratch;
    # placed like the arena, so buffers no longer live share bytes
    tensors = [x] + [la.args[-1] for la in sl]
    first_step = {x: 0, **{la.args[-1]: k + 1 for k, la in enumerate(sl)}}
    last_step = {t: first_step[t] for t in tensors}
    for k, la in enumerate(sl):
        for t in la.args[:-1]:
            last_step[t] = max(last_step[t], k + 1)
    last_step[y] = len(sl) + 1
    buffers = []
    for t in tensors:
        st.buffer_size[t] = max(_area(reg[t]) for reg in regions) * _h_w_c(graph, t)[2]
        buffers.append(Buffer(len(buffers), st.buffer_size[t], first_step[t], last_step[t], [graph.t(t).name]))
    ksizes = [max(kernel_scratch_bytes(replace(la, fields=calls[p][k][0])) for p in range(len(regions)))
              for k, la in enumerate(sl)]
    kbufs = []
    for k, size in enumerate(ksizes):
        if size:
            kbufs.append(Buffer(len(buffers), size, k + 1, k + 1, [f"kernel{k}"]))
            buffers.append(kbufs[-1])
    st.scratch = place_best(buffers)
    for t, b in zip(tensors, buffers, strict=False):
        st.buffer_offset[t] = b.offset
    it = iter(kbufs)
    st.kernel_scratch = [(next(it).offset, size) if size else (0, 0) for size in ksizes]
    return st


def stage_layer(graph: Graph, st: Stage) -> Layer:
    """The composite layer the planner and codegen see for ``st``."""
    head = st.layers[0].op
    op = Op(head.index, "PATCH_STAGE", [st.input], [st.output])
    return Layer(op, STAGE_KERNEL, None, {"stage": st}, {}, [st.input, st.output], macs=st.macs,
                 live_macs=st.live_macs, weight_bytes=sum(la.weight_bytes for la in st.layers))


def stage_of(layer: Layer) -> Stage | None:
    return layer.fields["stage"] if layer.kernel == STAGE_KERNEL else None


def layer_scratch(layer: Layer, default: Callable[[Layer], int]) -> int:
    """Arena scratch of a layer: the stage's working memory for a stage, ``default(layer)`` else."""
    st = stage_of(layer)
    return st.scratch if st else default(layer)


def apply_stages(graph: Graph, layers: list[Layer], fusions: dict[int, int], stages: list[Layer],
                 apply_fusions: Callable[[Graph, list[Layer], dict[int, int]], list[Layer]]) -> list[Layer]:
    """``layers`` with each stage's run (in order, disjoint) replaced by its composite layer and the
    conv+ADD fusions ``fusions`` (indices into ``layers``) outside them applied; fresh copies, as
    fuse.apply_fusions."""
    out: list[Layer] = []
    pos = 0
    for stage in [*stages, None]:
        st = stage.fields["stage"] if stage else None
        end = st.first if st else len(layers)  # the run of plain layers before this stage
        inside = {li - pos: k for li, k in fusions.items() if pos <= li and li + 1 < end}
        out += apply_fusions(graph, layers[pos:end], inside)
        if st:
            out.append(replace(stage, inplace=None))
            pos = st.last + 1
    return out


MODES = ("fit", "off", "auto", "min")


@dataclass(frozen=True)
class StagePolicy:
    """When the planner takes patch stages. ``fit`` (the projects' default, `[compile] patch_stages`):
    only when the program without them needs more arena than ``budget`` (what the board's RAM leaves:
    firmware.render.arena_budget), and then the stage of fewest extra MACs that fits, or the lowest
    peak where none does; ``off``: never; ``auto``: the stage that lowers the peak most within
    MAX_EXTRA_MACS; ``min``: the lowest peak at any cost; ``forced``: the stages given as (last
    lowered layer of the first graph, grid n) in order.

    Why not always: measured on VWW, a stage within 10 % extra MACs (+6 %) still cost +22 %
    instructions (many small kernel calls per patch) for 1.6 KB less arena; SRAM saved matters only
    to a model that does not fit otherwise."""

    mode: str = "off"
    budget: int | None = None
    forced: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str, budget: int | None = None, where: str = "patch_stages") -> StagePolicy:
        """``fit`` / ``off`` / ``auto`` / ``min`` or ``<last layer>:<n>[,...]``; a bad value is a
        one-line MicrotError naming ``where``."""
        v = text.strip()
        if v in MODES:
            return cls(v, budget)
        try:
            stages = tuple((int(a), int(b)) for a, b in (part.split(":") for part in v.split(",")))
        except ValueError:
            raise MicrotError(f"{where} = {v!r} is neither 'fit', 'off', 'auto', 'min' nor '<last layer>:<n>[,...]'",
                              f"set {where} to fit (the default), off, auto, min or e.g. 6:2") from None
        return cls("forced", budget, stages)

    @classmethod
    def from_env(cls) -> StagePolicy:
        """FORCE_ENV (tests and experiments on bare models: `infer`, `bench`); unset: off."""
        return cls.parse(os.environ.get(FORCE_ENV, "") or "off", where=FORCE_ENV)


MAX_STAGES = 2  # stages in sequence: a second one where the first's output is still large
# Halos are recomputed: a stage is taken only where its extra MACs stay within this share of the
# graph's, so that the SRAM it saves does not cost more time than it is worth (VWW's best stage adds
# 43 %, mcunet-in3's pair at 176 104 %: both refused by "auto"). "min" and "fit" lift it.
MAX_EXTRA_MACS = 0.10
# planner runs spent on the choice (each plans the whole program): at most, and in a row without a
# better peak (where the rest of the graph holds the peak, every bound is below it)
MAX_TRIALS, MAX_FRUITLESS = 48, 12


def choose_stages(graph: Graph, layers: list[Layer], peak_of: Callable[[list[Layer]], int],
                  policy: StagePolicy) -> list[Layer]:
    """The stages (one, or two in sequence) and grids the policy asks for (``peak_of``: the planner's
    live bytes with those composite layers): for ``auto`` / ``min`` the lowest peak, fewest extra MACs
    on a tie; for ``fit`` the fewest extra MACs within the budget; [] where none lowers the peak.

    A stage's own step needs its input, its output and its working memory at once: that sum bounds
    the peak of any choice holding it from below, so choices are tried in the order of that bound
    and the search ends where the bound reaches the best peak found (or after MAX_TRIALS)."""
    if policy.mode == "off":
        return []
    if policy.mode == "forced":
        out, start = [], 0
        for last, n in policy.forced:
            found = [c for c in candidates(graph, layers, start) if c[1] == last]
            st = build_stage(graph, layers, found[0][0], last, n) if found else None
            if st is None:
                raise MicrotError(f"patch stage {last}:{n}: layers up to {last} on a {n}x{n} grid cannot run as a "
                                  "patch stage",
                                  "pick a stage end after a stride-2 layer and a grid no finer than its output")
            out.append(stage_layer(graph, st))
            start = last + 1
        return out
    base = peak_of([])
    if policy.mode == "fit" and (policy.budget is None or base <= policy.budget):
        return []

    def local(st: Stage) -> int:
        return graph.t(st.input).nbytes + graph.t(st.output).nbytes + st.scratch

    def stages_from(start: int) -> list[Stage]:
        found = []
        for first, last in candidates(graph, layers, start):
            if graph.t(layers[first].args[0]).nbytes + graph.t(layers[last].args[-1]).nbytes >= base:
                continue  # its input and output alone are no lower
            for n in GRIDS:
                st = build_stage(graph, layers, first, last, n)
                if st is not None and local(st) < base:
                    found.append(st)
        return found

    options = [[st] for st in stages_from(0)]
    if MAX_STAGES > 1:
        for first_stage in list(options):
            options += [[first_stage[0], st] for st in stages_from(first_stage[0].last + 1)]
    if policy.mode == "auto":
        budget = MAX_EXTRA_MACS * sum(layer.macs for layer in layers)
        options = [o for o in options if sum(st.extra_macs for st in o) <= budget]
    if policy.mode == "fit":
        fitting = _cheapest_fitting(graph, options, peak_of, policy.budget or 0, local)
        if fitting is not None:
            return fitting
        # nothing fits: the lowest peak (the build then says by how much the board is short)
    options.sort(key=lambda o: (max(local(st) for st in o), sum(st.extra_macs for st in o)))
    best: tuple[tuple[int, int], list[Stage]] | None = None
    since = 0  # trials since the best one
    for trial, chain in enumerate(options):
        bound, extra = max(local(st) for st in chain), sum(st.extra_macs for st in chain)
        if trial >= MAX_TRIALS or since >= MAX_FRUITLESS or (best and (bound, extra) >= best[0]):
            break
        key = (peak_of([stage_layer(graph, st) for st in chain]), extra)
        since += 1
        if key[0] < base and (best is None or key < best[0]):
            best, since = (key, chain), 0
    if best:
        # where the rest of the graph holds the best peak, a choice of fewer extra MACs whose bound
        # is no higher may reach it too: the cheapest of them first
        cheaper = sorted((o for o in options if max(local(st) for st in o) <= best[0][0]
                          and sum(st.extra_macs for st in o) < best[0][1]),
                         key=lambda o: sum(st.extra_macs for st in o))
        for chain in cheaper[:MAX_FRUITLESS]:
            key = (peak_of([stage_layer(graph, st) for st in chain]), sum(st.extra_macs for st in chain))
            if key < best[0]:
                best = (key, chain)
                break
    return [stage_layer(graph, st) for st in best[1]] if best else []


def _cheapest_fitting(graph: Graph, options: list[list[Stage]], peak_of: Callable[[list[Layer]], int],
                      budget: int, local: Callable[[Stage], int]) -> list[Layer] | None:
    """The option of fewest extra MACs whose peak is within ``budget`` (its own step's bound first:
    an option whose stage alone exceeds the budget is never planned); None if none is in MAX_TRIALS."""
    fits = sorted((o for o in options if max(local(st) for st in o) <= budget),
                  key=lambda o: sum(st.extra_macs for st in o))
    for chain in fits[:MAX_TRIALS]:
        layers_ = [stage_layer(graph, st) for st in chain]
        if peak_of(layers_) <= budget:
            return layers_
    return None


def plan_record(layer: Layer, graph: Graph) -> dict | None:
    """plan.json's "patch_stage" entry of a layer (None for other layers)."""
    st = stage_of(layer)
    if st is None:
        return None
    return {"layers": list(range(st.first, st.last + 1)), "ops": [la.op.code for la in st.layers],
            "tflite_ops": [la.op.index for la in st.layers], "n": st.n, "patches": st.n * st.n,
            "folded_pads": [la.folded_pad["op"].index for la in st.layers if la.folded_pad],
            "macs": st.macs, "extra_macs": st.extra_macs, "scratch_size": st.scratch,
            "buffers": [{"tensor": graph.t(t).name, "offset": st.buffer_offset[t], "size": st.buffer_size[t]}
                        for t in st.buffer_size],
            "kernel_scratch": [{"offset": o, "size": s} for o, s in st.kernel_scratch]}


def emit_stage(layer: Layer, graph: Graph, name: str, in_ptr: str, out_ptr: str, scratch_ptr: str,
               out: list[str], c_array: Callable[[str, str, object], str], c_value: Callable[[object, str], str],
               ctypes: dict[str, str]) -> tuple[str, int]:
    """Append the stage's const data and its C function ``<name>_stage`` to ``out``; return the call
    and the const bytes. Per layer: its arrays once, one params struct per patch in a table."""
    st = stage_of(layer)
    assert st is not None
    npatch = len(st.regions)
    const_bytes = 0
    body = []

    def table(tname: str, rows: list[list[int]]) -> None:
        nonlocal const_bytes
        inner = ", ".join("{" + ", ".join(str(int(v)) for v in r) + "}" for r in rows)
        out.append(f"static const int32_t {tname}[{npatch}][{len(rows[0])}] = {{{inner}}};\n")
        const_bytes += 4 * npatch * len(rows[0])

    def buf(t: int) -> str:
        return f"scratch + {st.buffer_offset[t]}"

    xh, xw, xc = _h_w_c(graph, st.input)
    yh, yw, yc = _h_w_c(graph, st.output)
    # copy in: the input's region of each patch (offset in the input, rows, bytes a row)
    table(f"{name}_in", [[(r[st.input][0] * xw + r[st.input][2]) * xc, r[st.input][1] - r[st.input][0],
                          (r[st.input][3] - r[st.input][2]) * xc] for r in st.regions])
    body.append(f"        mdt_patch_copy(input + {name}_in[p][0], {xw * xc}, {buf(st.input)}, {name}_in[p][2], "
                f"{name}_in[p][1], {name}_in[p][2]);")
    for k, la in enumerate(st.layers):
        lname = f"{name}_{k}"
        for suffix, arr in la.arrays.items():
            out.append(c_array(f"{lname}_{suffix}", ctypes[arr.dtype.name], arr))
            const_bytes += arr.nbytes
        structs = []
        for p in range(npatch):
            f = st.calls[p][k][0]
            structs.append("{" + ", ".join(f".{key} = {c_value(v, lname)}" for key, v in f.items()) + "}")
        out.append(f"static const {la.params_type} {lname}_p[{npatch}] = {{\n    " + ",\n    ".join(structs)
                   + "\n};\n")
        # a word a field (int32 or a pointer on the 32-bit cores), arrays of int32 by their length
        const_bytes += npatch * 4 * sum(len(v) if isinstance(v, list) else 1 for v in st.calls[0][k][0].values())
        table(f"{lname}_off", [st.calls[p][k][1] for p in range(npatch)])
        koff, ksize = st.kernel_scratch[k]
        sc = f"(mdt_scratch){{scratch + {koff}, {ksize}, 0}}" if ksize else "MDT_NO_SCRATCH"
        dst = buf(la.args[-1])
        if la.kernel == "mdt_add":
            a, b = la.args[:-1]
            call = (f"mdt_add(&{lname}_p[p], {buf(a)} + {lname}_off[p][0], {buf(b)} + {lname}_off[p][1], "
                    f"{dst}, {sc});")
        else:
            call = f"{la.kernel}(&{lname}_p[p], {buf(la.args[0])} + {lname}_off[p][0], {dst}, {sc});"
        # a block a call: the mdt_scratch literals share one stack slot (as codegen's calls)
        body.append(f"        {{ {call} }}")
    # copy out: each patch's output region into the whole output (offset, rows, bytes a row)
    table(f"{name}_out", [[(r[st.output][0] * yw + r[st.output][2]) * yc, r[st.output][1] - r[st.output][0],
                           (r[st.output][3] - r[st.output][2]) * yc] for r in st.regions])
    body.append(f"        mdt_patch_copy({buf(st.output)}, {name}_out[p][2], output + {name}_out[p][0], {yw * yc}, "
                f"{name}_out[p][1], {name}_out[p][2]);")
    ops = " + ".join(la.op.code for la in st.layers)
    out.append(f"#include \"mdt_patch.h\"\n\n/* patch stage: {ops} on a {st.n}x{st.n} grid; working memory "
               f"{st.scratch} bytes at scratch, {st.extra_macs} MACs of recomputed halos */\n"
               f"static void {name}_stage(const int8_t *input, int8_t *output, int8_t *scratch)\n{{\n"
               f"    int32_t p;\n    for (p = 0; p < {npatch}; ++p) {{\n" + "\n".join(body) + "\n    }\n}\n")
    return f"{name}_stage({in_ptr}, {out_ptr}, {scratch_ptr});", const_bytes
