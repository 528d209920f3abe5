"""Host simulation of staged inference: the same int8 graphs (TFLite's reference kernels) and the
very heads the device trained, so the device's answers can be predicted and checked sample by
sample. Differences are explained, not hidden: a sample whose confidence sits within float
rounding of the threshold may legitimately go either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# The device computes logits and softmax in float32 with newlib's expf; numpy's float32 exp may
# differ in the last place, so a confidence this close to the threshold is a tie, not a mismatch.
TIE_TOLERANCE = 1e-5


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 features -> float32 exactly as the device does: scale * (q - zero_point) in float32."""
    return np.float32(scale) * (q.astype(np.int32) - np.int32(zero_point)).astype(np.float32)


def logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Linear head in float32, accumulated in the device's order (bias, then feature by feature)."""
    feats = features.astype(np.float32)
    w = weight.astype(np.float32)
    acc = np.broadcast_to(bias.astype(np.float32), (len(feats), len(bias))).copy()
    for i in range(feats.shape[1]):
        acc = (acc + feats[:, i : i + 1] * w[:, i][None, :]).astype(np.float32)
    return acc


def confidence(logit: np.ndarray) -> np.ndarray:
    """Max softmax probability per row."""
    z = logit.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return 1.0 / np.exp(z).sum(axis=1)


def threshold_for_ratio(calib_conf: np.ndarray, ratio: float) -> float:
    """The stage-decision threshold by the device's rule (docs/protocol.md, SET_RATIO): the
    calibration confidences sorted ascending, index trunc((1 - ratio) * (n - 1)) in float32;
    ratio 0 gives 2.0, above any confidence, so nothing exits early."""
    if ratio <= 0.0:
        return 2.0
    conf = np.sort(np.asarray(calib_conf, dtype=np.float64))
    k = int(np.float32(np.float32(1.0) - np.float32(ratio)) * np.float32(len(conf) - 1))
    return float(conf[min(max(k, 0), len(conf) - 1)])


@dataclass
class HeadSimulation:
    """Predictions and confidences of one task's two heads on one split."""

    part_pred: np.ndarray
    part_conf: np.ndarray
    full_pred: np.ndarray


def simulate_heads(part_q: np.ndarray, full_q: np.ndarray, export_info: dict[str, Any],
                   part_head: tuple[np.ndarray, np.ndarray],
                   full_head: tuple[np.ndarray, np.ndarray]) -> HeadSimulation:
    """Run both heads on reference int8 features."""
    pf = export_info["part_features"]
    ff = export_info["full_features"]
    part_logits = logits(dequantize(part_q.reshape(len(part_q), -1), pf["scale"], pf["zero_point"]), *part_head)
    full_logits = logits(dequantize(full_q.reshape(len(full_q), -1), ff["scale"], ff["zero_point"]), *full_head)
    return HeadSimulation(
        part_pred=part_logits.argmax(axis=1),
        part_conf=confidence(part_logits),
        full_pred=full_logits.argmax(axis=1),
    )


def staged_predictions(sim: HeadSimulation, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, exit stage) of staged inference at a threshold: part answers when confident."""
    exit_early = sim.part_conf >= threshold
    return np.where(exit_early, sim.part_pred, sim.full_pred), np.where(exit_early, 0, 1)


def compare(device_pred: np.ndarray, host_pred: np.ndarray, conf: np.ndarray | None = None,
            threshold: float | None = None) -> dict[str, Any]:
    """Count agreement; a disagreement at a confidence within TIE_TOLERANCE of the threshold is a
    float-rounding tie (explained), anything else is unexplained."""
    differ = np.flatnonzero(np.asarray(device_pred) != np.asarray(host_pred))
    ties = []
    if conf is not None and threshold is not None and np.isfinite(threshold):
        ties = [int(i) for i in differ if abs(conf[i] - threshold) <= TIE_TOLERANCE]
    unexplained = [int(i) for i in differ if i not in set(ties)]
    return {
        "samples": int(len(device_pred)),
        "agree": int(len(device_pred) - len(differ)),
        "threshold_ties": ties,
        "unexplained": unexplained,
    }
