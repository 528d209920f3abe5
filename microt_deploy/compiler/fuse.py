"""Layer fusion. A PAD whose only reader is a convolution is folded into that convolution's padding
(``fold_pads``: always, it only removes a buffer and a pass). A CONV_2D whose only reader is the ADD
right after it (a residual block's last conv and its skip connection) becomes one ``mdt_conv2d_add``
layer, so the conv's output never exists whole (mdt_fused.c). This module finds the candidates,
builds fused layers and chooses which fusions and scratch sizes to keep: fewest bytes first, then
speed (codegen's planner measures the peaks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .ir import Graph
from .ops import Layer
from .scratch import kernel_scratch_bytes

FUSED_KERNEL = "mdt_conv2d_add"


def _reads(graph: Graph, layers: list[Layer], idx: int) -> int:
    return sum(layer.args[:-1].count(idx) for layer in layers) + graph.outputs.count(idx)


CONV_KERNELS = ("mdt_conv2d", "mdt_depthwise_conv2d")


def fold_pads(graph: Graph, layers: list[Layer]) -> list[Layer]:
    """Fold each PAD into the convolution that is its only reader; return the new layer list.

    Why it is exact: TFLite's int8 convolutions skip the taps that fall outside their input, which is
    the same sum as reading ``input_zero_point`` there (``(x + input_offset) * w`` is 0 for x = zp).
    A PAD that writes the conv input's zero point on H and W only (PAD pads with its output's zero
    point, PADV2 with its constant) therefore equals the conv run on the unpadded input with the
    PAD's top / left added to its own padding: the kernels derive every tap's row and column from
    ``out * stride - pad`` and skip those outside ``in_h`` x ``in_w``, so the bottom / right padding
    (explicit or the conv's own) needs no field. Refused (kept as a separate PAD) otherwise.
    """
    out: list[Layer] = []
    skip: set[int] = set()
    by_input: dict[int, list[int]] = {}
    for li, layer in enumerate(layers):
        for idx in layer.args[:-1]:
            by_input.setdefault(idx, []).append(li)
    folded: dict[int, Layer] = {}
    for li, pad in enumerate(layers):
        if pad.kernel != "mdt_pad":
            continue
        mid = pad.args[-1]
        readers = by_input.get(mid, [])
        if len(readers) != 1 or _reads(graph, layers, mid) != 1:
            continue
        conv = layers[readers[0]]
        f, pf = conv.fields, pad.fields
        if conv.kernel not in CONV_KERNELS or conv.args[0] != mid or conv.folded_pad:
            continue
        (b0, top, left, c0), (n_in, h_in, w_in, c_in) = pf["pad_before"], pf["in_dims"]
        n_out, _, _, c_out = pf["out_dims"]
        if b0 or c0 or n_in != n_out or c_in != c_out or pf["pad_value"] != -f["input_offset"]:
            continue
        fields = dict(f, in_h=h_in, in_w=w_in, pad_h=f["pad_h"] + top, pad_w=f["pad_w"] + left)
        folded[readers[0]] = replace(conv, fields=fields, args=[pad.args[0], *conv.args[1:]],
                                     folded_pad={"op": pad.op, "intermediate": graph.t(mid).name,
                                                 "pad_before": [top, left]})
        skip.add(li)
    for li, layer in enumerate(layers):
        if li not in skip:
            out.append(folded.get(li, layer))
    return out


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
                       ("input1_shift", "input2_shift"), ("stride1", "stride2"), ("input1_table", "input2_table")):
            if k1 in a:
                a[k1], a[k2] = a[k2], a[k1]
    skip = add.args[0] if add.args[1] == mid else add.args[1]
    fields = {"conv": dict(conv.fields), "add": a, "chunk_w": chunk_w}
    # the ADD's operand tables (ops/tables.py) go with the conv's arrays: their names do not clash
    return Layer(conv.op, FUSED_KERNEL, "mdt_conv_add_params", fields, {**conv.arrays, **add.arrays},
                 [conv.args[0], skip, add.args[-1]], macs=conv.macs, live_macs=conv.live_macs,
                 weight_bytes=conv.weight_bytes,
                 fused={"ops": [conv.op, add.op], "intermediate": graph.t(mid).name})


def scratch_bytes(layer: Layer) -> int:
    """Arena scratch the layer's kernel call needs: a fused layer's ``chunk_w`` output pixels first,
    then the kernel's working memory (scratch.kernel_scratch_bytes). A row kernel's output row is not
    counted here: the planner puts it first (layer.inplace["scratch"]) and adds this after it."""
    chunk = layer.fields["chunk_w"] * layer.fields["conv"]["out_c"] if layer.kernel == FUSED_KERNEL else 0
    return chunk + kernel_scratch_bytes(layer)


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
