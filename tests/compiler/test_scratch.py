"""Kernel working memory in the arena (compiler/scratch.py, mdt_scratch in runtime/mdt_runtime.h): for
the MLPerf Tiny models, the plan reserves at every conv / depthwise / FC / ADD layer at least what
kernel_scratch_bytes says its kernel takes, the generated call hands the kernel exactly that region,
and on QEMU's Cortex-M4 the fast paths scratch.py predicts are the ones that ran (a region too small
makes a path decline: the portable loop or another path would show up in the trace), the output is
BUILTIN_REF's byte for byte, and the painted stack's high-water mark of the inference is under 1 KB
(it was 10.5 KB for VWW and 12.6 KB for ResNet-8 while the fast paths kept their buffers on the
stack)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from microt_deploy.boards import load_board
from microt_deploy.compiler import GraphSpec, codegen, compile_program
from microt_deploy.compiler.ops.tables import add_operand_table, chan_table
from microt_deploy.compiler.scratch import SCRATCH_KERNELS, kernel_paths, kernel_scratch_bytes, region_bytes, row_window
from microt_deploy.evaluate.bench import MODELS_DIR, bench_inputs, reference_outputs, split_outputs
from microt_deploy.evaluate.bench_image import PORTABLE_PATHS, render_bench, run_bench_image

MODELS = sorted(MODELS_DIR.glob("*.tflite"))
FUSED = "mdt_conv2d_add"
# traced beside a layer's main path: channels the small-depth conv leaves to the reference formula,
# the ADD half of a fused layer
SIDE_PATHS = frozenset({"small_refchan", "fused_add_dsp"})
# the calls as _emit_graph writes them: kernel(&<prefix>_l<li>, ..., <the region>)
CALL = re.compile(r"(mdt_[a-z0-9_]+)\(&net_l(\d+), .*?(\(mdt_scratch\)\{arena \+ (\d+), (\d+), 0\}|MDT_NO_SCRATCH)\);")


def _compile(path, out, monkeypatch):
    """compile_program, plus the lowered layers (final kernels, fields, arrays) it emitted."""
    seen = []
    emit = codegen._emit_graph

    def spy(gi, c, *rest):
        seen.append(c)
        return emit(gi, c, *rest)

    monkeypatch.setattr(codegen, "_emit_graph", spy)
    plan = compile_program([GraphSpec(path, "net")], out)
    return plan, seen[0].layers


def _head(layer) -> int:
    """What the kernel keeps before its working memory: a row kernel's row, a fused layer's chunk."""
    if layer.kernel == FUSED:
        return layer.fields["chunk_w"] * layer.fields["conv"]["out_c"]
    if layer.kernel in ("mdt_conv2d_rows", "mdt_dwconv_rows"):
        return layer.fields["out_w"] * layer.fields["out_c"]
    return 0


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_plan_reserves_kernel_scratch(path, tmp_path, monkeypatch):
    plan, layers = _compile(path, tmp_path, monkeypatch)
    calls = {int(m.group(2)): m for m in CALL.finditer((tmp_path / "mdt_model.c").read_text())}
    needing = 0
    for entry in plan["graphs"][0]["layers"]:
        layer = layers[entry["index"]]
        if layer.kernel not in SCRATCH_KERNELS:
            assert entry["index"] not in calls
            continue
        need = _head(layer) + kernel_scratch_bytes(layer)
        call = calls[entry["index"]]
        assert call.group(1) == layer.kernel
        if need == 0:
            assert call.group(3) == "MDT_NO_SCRATCH" and entry["scratch"] is None
            continue
        needing += 1
        sc = entry["scratch"]
        assert sc is not None and sc["size"] >= need, (entry["index"], layer.kernel, sc, need)
        # the kernel is handed that very region, and the planner's check found it private at its step
        assert (int(call.group(4)), int(call.group(5))) == (sc["offset"], sc["size"])
    assert needing >= 10 if "ad01" not in path.stem else needing == 10
    assert plan["arena_bytes"] <= plan["arena_size"]


def test_region_bytes_counts_alignment():
    # the region may start on any byte (after a row of any length); each piece starts on 8 bytes
    assert region_bytes([]) == 0
    assert region_bytes([1]) == 7 + 8
    assert region_bytes([60, 2048, 12]) == 7 + 64 + 2048 + 16


@pytest.mark.slow
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_working_memory_left_the_stack(path, tmp_path, monkeypatch):
    board = load_board("qemu_mps2_an386")
    plan, layers = _compile(path, tmp_path / "c", monkeypatch)
    xs = bench_inputs(path)
    fw = render_bench(tmp_path / "c", plan, xs, board, tmp_path / "fw", ("MDT_PATH_TRACE",))
    run = run_bench_image(board, fw, len(plan["graphs"][0]["layers"]), limit_s=120)
    got = split_outputs(plan["graphs"][0], run.output)
    for g, e in zip(got, reference_outputs(path, xs), strict=True):
        assert (g == e).all(), f"{int((g != e).sum())} bytes differ from BUILTIN_REF"
    assert run.paths is not None
    for entry in plan["graphs"][0]["layers"]:
        li = entry["index"]
        if layers[li].kernel not in SCRATCH_KERNELS:  # (a composite patch stage has its own tests)
            continue
        want = kernel_paths(layers[li])
        ran = run.paths[li] - SIDE_PATHS
        # every call ran the path its scratch was sized for: one that found its region too small would
        # have declined, and the portable loop or another path would be in the trace
        assert ran == want, (li, layers[li].kernel, sorted(want), sorted(ran))
        assert want or not ran & PORTABLE_PATHS
    # the painted stack below the harness's call of the graph, measured on the device
    assert run.graph_stack is not None and 0 < run.graph_stack < 1024, run.graph_stack


# ---- the tables the compiler writes to flash (ops/tables.py) are the C builders' bytes ----

RUNTIME = Path(__file__).resolve().parents[2] / "firmware_templates" / "runtime"


def _c_list(values) -> str:
    return ", ".join(str(int(v)) for v in values) or "0"


def _chan_cases():
    """mdt_conv_params field sets over every branch of chan_table_fill: folded / post (e > 23) /
    reference (positive shift, e > 31) / constant (zero rows) channels, multipliers 0, biases at
    +-2^29, partial depths (the last channel not fast), clamped and full activation ranges."""
    rng = np.random.default_rng(5)
    for i, (depth_shape, act, bias) in enumerate([((3, 3, 8), (-128, 127), True), ((3, 3, 3), (-128, 127), True),
                                                  ((1, 1, 20), (-20, 100), False), ((5, 1, 7), (-128, 127), True)]):
        k_h, k_w, in_c = depth_shape
        n = 37 + 50 * i
        mult = rng.integers(1 << 30, (1 << 31) - 1, n, dtype=np.int64)
        shift = rng.integers(-12, 0, n)
        mult[:3] = 0
        shift[3:6] = (1, 2, 0)
        shift[6:9] = (-24, -31, -30)
        shift[9] = -28  # (TFLite shifts stay within -31 .. 30: mdt_rdbpot by 32 is undefined)
        shift[10] = -1
        b = rng.integers(-(1 << 31), (1 << 31) - 1, n, dtype=np.int64)
        b[11:15] = ((1 << 29) - 1, 1 << 29, -(1 << 29), -(1 << 29) + 1)
        b[15:20] = rng.integers(-5000, 5000, 5)
        zero = (rng.random(n) < 0.2).astype(np.uint8)
        f = dict(k_h=k_h, k_w=k_w, in_c=in_c, out_c=n, act_min=act[0], act_max=act[1],
                 output_offset=int(rng.integers(-128, 128)))
        yield f, (b.astype(np.int32) if bias else None), mult.astype(np.int32), shift.astype(np.int8), zero


def _host_run(tmp_path, name: str, body: str) -> list[int]:
    src = tmp_path / f"{name}.c"
    src.write_text(body)
    exe = tmp_path / name
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME}", str(src), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [int(v) for v in out.split()]


def test_chan_table_is_chan_table_fill_byte_for_byte(tmp_path):
    """ops/tables.chan_table against mdt_dsp_chan.h's chan_table_fill compiled on the host."""
    seen: set[tuple[int, int]] = set()
    for ci, (f, bias, mult, shift, zero) in enumerate(_chan_cases()):
        want = chan_table(f, bias, mult, shift, zero).view(np.uint8)
        bias_c = f"static const int32_t bias[] = {{{_c_list(bias)}}};\n" if bias is not None else ""
        body = (f'#include "mdt_dsp_chan.h"\n#include <stdio.h>\n'
                f"static const int32_t mult[] = {{{_c_list(mult)}}};\n"
                f"static const int8_t shift[] = {{{_c_list(shift)}}};\n"
                f"{bias_c}"
                f"static const uint8_t zero[] = {{{_c_list(zero)}}};\n"
                f"static chan_t t[{f['out_c']}];\n"
                "int main(void)\n{\n    mdt_conv_params p = {0};\n    const uint8_t *b = (const uint8_t *)t;\n"
                "    size_t i;\n"
                f"    p.k_h = {f['k_h']}; p.k_w = {f['k_w']}; p.in_c = {f['in_c']}; p.out_c = {f['out_c']};\n"
                f"    p.act_min = {f['act_min']}; p.act_max = {f['act_max']};\n"
                f"    p.output_offset = {f['output_offset']};\n"
                "    p.multiplier = mult; p.shift = shift; p.zero_rows = zero;\n"
                f"    p.bias = {'bias' if bias is not None else 'NULL'};\n"
                "    chan_table_fill(t, &p, 0, p.out_c);\n"
                "    for (i = 0; i < sizeof(t); ++i) {\n        printf(\"%u \", b[i]);\n    }\n"
                "    return 0;\n}\n")
        got = np.array(_host_run(tmp_path, f"chan{ci}", body), dtype=np.uint8)
        assert got.size == want.size and np.array_equal(got, want), (ci, np.flatnonzero(got != want)[:8])
        seen |= {(int(m), int(fa)) for m, fa in want.reshape(-1, 16)[:, 13:15]}
    # every mode (fold, post, reference, constant) and both fast values occurred: the branches ran
    assert {m for m, _ in seen} == {0, 1, 2, 3} and {fa for _, fa in seen} == {0, 1}, seen


def test_add_operand_table_is_the_reference_rescaling(tmp_path):
    """ops/tables.add_operand_table against mdt_dsp_add.c's table() expression compiled on the host."""
    cases = [(-3, 20, 1073741824, 0), (128, 20, 1518500250, -1), (-128, 20, 2147483647, -7), (5, 20, 0, -3),
             (0, 20, 1717986918, 2), (77, 31, 1431655765, -31)]
    body = '#include "mdt_fixedpoint.h"\n#include <stdio.h>\nint main(void)\n{\n    int32_t v;\n'
    for off, left, m, s in cases:
        body += (f"    for (v = -128; v < 128; ++v) {{\n        printf(\"%ld \", "
                 f"(long)mdt_mbqm(mdt_wrap_shl({off} + v, {left}), {m}, {s}));\n    }}\n")
    got = _host_run(tmp_path, "addt", body + "    return 0;\n}\n")
    # the C prints v = -128 .. 127; the table is indexed by (uint8_t)v
    order = np.arange(-128, 128) & 0xFF
    want = np.concatenate([add_operand_table(*c)[order] for c in cases]).tolist()
    assert got == want


def test_row_window_is_mdt_row_window(tmp_path):
    """scratch.row_window (the row calls' scratch, the patch stages' regions) against mdt_runtime_more.h's
    mdt_row_window (the row kernels, the fused conv + ADD) compiled on the host: the same window for every
    band of output rows over strides, paddings (negative: a region that starts inside the tensor),
    kernels, dilations and input sizes, windows clipped at either end or empty included."""
    cases = [(r, n, s, pad, k, d, size) for s in (1, 2, 3) for pad in (-2, 0, 1, 3) for k in (1, 3, 5)
             for d in (1, 2) for size in (1, 4, 9) for r in range(0, 7) for n in (1, 2, 8)]
    body = '#include "mdt_runtime.h"\n#include <stdio.h>\nstatic const int32_t c[][7] = {\n'
    body += ",\n".join("    {" + ", ".join(str(v) for v in case) + "}" for case in cases)
    body += ("\n};\nint main(void)\n{\n    size_t i;\n    for (i = 0; i < sizeof(c) / sizeof(c[0]); ++i) {\n"
             "        int32_t pad, h;\n"
             "        const int32_t first = mdt_row_window(c[i][0], c[i][1], c[i][2], c[i][3], c[i][4], c[i][5], "
             "c[i][6], &pad, &h);\n"
             "        printf(\"%ld %ld %ld \", (long)first, (long)pad, (long)h);\n    }\n    return 0;\n}\n")
    got = _host_run(tmp_path, "window", body)
    want = [v for case in cases for v in row_window(*case)]
    assert got == want
    assert any(w[2] == 0 for w in (row_window(*c) for c in cases))  # empty windows were among them
