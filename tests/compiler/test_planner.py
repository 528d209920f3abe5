"""The memory planner's own choices (compiler/planner.py): time-segmented buffers placed without waste,
in-place chains that do not drift past what they save, row kernels given several output rows per call
where that fits under the peak, and the result bit-exact in QEMU with those chunks (the DSP fast
paths on windows of several rows)."""

from __future__ import annotations

import numpy as np

from microt_deploy.compiler import GraphSpec, compile_program
from microt_deploy.compiler.planner import Buffer, live_extent, place_best, place_two_sided
from microt_deploy.evaluate.bench import MODELS_DIR

from .test_dsp_qemu import run_bit_exact


def _overlap(a: Buffer, b: Buffer) -> bool:
    return any(f1 <= l2 and f2 <= l1 and a.offset + lo1 < b.offset + hi2 and b.offset + lo2 < a.offset + hi1
               for f1, l1, lo1, hi1 in a.parts() for f2, l2, lo2, hi2 in b.parts())


def test_a_chain_alternates_ends_and_meets_the_lower_bound():
    """t0 -> t1 -> t2 -> t3, each read only by the next: the lowest-offset greedy stacks t2 above t1's
    gap; the two-sided placement puts them at alternate ends, in exactly the most bytes live at once."""
    sizes = [320, 480, 208, 592]  # multiples of the 16-byte alignment
    bufs = [Buffer(i, s, i, i + 1) for i, s in enumerate(sizes)]
    bound = live_extent(bufs)
    assert bound == 800  # steps 0-1 and 2-3
    peak = place_best(bufs)
    assert peak == bound
    assert not any(_overlap(a, b) for i, a in enumerate(bufs) for b in bufs[i + 1:])
    assert not place_two_sided([Buffer(i, s, i, i + 1) for i, s in enumerate(sizes)], bound - 16)


def test_segments_let_a_group_share_what_it_no_longer_uses():
    """A group whose first member dies at step 1 leaves its bytes to a buffer born at step 2."""
    group = Buffer(0, 1000, 0, 3, segments=[(0, 1, 0, 600), (1, 3, 600, 1000)])
    late = Buffer(1, 600, 2, 3)
    assert place_best([group, late]) == 1000 and late.offset == 0


def test_row_kernels_take_several_rows_per_call_and_stay_exact(tmp_path):
    """KWS (DS-CNN): every layer has the same size, so the planner runs them row-wise; it gives them
    chunks of rows where the peak allows, and the DSP build in QEMU gives TFLite's bytes."""
    path = MODELS_DIR / "mlperf_tiny_kws_ref_model.tflite"
    plan = compile_program([GraphSpec(path, "net")], tmp_path / "c")
    chunked = [la["inplace"]["rows_per_call"] for la in plan["graphs"][0]["layers"]
               if la["inplace"] and la["inplace"].get("rows_per_call")]
    assert chunked and max(chunked) > 1, chunked
    src = (tmp_path / "c" / "mdt_model.c").read_text()
    assert any(f"_rows(&net_l{la['index']}, {la['inplace']['rows_per_call']}," in src
               for la in plan["graphs"][0]["layers"] if la["inplace"] and la["inplace"].get("rows_per_call"))
    run = run_bit_exact(path, tmp_path, seed=11)
    assert run.output.size == int(np.prod(plan["graphs"][0]["outputs"][0]["shape"]))
