"""The dense twin of a pruned model, for the benchmark: the same .tflite with every all-zero CONV_2D
filter row given random int8 weights, its layer's median scale and a bias within its layer's range.

The compiler skips all-zero rows (their outputs are constants), so a pruned model's instructions per
MAC mix kernel speed with pruning; the twin measures the kernels alone on the same shapes. Owns only
the rewrite: same size, same graph, bytes patched in place in a copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tflite

from microt_deploy import atomic

_SCALE_FIELD = 8  # vtable offset of QuantizationParameters.scale (field 2)
_DATA_FIELD = 4  # vtable offset of Buffer.data (field 0)


def _vector(table, field: int) -> tuple[int, int]:
    """(byte position, length) of a vector field of a flatbuffer table."""
    o = table._tab.Offset(field)
    return (table._tab.Vector(o), table._tab.VectorLen(o)) if o else (0, 0)


def densify(src: Path, dst: Path, seed: int = 0) -> int:
    """Write the dense twin of ``src`` to ``dst``; return how many filter rows were filled (0: none,
    and nothing is written)."""
    buf = bytearray(Path(src).read_bytes())
    model = tflite.Model.GetRootAsModel(buf, 0)
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    rng = np.random.default_rng(seed)
    filled = 0
    for si in range(model.SubgraphsLength()):
        sg = model.Subgraphs(si)
        for oi in range(sg.OperatorsLength()):
            op = sg.Operators(oi)
            if codes[op.OpcodeIndex()] != tflite.BuiltinOperator.CONV_2D:
                continue
            wt = sg.Tensors(op.Inputs(1))
            start, n = _vector(model.Buffers(wt.Buffer()), _DATA_FIELD)
            if wt.Type() != tflite.TensorType.INT8 or n == 0:
                continue
            oc = int(wt.ShapeAsNumpy()[0])
            rows = np.frombuffer(buf, dtype=np.int8, count=n, offset=start).reshape(oc, -1)
            zero = np.all(rows == 0, axis=1)
            q = wt.Quantization()
            sstart, ns = _vector(q, _SCALE_FIELD) if q is not None else (0, 0)
            if not zero.any() or zero.all() or ns != oc:
                continue
            scales = np.frombuffer(buf, dtype=np.float32, count=ns, offset=sstart)
            median = np.float32(np.median(scales[~zero]))
            bias = None
            if op.InputsLength() > 2 and op.Inputs(2) >= 0:
                bstart, nb = _vector(model.Buffers(sg.Tensors(op.Inputs(2)).Buffer()), _DATA_FIELD)
                if nb == 4 * oc:
                    bias = (bstart, int(np.abs(np.frombuffer(buf, dtype=np.int32, count=oc,
                                                             offset=bstart)[~zero]).max()) + 1)
            for c in np.flatnonzero(zero):
                k = rows.shape[1]
                buf[start + c * k:start + (c + 1) * k] = rng.integers(-127, 128, size=k, dtype=np.int8).tobytes()
                buf[sstart + 4 * c:sstart + 4 * c + 4] = median.tobytes()
                if bias is not None:
                    buf[bias[0] + 4 * c:bias[0] + 4 * c + 4] = np.int32(rng.integers(-bias[1], bias[1])).tobytes()
                filled += 1
    if filled:
        atomic.write_bytes(Path(dst), bytes(buf))
    return filled
