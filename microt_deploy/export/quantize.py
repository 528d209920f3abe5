"""Float <-> int8 at the edges of the exported graphs, and the split-tensor agreement check.

``quantize_input`` is the single place where host data becomes device bytes; ``check_split_params``
guarantees that the trunk's int8 output bytes mean the same numbers to part_head and rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# Scales that differ by at most this relative amount are float rounding of one calibration range;
# the compiler binds the split buffer across graphs under the same bound.
from microt_deploy.compiler.planner import BINDING_SCALE_RTOL as SPLIT_SCALE_RTOL  # noqa: E402
from microt_deploy.errors import MicrotError


def _load_meta(export_json: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(export_json, dict):
        return export_json
    path = Path(export_json)
    if path.is_dir():
        path = path / "export.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MicrotError(f"no export metadata at {path}", "run `microt-deploy export` first") from None


def quantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """TFLite's affine quantisation: round(x / scale) half away from zero, + zero_point, saturate."""
    ratio = np.asarray(values, dtype=np.float32) / np.float32(scale)
    rounded = np.sign(ratio) * np.floor(np.abs(ratio) + np.float32(0.5))
    return np.clip(rounded.astype(np.int64) + int(zero_point), -128, 127).astype(np.int8)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """real = scale * (q - zero_point), float32."""
    return (np.float32(scale) * (np.asarray(values, dtype=np.int32) - int(zero_point))).astype(np.float32)


def quantize_input(images_float_nhwc: np.ndarray, export_json: dict[str, Any] | str | Path) -> np.ndarray:
    """Normalised NHWC float images (as ``load_splits`` gives them) -> the trunk's int8 input bytes.

    ``export_json`` is the parsed export.json, its path, or the export folder.
    """
    meta = _load_meta(export_json)["input"]
    images = np.asarray(images_float_nhwc, dtype=np.float32)
    expected = tuple(meta["shape"][1:])
    if images.ndim != 4 or images.shape[1:] != expected:
        raise MicrotError(
            f"images of shape {images.shape} do not match the trunk input (N, {', '.join(map(str, expected))})",
            "load them with microt_deploy.model.data.load_splits using the project's config",
        )
    return quantize(images, meta["scale"], meta["zero_point"])


def check_split_params(trunk_out: dict[str, Any], consumers: dict[str, dict[str, Any]]) -> float:
    """Raise unless every consumer reads the split tensor with the trunk's scale and zero point.

    Returns the largest relative scale difference (0.0 when identical). Within SPLIT_SCALE_RTOL and
    with equal zero points the difference is float rounding of the same calibration range: the bytes
    pass through unchanged and each graph keeps its own (near-identical) parameters, exactly as the
    reference interpreter chain in ``reference.py`` runs them.
    """
    worst = 0.0
    for name, info in consumers.items():
        if list(info["shape"]) != list(trunk_out["shape"]):
            raise MicrotError(
                f"{name} expects a split tensor of shape {info['shape']} but the trunk gives {trunk_out['shape']}",
                "re-export all three graphs from the same checkpoint",
            )
        rel = abs(info["scale"] - trunk_out["scale"]) / abs(trunk_out["scale"])
        if info["zero_point"] != trunk_out["zero_point"] or rel > SPLIT_SCALE_RTOL:
            raise MicrotError(
                f"split tensor quantisation differs: trunk output scale {trunk_out['scale']:.9g} zero point "
                f"{trunk_out['zero_point']} vs {name} input scale {info['scale']:.9g} zero point "
                f"{info['zero_point']}",
                "calibrate part_head and rest on the trunk's own float outputs (re-run `microt-deploy export`)",
            )
        worst = max(worst, rel)
    return worst
