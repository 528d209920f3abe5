"""The requantisation helpers, exhaustively over shifts and edge accumulators, against TFLite's
reference semantics written here in Python (numpy, exact 64-bit integer arithmetic), not derived
from our C: tensorflow/lite/kernels/internal/common.h MultiplyByQuantizedMultiplier(int32 x, int32
m, int shift) = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * (1 << left), m), right)
with left = max(shift, 0), right = max(-shift, 0), and gemmlowp's two helpers.

Checked through the host compiler (tests/compiler/requant_driver.c): mdt_fixedpoint.h's mdt_srdhm,
mdt_rdbpot and mdt_mbqm over every shift -31..+30, the DSP variants of mdt_dsp_rq.h (the folded mdt_rqf,
every output offset it folds or adds after; mdt_rqs, any shift with an ADD's left_shift of 0 or 20)
over their domains; accumulators INT32_MIN, INT32_MAX, 0, +-1, +-2^k and +-2^k +- 1, rounding ties and random
ones; multipliers 0, 1, 2^30 (ties), 2^30 + 1, 2^31 - 1, random, and negative ones for the generic
helpers. Millions of cases; a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest

from microt_deploy.compiler import RUNTIME_DIR

HERE = __import__("pathlib").Path(__file__).resolve().parent
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
SHIFTS = np.arange(-31, 31, dtype=np.int64)  # TFLite's range of a per-channel shift
OFFSETS = np.array([-128, -100, -1, 0, 1, 5, 127], dtype=np.int64)

# ---- the reference, from TFLite / gemmlowp's definitions (int64 numpy; wrapping made explicit) ----


def wrap32(v: np.ndarray) -> np.ndarray:
    """Two's-complement int32 of an integer array (what int32 arithmetic gives on the targets)."""
    return ((v.astype(np.int64) + 2**31) & 0xFFFFFFFF) - 2**31


def ref_srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul: (a*b + nudge) / 2^31, the division truncating toward
    zero, nudge 2^30 for a non-negative product and 1 - 2^30 otherwise; INT32_MIN^2 saturates."""
    a, b = np.broadcast_arrays(a.astype(np.int64), b.astype(np.int64))
    ab = a * b  # |ab| <= 2^62: exact in int64
    s = ab + np.where(ab >= 0, 2**30, 1 - 2**30)
    q = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C++ integer division: toward zero
    return np.where((a == I32_MIN) & (b == I32_MIN), I32_MAX, q)


def ref_rdbpot(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^e rounded to nearest, ties away from zero."""
    x, e = np.broadcast_arrays(x.astype(np.int64), e.astype(np.int64))
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def ref_mbqm(x: np.ndarray, m: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (int32 x): the left shift wraps as int32 multiplication."""
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return ref_rdbpot(ref_srdhm(wrap32(x.astype(np.int64) << left), m), right)


# ---- the cases ----


def accumulators(seed: int = 1, n_random: int = 600) -> np.ndarray:
    edge = {I32_MIN, I32_MIN + 1, I32_MAX, I32_MAX - 1, 0, 1, -1}
    for k in range(31):
        for d in (-1, 0, 1):
            edge |= {2**k + d, -(2**k) + d}
    for k in range(1, 31):  # x/2^k ties (odd multiples of 2^(k-1)), for the rounding shifts
        edge |= {3 * 2 ** (k - 1), -3 * 2 ** (k - 1)}
    rng = np.random.default_rng(seed)
    rand = [rng.integers(I32_MIN, I32_MAX, size=n_random // 2, endpoint=True),
            rng.integers(-(2**20), 2**20, size=n_random // 2)]  # typical accumulator magnitudes
    vals = np.concatenate([np.array(sorted(v for v in edge if I32_MIN <= v <= I32_MAX), dtype=np.int64), *rand])
    return np.unique(vals)


def multipliers(seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fixed = [0, 1, 2, 2**30 - 1, 2**30, 2**30 + 1, 1518500250, 2**31 - 2, I32_MAX]
    rand = rng.integers(2**30, 2**31, size=8)  # a quantized multiplier: [2^30, 2^31)
    negative = [-1, -(2**30), I32_MIN, -1518500250]
    return np.array([*fixed, *rand, *negative], dtype=np.int64)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    assert shutil.which("gcc"), "gcc is not installed: run `make setup`"
    work = tmp_path_factory.mktemp("requant")
    (work / "arm_acle.h").write_text(
        "#include <stdint.h>\n/* host stand-in for the one ACLE intrinsic mdt_dsp_rq.h uses */\n"
        "static inline int32_t __ssat(int32_t v, int bits)\n{\n"
        "    const int32_t hi = (int32_t)((1u << (bits - 1)) - 1u), lo = -hi - 1;\n"
        "    return v < lo ? lo : (v > hi ? hi : v);\n}\n")
    exe = work / "requant"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", "-I", str(work),
                    "-I", str(RUNTIME_DIR), str(HERE / "requant_driver.c"), "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    return exe


def _run(exe, xs, ms, shifts, offs) -> np.ndarray:
    blob = b"".join(np.concatenate([[len(a)], a]).astype("<i4").tobytes() for a in (xs, ms, shifts, offs))
    res = subprocess.run([str(exe)], input=blob, capture_output=True, timeout=120, check=True)
    return np.frombuffer(res.stdout, dtype="<i4").astype(np.int64)


def test_requantisation_helpers_match_the_reference_everywhere(driver):
    t0 = time.monotonic()
    xs, ms = accumulators(), multipliers()
    nx, nm, ns, no = len(xs), len(ms), len(SHIFTS), len(OFFSETS)
    out = _run(driver, xs, ms, SHIFTS, OFFSETS)
    vals = np.concatenate([xs, ms])
    sizes = {"srdhm": len(vals) ** 2, "rdbpot": nx * 32, "mbqm": nx * nm * ns, "rqf": nx * nm * ns * no,
             "rqs": 2 * nx * nm * ns}
    assert out.size == sum(sizes.values())
    got, pos = {}, 0
    for name, n in sizes.items():
        got[name], pos = out[pos:pos + n], pos + n

    def check(name, expected, where=None):
        g = got[name].reshape(expected.shape)
        bad = (g != expected) if where is None else ((g != expected) & where)
        assert not bad.any(), f"{name}: {int(bad.sum())} cases differ, first at index {np.argwhere(bad)[0].tolist()}"

    check("srdhm", ref_srdhm(vals[:, None], vals[None, :]))
    check("rdbpot", ref_rdbpot(xs[:, None], np.arange(32)[None, :]))
    x3, m3, s3 = xs[:, None, None], ms[None, :, None], SHIFTS[None, None, :]
    mbqm = ref_mbqm(x3, m3, s3)
    check("mbqm", mbqm)
    # the folded form: defined for m > 0 and a right shift of 1..31, or m == 0 (any shift)
    ok = (m3 == 0) | ((m3 > 0) & (s3 <= -1) & (s3 >= -31))
    assert ok.sum() > 0.4 * ok.size
    check("rqf", np.broadcast_to(mbqm[..., None], (nx, nm, ns, no)), np.broadcast_to(ok[..., None], (nx, nm, ns, no)))
    assert (got["rqf"].reshape(nx, nm, ns, no)[~np.broadcast_to(ok, (nx, nm, ns))] == I32_MIN).all()
    # any shift, m >= 0, after an ADD's left_shift ls (0, 20): the left shifts together below 32
    rqs = np.stack([mbqm, ref_mbqm(wrap32(x3 << 20), m3, s3)])
    rqs_ok = np.stack([np.broadcast_to(m3 >= 0, mbqm.shape), np.broadcast_to((m3 >= 0) & (s3 <= 11), mbqm.shape)])
    check("rqs", rqs, rqs_ok)
    assert (got["rqs"].reshape(rqs.shape)[~rqs_ok] == I32_MIN).all()
    total = sum(sizes.values())
    assert total > 2_000_000
    print(f"\n{total:,} requantisation cases in {time.monotonic() - t0:.2f} s")


def test_reference_itself_on_known_values():
    """The Python reference against hand-worked values (so both sides cannot be wrong the same way)."""
    a = np.array([I32_MIN, 2**30, -(2**30), 3, I32_MAX])
    assert ref_srdhm(a, np.array([I32_MIN, 2**30, 2**30, 2**30, I32_MAX])).tolist() == [
        I32_MAX, 2**29, -(2**29), 2, I32_MAX - 1]  # 3 * 2^30 / 2^31 = 1.5 -> 2; -2^29 exact
    assert ref_srdhm(np.array([-1, 1]), np.array([2**30, 2**30])).tolist() == [0, 1]  # -0.5 -> 0, 0.5 -> 1
    assert ref_rdbpot(np.array([5, -5, 6, -6, 7, -7, I32_MIN]), np.array([1, 1, 2, 2, 1, 1, 31])).tolist() == [
        3, -3, 2, -2, 4, -4, -1]
    # x << 30 wraps: 3 << 30 == -2^30 as int32
    assert ref_mbqm(np.array([3]), np.array([2**30]), np.array([30])).tolist() == [-(2**29)]
