"""The oracle: the exported int8 graphs run by TFLite's reference kernels, chained at the split.

``reference_outputs`` runs the trunk, then part_head and rest on the trunk's very int8 output bytes,
as the firmware does. The end-to-end tests and the host simulation compare against it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from microt_deploy.errors import MicrotError
from microt_deploy.export.quiet import import_tensorflow

GRAPHS = ("trunk", "part_head", "rest")


def _interpreter(path: Path):  # -> tf.lite.Interpreter
    tf = import_tensorflow()
    if not path.is_file():
        raise MicrotError(f"no exported graph at {path}", "run `microt-deploy export` first")
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to ai-edge-litert; it is the reference we test against
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
        )
    interp.allocate_tensors()
    return interp


def _run(interp, sample: np.ndarray) -> np.ndarray:
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], sample[None])
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])[0].copy()


def reference_outputs(export_dir: str | Path, int8_inputs: np.ndarray) -> dict[str, np.ndarray]:
    """int8 NHWC trunk inputs (N, H, W, 3) -> {"split", "part_features", "full_features"} int8 arrays."""
    export_dir = Path(export_dir)
    trunk, part, rest = (_interpreter(export_dir / f"{g}.tflite") for g in GRAPHS)
    inputs = np.asarray(int8_inputs)
    expected = tuple(trunk.get_input_details()[0]["shape"][1:])
    if inputs.dtype != np.int8 or inputs.ndim != 4 or inputs.shape[1:] != expected:
        raise MicrotError(
            f"reference inputs must be int8 of shape (N, {', '.join(map(str, expected))}), got "
            f"{inputs.dtype} {inputs.shape}",
            "quantise the images with microt_deploy.export.quantize_input first",
        )
    splits, parts, fulls = [], [], []
    for sample in inputs:
        split = _run(trunk, sample)
        splits.append(split)
        parts.append(_run(part, split))
        fulls.append(_run(rest, split))
    return {"split": np.stack(splits), "part_features": np.stack(parts), "full_features": np.stack(fulls)}
