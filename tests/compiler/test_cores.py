"""The runtime on every core QEMU emulates (microt_deploy/evaluate/cores.py): Cortex-M3 (mps2-an385),
M4 (an386), M7 (an500), M33 (an505), M55 (mps3-an547) and rv32imc (riscv32 virt, picolibc). On each,
a real model (MLPerf Tiny KWS: conv, depthwise, pointwise, average pooling, fully connected, softmax)
and a mixed graph (few-channel and general conv, 3x3 depthwise, residual ADD, max pooling, mean,
dense with odd sizes) are built with the core's compiler, run in QEMU, and every output byte is
compared with TFLite's reference kernels (BUILTIN_REF); the kernel path the image links (the DSP
fast paths' symbols) must be the one the core takes: DSP on M4/M7/M33/M55, portable on M3 and RISC-V.

A missing compiler or QEMU machine fails with the install command (no skips). Also: the DSP gate of
mdt_dsp.h per -mcpu, and the generated constant arrays' alignment at -Os.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from microt_deploy.compiler import RUNTIME_DIR, GraphSpec, compile_program
from microt_deploy.evaluate import cores
from microt_deploy.evaluate.bench import MODELS_DIR, bench_input

from .op_cases import _act
from .tflite_models import convert, reference, tf, weights

KWS = MODELS_DIR / "mlperf_tiny_kws_ref_model.tflite"
CORE_IDS = list(cores.CORE_IDS)


def mixed(name):
    """conv 3x3 / stride 2 over 3 channels, 3x3 depthwise, pointwise, 3x3 VALID conv, a 1x1 conv with a
    residual ADD, max pooling, mean and a dense layer to 7 outputs (odd sizes: unaligned neighbours)."""
    w1, w2 = weights(name + "1", (3, 3, 3, 8)), weights(name + "2", (3, 3, 8, 1))
    w3, w4 = weights(name + "3", (1, 1, 8, 16)), weights(name + "4", (3, 3, 16, 13))
    w5, w6 = weights(name + "5", (1, 1, 13, 13)), weights(name + "6", (13, 7), 0.2)
    b1, b4 = weights(name + "b1", (8,)), weights(name + "b4", (13,))

    def fn(x):
        t = tf()
        y = t.nn.relu6(t.nn.conv2d(x, w1, strides=2, padding="SAME") + b1)
        y = t.nn.relu(t.nn.depthwise_conv2d(y, w2, strides=[1, 1, 1, 1], padding="SAME"))
        y = t.nn.conv2d(y, w3, strides=1, padding="SAME")
        y = t.nn.conv2d(y, w4, strides=1, padding="VALID") + b4
        y = _act(y + t.nn.conv2d(y, w5, strides=1, padding="SAME"), "relu")
        y = t.nn.max_pool2d(y, 2, 2, "VALID")
        return t.matmul(t.reduce_mean(y, axis=[1, 2]), w6)

    return fn, [(1, 22, 18, 3)]


class Case:
    def __init__(self, name, path, work):
        self.name, self.path = name, path
        self.compiled = work / name
        self.plan = compile_program([GraphSpec(path, "net")], self.compiled)
        self.x = bench_input(self.plan["graphs"][0]["inputs"][0]["shape"], seed=5)
        self.expected = reference(path, [self.x])[0].reshape(-1)


@pytest.fixture(scope="module")
def cases(model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("core-cases")
    fn, shapes = mixed("core_mixed")
    built = [Case("kws", KWS, work), Case("mixed", convert(fn, shapes, model_dir, "core_mixed"), work)]
    ops = " ".join(str(la["op"]) for c in built for la in c.plan["graphs"][0]["layers"])
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED"):
        assert op in ops, (op, ops)
    return built


@pytest.mark.parametrize("core_id", CORE_IDS)
def test_core_is_installed(core_id):
    """The compiler and the QEMU machine of each core are there (else: the command that installs them)."""
    cores.require_core(cores.get_core(core_id))


@pytest.mark.parametrize("core_id", CORE_IDS)
def test_bit_exact_on_core(core_id, cases, tmp_path):
    core = cores.get_core(core_id)
    for case in cases:
        r = cores.run_on_core(core, case.compiled, case.plan, case.x, case.expected, tmp_path / case.name,
                              model=case.name, limit_s=120)
        assert r.bit_exact, f"{case.name} on {core.name}: {r.differing_bytes} bytes differ from BUILTIN_REF"
        assert r.path == core.path, f"{case.name} on {core.name} linked the {r.path} kernels, not {core.path}"
        assert r.instructions > 0 and r.flash_bytes > 0
        if case.name == "kws":  # and it ran: the fast paths take ~2 instructions per MAC, the portable ~14
            per_mac = r.instructions / case.plan["macs"]
            assert (per_mac < 4.0) == (core.path == "dsp"), f"{core.name}: {per_mac:.2f} instructions per MAC"


def _preprocess_dsp(cc: str, flags: list[str]) -> int:
    import subprocess

    src = '#include "mdt_dsp.h"\nint mdt_dsp_is = MDT_DSP;\n'
    res = subprocess.run([cc, *flags, "-I", str(RUNTIME_DIR), "-E", "-x", "c", "-"], input=src, text=True,
                         capture_output=True, check=True)
    return int(re.search(r"mdt_dsp_is = (\d+);", res.stdout)[1])


# -mcpu (and flags) -> whether the DSP fast paths are compiled in: they need the DSP extension, ARMv6
# SIMD, Thumb-2 and unaligned word loads, not just __ARM_FEATURE_DSP.
GATE = [
    (["-mthumb", "-mcpu=cortex-m0plus"], 0),
    (["-mthumb", "-mcpu=cortex-m23"], 0),
    (["-mthumb", "-mcpu=cortex-m3"], 0),
    (["-mthumb", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"], 1),
    (["-mthumb", "-mcpu=cortex-m4", "-mno-unaligned-access"], 0),
    (["-mthumb", "-mcpu=cortex-m4", "-DMDT_NO_DSP"], 0),
    (["-mthumb", "-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"], 1),
    (["-mthumb", "-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"], 1),
    (["-mthumb", "-mcpu=cortex-m33+nodsp"], 0),
    (["-mthumb", "-mcpu=cortex-m55", "-mfloat-abi=hard"], 1),
    (["-marm", "-mcpu=cortex-a7"], 0),  # DSP and SIMD32, but ARM state: the asm is Thumb-2
]


@pytest.mark.parametrize("flags,expected", GATE, ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_dsp_gate_per_cpu(flags, expected):
    assert _preprocess_dsp(shutil.which("arm-none-eabi-gcc") or "arm-none-eabi-gcc", flags) == expected


def test_dsp_gate_off_on_riscv_and_host():
    cores.require_core(cores.get_core("rv32imc"))
    rv = ["--specs=picolibc.specs", "-march=rv32imc", "-mabi=ilp32"]
    assert _preprocess_dsp("riscv64-unknown-elf-gcc", rv) == 0
    assert _preprocess_dsp("gcc", []) == 0


def _const_symbols(core, elf) -> dict[str, int]:
    """The generated constant arrays of graph `net`: net_l<i>_<what> (weights, biases, multipliers,
    shifts, tables) and net_c<i> (constant operands)."""
    return {k: v for k, v in cores.symbols(core, elf).items() if re.fullmatch(r"net_(l\d+_\w+|c\d+)", k)}


@pytest.mark.parametrize("core_id", ["cortex-m4", "rv32imc"])
def test_weights_word_aligned_at_Os(core_id, cases, tmp_path):
    """At -Os (PlatformIO's default) gcc gives int8 arrays 1-byte alignment; MDT_ALIGN keeps every
    generated array on the 4-byte boundary the DSP kernels' LDR / LDRD assume. Without it (the
    control: MDT_CONST_ALIGN=1) some land off it, so the check sees what it checks."""
    core = cores.get_core(core_id)
    case = cases[1]
    fw = cores.render_core_bench(case.compiled, case.plan, case.x, core, tmp_path / "os", opt="-Os")
    image = cores.build_core_bench(core, fw)
    syms = _const_symbols(core, image.elf)
    assert len(syms) >= 10, syms
    off = {k: hex(v) for k, v in syms.items() if v % 4}
    assert not off, f"constant arrays off the 4-byte boundary at -Os: {off}"
    run = cores.run_core_image(core, image, len(case.plan["graphs"][0]["layers"]), limit_s=120)
    assert np.array_equal(run.output, case.expected)
    assert image.path == core.path

    control = cores.render_core_bench(case.compiled, case.plan, case.x, core, tmp_path / "os1",
                                      defines=("MDT_CONST_ALIGN=1",), opt="-Os")
    loose = _const_symbols(core, cores.build_core_bench(core, control).elf)
    assert any(v % 4 for v in loose.values()), "the control build kept every array aligned: the check is void"


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS_DIR.glob("*.tflite")), ids=lambda p: p.stem)
@pytest.mark.parametrize("core_id", CORE_IDS)
def test_shared_models_on_every_core(core_id, model, tmp_path):
    """Every MLPerf Tiny model of the bench, bit-exact on every core where it fits."""
    from microt_deploy.evaluate.bench import reference_output

    core = cores.get_core(core_id)
    plan = compile_program([GraphSpec(model, "net")], tmp_path / "c")
    assert cores._fits(core, plan), f"{model.name} does not fit {core.name}"
    x = bench_input(plan["graphs"][0]["inputs"][0]["shape"])
    r = cores.run_on_core(core, tmp_path / "c", plan, x, reference_output(model, x), tmp_path, limit_s=300)
    assert r.bit_exact and r.path == core.path, r
