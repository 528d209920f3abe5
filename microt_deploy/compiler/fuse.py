"""Layer fusion: a CONV_2D whose only reader is the ADD right after it (a residual block's last conv
and its skip connection) becomes one ``mdt_conv2d_add`` layer, so the conv's output never exists
whole (mdt_fused.c). This module finds the candidates, builds fused layers and chooses which fusions
and scratch sizes to keep: fewest bytes first, then speed (codegen's planner measures the peaks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .ir import Graph
from .ops import Layer

FUSED_KERNEL = "mdt_conv2d_add"


def _reads(graph: Graph, layers: list[Layer], idx: int) -> int:
    return sum(layer.args[:-1].count(idx) for layer in layers) + graph.outputs.count(idx)


def fusion_candidates(graph: Graph, layers: list[Layer]) -> list[int]:
    """Indices ``li`` where layers[li] is a single-batch conv and layers[li + 1] the ADD that is its
    output's only reader, with no broadcast (both operands have the output's shape)."""
    found = []
    for li in range(len(layers) - 1):
        conv, add = layers[li], layers[li + 1]
        if conv.kernel != "mdt_conv2d" or conv.fields["batches"] != 1 or add.kernel != "mdt_add":
            continue
        mid = conv.args[-1]
        ins = add.args[:-1]
        if ins.count(mid) != 1 or _reads(graph, layers, mid) != 1:
            continue
        skip = graph.t(ins[1] if ins[0] == mid else ins[0])
        out = graph.t(add.args[-1])
        if skip.is_const or skip.shape != out.shape or graph.t(mid).shape != out.shape:
            continue
        found.append(li)
    return found


# Output pixels per pass come in multiples of the conv fast path's widest core (6 pixels, mdt_dsp.c):
# a chunk of 4 or 8 leaves it part idle (measured on ResNet-8: 6 -> 4.47M, 8 -> 4.62M instructions).
CHUNK_PIXELS = 6


def chunk_options(layer: Layer) -> list[int]:
    """Output pixels per pass, largest first: the whole row, then multiples of CHUNK_PIXELS."""
    ow = layer.fields["out_w"]
    return sorted({ow} | set(range(CHUNK_PIXELS, ow, CHUNK_PIXELS)), reverse=True)


def fuse(graph: Graph, conv: Layer, add: Layer, chunk_w: int) -> Layer:
    """One ``mdt_conv2d_add`` layer: args (conv input, skip, output); the ADD's params reordered so
    that input 1 is the conv's output (the sum of the two rescaled operands is commutative)."""
    mid = conv.args[-1]
    a = dict(add.fields)
    if add.args[1] == mid:
        for k1, k2 in (("input1_offset", "input2_offset"), ("input1_multiplier", "input2_multiplier"),
                       ("input1_shift", "input2_shift"), ("stride1", "stride2")):
            a[k1], a[k2] = a[k2], a[k1]
    skip = add.args[0] if add.args[1] == mid else add.args[1]
    fields = {"conv": dict(conv.fields), "add": a, "chunk_w": chunk_w}
    return Layer(conv.op, FUSED_KERNEL, "mdt_conv_add_params", fields, dict(conv.arrays),
                 [conv.args[0], skip, add.args[-1]], macs=conv.macs, live_macs=conv.live_macs,
                 weight_bytes=conv.weight_bytes,
                 fused={"ops": [conv.op, add.op], "intermediate": graph.t(mid).name})


def scratch_bytes(layer: Layer) -> int:
    """Arena scratch a fused layer needs for its call: ``chunk_w`` output pixels."""
    if layer.kernel != FUSED_KERNEL:
        return 0
    return layer.fields["chunk_w"] * layer.fields["conv"]["out_c"]


def apply_fusions(graph: Graph, layers: list[Layer], chosen: dict[int, int]) -> list[Layer]:
    """Fresh copies of ``layers`` (the planner rewrites kernels and in-place state on what it gets)
    with each ``li -> chunk_w`` of ``chosen`` fused with its ADD."""
    out: list[Layer] = []
    li = 0
    while li < len(layers):
        if li in chosen:
            out.append(fuse(graph, layers[li], layers[li + 1], chosen[li]))
            li += 2
        else:
            out.append(replace(layers[li], inplace=None))
            li += 1
    return out


def choose_fusions(candidates: list[tuple[int, int, Layer]], peak_of: Callable[[dict], int]) -> dict:
    """Pick ``{(graph, li): chunk_w}``. All candidates fused at the smallest chunk give the lowest
    peak; a fusion is dropped where the peak does not grow without it (the separate kernels are
    faster), then each kept one takes the largest chunk (fewest passes) that keeps that peak."""
    chosen = {(gi, li): chunk_options(conv)[-1] for gi, li, conv in candidates}
    if not chosen:
        return chosen
    peak = peak_of(chosen)
    for key in list(chosen):
        trial = {k: v for k, v in chosen.items() if k != key}
        p = peak_of(trial)
        if p <= peak:
            chosen, peak = trial, p
    for gi, li, conv in candidates:
        if (gi, li) not in chosen:
            continue
        for k in chunk_options(conv)[:-1]:
            if peak_of({**chosen, (gi, li): k}) <= peak:
                chosen[(gi, li)] = k
                break
    return chosen
