"""Static arena plan: liveness of every activation buffer over the whole program (all graphs in
order on one arena), then greedy placement by size at aligned offsets. The peak is exact."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MicrotError

ALIGN = 16


@dataclass
class Buffer:
    """One region of the arena shared by aliased tensors (RESHAPE, bound graph inputs)."""

    id: int
    size: int
    first: int  # program step of the first write
    last: int  # program step of the last read (inclusive)
    tensors: list[str] = field(default_factory=list)  # "prefix:tensor_name"
    offset: int = -1

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def place_best(buffers: list[Buffer]) -> int:
    """Greedy placement under a few orders (largest first, earliest first, longest-lived first); keep
    the smallest arena."""
    orders = [lambda b: (-b.size, b.first, b.id), lambda b: (b.first, -b.size, b.id),
              lambda b: (-(b.last - b.first), -b.size, b.id), lambda b: (-b.size * (b.last - b.first + 1), b.id)]
    best, best_offsets = None, None
    for order in orders:
        peak = place(buffers, order)
        if best is None or peak < best:
            best, best_offsets = peak, [b.offset for b in buffers]
    for b, off in zip(buffers, best_offsets or [], strict=True):
        b.offset = off
    return best or 0


def place(buffers: list[Buffer], order=lambda b: (-b.size, b.first, b.id)) -> int:
    """Give every buffer an offset; return the arena size (end of the highest buffer)."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=order):
        busy = sorted((p.offset, p.offset + p.size) for p in placed if p.overlaps_in_time(buf))
        offset = 0
        for start, end in busy:
            if offset + buf.size <= start:
                break
            offset = max(offset, align(end))
        buf.offset = offset
        placed.append(buf)
    return max((b.offset + b.size for b in buffers), default=0)


# Kernels whose output element i depends only on input element i (same index): the output may take
# the input's place when that input is read for the last time. DEQUANTIZE writes backwards (its float
# output is 4x wider), QUANTIZE float->int8 forwards, so both are safe at the same start address.
ELEMENTWISE_INPLACE = frozenset({"mdt_add", "mdt_mul", "mdt_requantize", "mdt_lookup", "mdt_quantize_f32",
                                 "mdt_dequantize_f32"})
ROW_KERNELS = {"mdt_conv2d": "mdt_conv2d_rows", "mdt_depthwise_conv2d": "mdt_dwconv_rows"}


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
