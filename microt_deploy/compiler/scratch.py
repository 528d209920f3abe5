"""Bytes of working memory each kernel needs for a layer, reserved in the arena at the layer's step.

The DSP fast paths of the C runtime (firmware_templates/runtime/mdt_dsp*.c) and the fused / row
kernels take their buffers and per-call tables from an ``mdt_scratch`` region the generated code
passes last (``(mdt_scratch){arena + offset, size}``), not from the stack or statics, like TFLM's
RequestScratchBufferInArena. ``kernel_scratch_bytes`` mirrors the C dispatch: for the layer's shape it
finds the path the C will pick and adds up the pieces that path takes with ``mdt_scratch_take``
(mdt_runtime.h: each piece starts on an 8-byte boundary and is rounded up to it; the region itself may
start anywhere, e.g. after a row kernel's output row, so 7 bytes of slack come first). The sizes are
what the DSP build (Cortex-M4 / M7 / M33 with the DSP extension) takes: the generated C is the same for
every target, and the portable kernels elsewhere take nothing from it. A region smaller than this makes
the fast path return 0 (the portable kernel runs, same bytes), never write past it.

Per-layer tables that depend only on constants are not in the region: the compiler writes them to
flash (ops/tables.py: the conv's channel records ``chan_table``, conv_nat's widened filter
``nat_weights``, the ADD's operand tables ``input1_table`` / ``input2_table``), and the C takes no room
for what its params point at; the sizes below follow the same fields. ``kernel_scratch_fast_bytes``
is the region a faster variant would need (today the same as ``kernel_scratch_bytes``).

Where a kernel runs its inner kernel several times (a row kernel once per output row, the fused
conv + ADD once per chunk of a row), the inner calls' shapes are enumerated as the C loops make them
and the largest need is kept. Constants below are the C's; the size checks in the C (conv_cache,
dw_ctx) fail the build where a struct no longer has the size assumed here.
"""

from __future__ import annotations

import numpy as np

from .ops import Layer

ALIGN = 8  # MDT_SCRATCH_ALIGN
SLACK = ALIGN - 1  # the region's start rounded up to ALIGN

# mdt_dsp.h
MDT_DSP_MAX_K = 640
MDT_DSP_DW_COLS = 128

# mdt_dsp.c
PIX = 6
CHUNK_OC = 128
CHAN_T = 16  # sizeof(chan_t)
CONV_CACHE = 60  # sizeof(conv_cache) on the 32-bit cores
NAT_ROW_HALF = 1536
NAT_W_HALF = 2560
NAT_MAX_G = 24
NAT_SLOT_HALF = 96
NAT_MAX_KH = 16

# mdt_dsp_conv_small.c
SMALL_CB = 32
SMALL_PIX = 16

# mdt_dsp_dw.c
DW_GROUP = 4
DW_BUF = DW_GROUP * 15 * MDT_DSP_DW_COLS // 2
DW_ACC = 124
DW_DIRECT_MAX = 16
DW_CALL = 764  # sizeof(dw_call): the sums, a channel job, the band descriptor (32-bit cores)
DW_BIAS_MAX = 1 << 29

# mdt_dsp_add.c
ADD_MIN_ELEMS = 512
ADD_TABLES = 2 * 256 * 4

FUSED_KERNEL = "mdt_conv2d_add"
ROW_KERNELS = ("mdt_conv2d_rows", "mdt_dwconv_rows")
# every kernel whose last argument is an mdt_scratch
SCRATCH_KERNELS = frozenset({"mdt_conv2d", "mdt_depthwise_conv2d", "mdt_fully_connected", "mdt_add",
                             FUSED_KERNEL, *ROW_KERNELS})


def _a(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def region_bytes(pieces: list[int]) -> int:
    """Bytes a region must have for these mdt_scratch_take calls, in order (0: none)."""
    return SLACK + sum(_a(n) for n in pieces) if pieces else 0


def _rqf_ok(mult: int, shift: int) -> bool:
    """mdt_rqf_ok (mdt_dsp_rq.h)."""
    return mult == 0 or (mult > 0 and -31 <= shift <= -1)


# ---- CONV_2D: mdt_conv2d -> mdt_conv2d_small_dsp, else mdt_conv2d_dsp (conv_nat or the im2col) ----

def _conv_small(f: dict) -> list[int] | None:
    """mdt_conv2d_small_dsp: the channel table of a block (+ its end entry) and, unless the input is
    streamed, a chunk of gathered pixels; None where the path does not take the layer."""
    depth = f["k_h"] * f["k_w"] * f["in_c"]
    if not (1 <= depth <= 16 and -127 <= f["input_offset"] <= 128 and -128 <= f["output_offset"] <= 128):
        return None
    npix = f["out_h"] * f["out_w"]
    if npix <= 0:
        return []
    wide = depth > 8
    nb, words = (16, 13) if wide else (8, 9)
    stream = (f["in_c"] == nb and f["k_h"] == 1 and f["k_w"] == 1 and f["stride_h"] == 1 and f["stride_w"] == 1
              and f["pad_h"] == 0 and f["pad_w"] == 0 and f["in_h"] == f["out_h"] and f["in_w"] == f["out_w"])
    pieces = [4 * (min(f["out_c"], SMALL_CB) * words + (4 if wide else 9))]
    if not stream:
        pieces.append(min(npix, SMALL_PIX) * nb)
    return pieces


def _conv_nat(f: dict, depth: int) -> list[int] | None:
    """conv_nat (few input channels; mdt_dsp.c)."""
    in_c = f["in_c"]
    ng = (depth + 3) // 4
    reach = (f["out_w"] - 1) * f["stride_w"] + f["k_w"]
    pitch = max(reach, f["pad_w"] + f["in_w"]) * in_c
    whole = (f["in_h"] + 1) * pitch <= NAT_ROW_HALF
    per_chunk = min(NAT_W_HALF // (4 * ng), CHUNK_OC)
    if (f["dil_w"] != 1 or ng > NAT_MAX_G or f["k_h"] > NAT_MAX_KH or (f["k_h"] + 1) * pitch > NAT_ROW_HALF
            or per_chunk < 1):
        return None
    rows = f["in_h"] + 1 if whole else f["k_h"] + 1
    # widened weights of a chunk (none where the compiler wrote them to flash: nat_weights), widened
    # rows (+ the zero row), PIX patches, k_h row pointers
    wbuf = [] if f.get("nat_weights") is not None else [min(f["out_c"], per_chunk) * 4 * ng * 2]
    return [*wbuf, rows * pitch * 2, PIX * NAT_SLOT_HALF * 2, 4 * f["k_h"]]


def conv_call(f: dict) -> tuple[str, list[int]]:
    """(the path, runtime/mdt_trace.h's name, and the pieces it takes) of one mdt_conv2d call with
    params ``f`` (mdt_conv_params)."""
    small = _conv_small(f)
    if small is not None:
        return "conv_small", small
    depth = f["k_h"] * f["k_w"] * f["in_c"]
    if depth > MDT_DSP_MAX_K:
        return "conv_ref", []  # the portable kernel
    # mdt_conv2d_dsp's front: the keys, then the channel table of a chunk unless the compiler wrote
    # the layer's table to flash (ops/tables.py; conv_front then takes no room for one)
    front = [CONV_CACHE] if f.get("chan_table") is not None else [CONV_CACHE, min(f["out_c"], CHUNK_OC) * CHAN_T]
    words = f["in_c"] % 4 == 0
    if not words:
        nat = _conv_nat(f, depth)
        if nat is not None:
            return "conv_nat", front + nat
    pieces = front + [2 * PIX * ((depth + 3) // 4 + 1) * 4]  # the widened im2col of PIX pixels
    if not words:
        pieces.append(depth + 8)  # gather_bytes_f's patch bytes
    full = f["act_min"] == -128 and f["act_max"] == 127
    if (f["out_h"] * f["out_w"]) % PIX in (1, 2, 3) and depth % 4 == 0 and full:
        pieces.append(PIX * min(f["out_c"], CHUNK_OC))  # conv_pass's short-pass outputs (4, 5: in place)
    return ("conv_words" if words else "conv_bytes"), pieces


# ---- DEPTHWISE_CONV_2D: mdt_dw3x3_dsp, else the first-round path (no scratch) ----

def _dw_all_fast(f: dict, arrays: dict) -> bool:
    """dw_all_fast (mdt_dsp_dw.c): every channel in the asm requantisation's case."""
    if f["act_min"] != -128 or f["act_max"] != 127 or f["in_c"] % 4:
        return False
    c = f["in_c"]
    e = -np.asarray(arrays["shift"][:c], dtype=np.int64)
    m = np.asarray(arrays["mult"][:c], dtype=np.int64)
    if not (np.all((e >= 1) & (e <= 22)) and np.all(m >= 0)):
        return False
    if "bias" in arrays and f.get("bias") is not None:
        b = np.asarray(arrays["bias"][:c], dtype=np.int64)
        return bool(np.all((b >= -DW_BIAS_MAX) & (b < DW_BIAS_MAX)))
    return True


def dw_call(f: dict, arrays: dict) -> tuple[str, list[int]]:
    """(path, pieces) of one mdt_depthwise_conv2d call with params ``f`` and the layer's arrays."""
    stride, stride_h = f["stride_w"], f["stride_h"]
    out_w, out_h, in_w, pad_w = f["out_w"], f["out_h"], f["in_w"], f["pad_w"]
    rem = out_w & 3
    pair = 1 if out_w > 4 and rem in (1, 2) else 0
    nq = (out_w + (0 if pair else 3)) // 4
    lead = pad_w & 1
    reach = 4 * nq + (4 if pair else 2) if stride == 1 else 8 * nq + (6 if pair else 2)
    ncols = lead + reach
    ix_end = min(ncols - lead - pad_w, in_w)
    pi = 0 if ncols <= 16 else 1 if ncols <= 32 else 2 if ncols <= 64 else 3
    pitch = 16 << pi
    if (f["k_h"] != 3 or f["k_w"] != 3 or f["depth_multiplier"] != 1 or f["dil_h"] != 1 or f["dil_w"] != 1
            or stride not in (1, 2) or stride_h < 1 or out_w < 1 or out_w > DW_ACC or out_h < 1 or pad_w < 0
            or ix_end < 1 or pitch > MDT_DSP_DW_COLS or ncols > pitch):
        # the first-round path (channels in groups of 4) or the portable kernel: no scratch
        general = f["depth_multiplier"] == 1 and f["in_c"] % 4 == 0 and bool(np.all(np.asarray(arrays["mult"]) >= 0))
        return ("dw_general" if general else "dw_ref"), []
    rows_cap = DW_BUF // (DW_GROUP * pitch)
    fast = _dw_all_fast(f, arrays)
    if fast and out_h * out_w <= DW_DIRECT_MAX:
        dcols, drows = (out_w - 1) * stride + 3, (out_h - 1) * stride_h + 3
        if drows * dcols * DW_GROUP <= DW_BUF and min(dcols - pad_w, in_w) >= 1:
            return "dw3_direct", [DW_CALL, drows * dcols * DW_GROUP * 2]  # dw_direct_layer's interleaved rows
    band_max = (rows_cap - 3) // stride_h + 1
    nbands = -(-out_h // band_max)
    band = -(-out_h // nbands)  # rows spread evenly over the fewest bands (mdt_dw3x3_dsp)
    used = (band - 1) * stride_h + 3
    return ("dw3_band" if fast else "dw3_c"), [DW_CALL, used * DW_GROUP * pitch * 2]  # the transposed rows


# ---- FULLY_CONNECTED: mdt_fc_rows3_dsp ----

def fc_call(f: dict) -> tuple[str, list[int]]:
    """mdt_fc_rows3_dsp: the input widened once, 2 words per whole group of 4."""
    d = f["in_depth"]
    if d > MDT_DSP_MAX_K or d // 4 < 1:
        return "fc_ref", []
    return "fc_dsp", [8 * (d // 4)]


# ---- ADD: mdt_add_dsp ----

def add_call(f: dict) -> tuple[str, list[int]]:
    """mdt_add_dsp: the two operands' rescaling tables, from flash where the compiler wrote them
    (ops/tables.py: no scratch), else built in the scratch (2 x 256 int32) for 512 elements and more."""
    if not _rqf_ok(f["output_multiplier"], f["output_shift"]):
        return "add_ref", []
    if f.get("input1_table") is not None and f.get("input2_table") is not None:
        return "add_dsp", []
    if int(np.prod(f["dims"])) < ADD_MIN_ELEMS:
        return "add_ref", []
    return "add_dsp", [ADD_TABLES]


# ---- the kernels that call those on windows of their layer ----

def row_window(r: int, n: int, stride: int, pad: int, k: int, dil: int, size: int) -> tuple[int, int, int]:
    """(first, pad, count) of the input rows (or columns) output rows ``r .. r + n - 1`` of a convolution
    read: the first stored one, the padding left before it and how many from it the window reaches,
    clipped to the ``size`` rows of the input (0 where it reaches none). mdt_runtime_more.h's
    mdt_row_window, which the row kernels and the fused conv + ADD call; the patch stages' regions
    (patch.py) are these windows too."""
    y0 = r * stride - pad
    first = max(y0, 0)
    count = min(y0 + (n - 1) * stride + (k - 1) * dil + 1, size) - first
    return first, first - y0, max(count, 0)


def _windows(f: dict, chunk: int = 1):
    """(out_h, pad_h, in_h) of each distinct chunk of ``chunk`` output rows' window (mdt_inplace.c's
    loop; mdt_fused.c's: one row)."""
    seen = set()
    for r in range(0, f["out_h"], chunk):
        n = min(chunk, f["out_h"] - r)
        _, pad, rows = row_window(r, n, f["stride_h"], f["pad_h"], f["k_h"], f["dil_h"], f["in_h"])
        w = (n, pad, rows)
        if w not in seen:
            seen.add(w)
            yield w


def _row_calls(f: dict, chunk: int = 1):
    """The params of each distinct call a row kernel makes (``chunk`` rows, a window of the input)."""
    for out_h, pad_h, in_h in _windows(f, chunk):
        yield {**f, "out_h": out_h, "pad_h": pad_h, "in_h": in_h}


def _fused_calls(f: dict, chunk_w: int):
    """The params of each distinct conv call mdt_conv2d_add makes (a chunk of a row's pixels)."""
    chunks = {(min(chunk_w, f["out_w"] - x0), f["pad_w"] - x0 * f["stride_w"])
              for x0 in range(0, f["out_w"], chunk_w)}
    for q in _row_calls(f):
        for n, pad_w in chunks:
            yield {**q, "out_w": n, "pad_w": pad_w}


def kernel_calls(layer: Layer) -> list[tuple[str, list[int]]]:
    """(path, pieces) of each distinct call the layer's kernel makes of a fast path / portable kernel
    ([] for kernels without scratch)."""
    f, k = layer.fields, layer.kernel
    if k == "mdt_conv2d":
        return [conv_call(f)]
    chunk = layer.inplace.get("rows", 1) if layer.inplace else 1  # rows per call of a row kernel (planner)
    if k == "mdt_conv2d_rows":
        return [conv_call(q) for q in _row_calls(f, chunk)]
    if k == "mdt_depthwise_conv2d":
        return [dw_call(f, layer.arrays)]
    if k == "mdt_dwconv_rows":
        return [dw_call(q, layer.arrays) for q in _row_calls(f, chunk)]
    if k == "mdt_fully_connected":
        return [fc_call(f)]
    if k == "mdt_add":
        return [add_call(f)]
    if k == FUSED_KERNEL:
        # the conv's calls on chunks of a row (mdt_conv2d_add's ADD half takes no tables)
        return [conv_call(q) for q in _fused_calls(f["conv"], f["chunk_w"])]
    return []


CHAN_TABLE_PATHS = frozenset({"conv_words", "conv_bytes", "conv_nat"})  # the paths that read chan_t records


def kernel_paths(layer: Layer) -> set[str]:
    """The kernel paths (runtime/mdt_trace.h names) the layer runs, given the scratch this module sizes,
    with the marks of the compiler's flash tables: conv_chan_const where a conv path reads the layer's
    channel records, add_tables_const where an ADD (plain, or the fused kernel's ADD half) reads its
    operand tables."""
    paths = {path for path, _ in kernel_calls(layer) if path}
    f = layer.fields
    conv = f["conv"] if layer.kernel == FUSED_KERNEL else f
    if paths & CHAN_TABLE_PATHS and conv.get("chan_table") is not None:
        paths.add("conv_chan_const")
    if "conv_nat" in paths and conv.get("nat_weights") is not None:
        paths.add("conv_nat_const")
    add = f["add"] if layer.kernel == FUSED_KERNEL else f if layer.kernel == "mdt_add" else {}
    if (add.get("input1_table") is not None and add.get("input2_table") is not None
            and _rqf_ok(add["output_multiplier"], add["output_shift"])):
        paths.add("add_tables_const")
    return paths


def kernel_scratch_bytes(layer: Layer) -> int:
    """Bytes of arena working memory the kernel ``layer.kernel`` takes for this layer's shape (see the
    module's doc): the most any of its calls takes. For a row kernel, what comes after its output row;
    for the fused conv + ADD, what comes after its chunk of outputs (the conv's memory)."""
    return max((region_bytes(pieces) for _, pieces in kernel_calls(layer)), default=0)


def kernel_scratch_fast_bytes(layer: Layer) -> int:
    """Bytes of arena working memory with which the layer's kernel takes its fastest path, >=
    kernel_scratch_bytes(layer): a planner may grant this where it does not raise the peak. Today the
    two are equal for every layer: the tables a larger region used to buy (the ADD operand tables, the
    conv channel records) are written to flash by the compiler (ops/tables.py), which is faster still
    and takes no SRAM; kept as the place a future region-for-speed variant declares its size."""
    return kernel_scratch_bytes(layer)
