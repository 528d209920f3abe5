"""The device's head trainer on the host: what ``mdt_train`` (firmware_templates/app/mdt_learn.c) computes
from the stored int8 features, so that heads can be predicted without a device (the split search
trains one pair per task and candidate cut this way).

The same algorithm step for step: each feature is standardised over the training slots (its mean and
1 / sqrt(variance + STD_FLOOR), from exact integer sums of the int8 values, so scale and zero point
cancel); both heads start at zero; every epoch shuffles the slots with the firmware's xorshift32
Fisher-Yates; each sample, in that order, takes one plain SGD step on the part head, then one on the
full head (softmax cross entropy, float32, on the standardised features); then the standardisation is
folded into each head, so the head the device keeps (and ``Device.read_head`` returns) is a plain
linear head on the dequantised features, as before. numpy's float32 dot product and exp may round
differently from the C loop and newlib's ``expf`` in the last place, so the heads agree with the
device's to float32 rounding, not bit for bit
(tests/evaluate/test_split_search.py holds them against the host build of the firmware).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DEFAULT_SEED = 0x9E3779B9  # mdt_train's state when the seed is 0
# MDT_STD_FLOOR: a quantisation step squared added to each feature's variance (in int8 steps), so a
# feature that moves by less than a step between images (int8 noise) is not blown up to unit scale.
STD_FLOOR = np.float32(1.0)
MASK32 = 0xFFFFFFFF


@lru_cache(maxsize=8)
def _orders(n: int, epochs: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """The slot order of every epoch (slots 0..n-1), as mdt_train shuffles them."""
    state = (seed & MASK32) or DEFAULT_SEED
    order = list(range(n))
    epochs_out = []
    for _ in range(epochs):
        for i in range(n - 1, 0, -1):
            x = state
            x ^= (x << 13) & MASK32
            x ^= x >> 17
            x ^= (x << 5) & MASK32
            state = x
            j = x % (i + 1)
            order[i], order[j] = order[j], order[i]
        epochs_out.append(tuple(order))
    return tuple(epochs_out)


def epoch_orders(n: int, epochs: int, seed: int) -> list[list[int]]:
    """The order in which mdt_train visits slots 0..n-1 in each epoch."""
    return [list(o) for o in _orders(int(n), int(epochs), int(seed))]


def feature_standardisation(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature of the int8 rows ``q`` (n, dim): (mean, 1 / sqrt(var + STD_FLOOR)) in int8 steps,
    float32, computed as the device does: exact integer sums, then float32 divisions and sqrt."""
    q = np.asarray(q).astype(np.int64)
    n = len(q)
    s1, s2 = q.sum(axis=0), (q * q).sum(axis=0)
    var = (n * s2 - s1 * s1).astype(np.float32) / np.float32(n) / np.float32(n)
    return s1.astype(np.float32) / np.float32(n), np.float32(1.0) / np.sqrt(var + STD_FLOOR, dtype=np.float32)


def standardise(q: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    """(q - mean) * inv_std in float32, the device's training input."""
    return ((np.asarray(q).astype(np.float32) - mean) * inv_std).astype(np.float32)


def fold_standardisation(w: np.ndarray, b: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, scale: float,
                         zero_point: int) -> tuple[np.ndarray, np.ndarray]:
    """A head trained on standardised features as a head on dequantised ones: with q = x / scale + zp,
    w' = w * inv_std / scale and b' = b + sum_i w_i * inv_std_i * (zp - mean_i), accumulated feature by
    feature in float32 like the device."""
    shift = (np.float32(zero_point) - mean).astype(np.float32)
    bias = b.astype(np.float32).copy()
    for i in range(w.shape[1]):
        bias = (bias + (w[:, i] * inv_std[i]).astype(np.float32) * shift[i]).astype(np.float32)
    weight = ((w * inv_std[None, :]).astype(np.float32) / np.float32(scale)).astype(np.float32)
    return weight, bias


def _sgd_step(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: int, lr: np.float32) -> None:
    logit = (b + w @ x).astype(np.float32)
    p = np.exp(logit - logit.max(), dtype=np.float32)
    p /= p.sum(dtype=np.float32)
    p[y] -= np.float32(1.0)
    g = (lr * p).astype(np.float32)
    w -= np.outer(g, x).astype(np.float32)
    b -= g


def train_heads(part_q: np.ndarray, full_q: np.ndarray, labels: np.ndarray, n_classes: int,
                part_params: dict, full_params: dict, epochs: int, lr: float,
                seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train the part and full heads of one task on int8 features as the device does.

    ``part_params`` / ``full_params``: the features' quantisation (``scale``, ``zero_point``: export.json's
    ``part_features`` / ``full_features``). Returns ((W_part, b_part), (W_full, b_full)), W of shape
    (n_classes, dim), float32: the layout ``Device.read_head`` returns and ``simulate`` takes."""
    n = len(labels)
    qp, qf = np.asarray(part_q).reshape(n, -1), np.asarray(full_q).reshape(n, -1)
    stats_p, stats_f = feature_standardisation(qp), feature_standardisation(qf)
    xp, xf = standardise(qp, *stats_p), standardise(qf, *stats_f)
    wp = np.zeros((n_classes, xp.shape[1]), np.float32)
    bp = np.zeros(n_classes, np.float32)
    wf = np.zeros((n_classes, xf.shape[1]), np.float32)
    bf = np.zeros(n_classes, np.float32)
    rate = np.float32(lr)
    y = np.asarray(labels, dtype=np.int64)
    for order in _orders(n, int(epochs), int(seed)):
        for s in order:
            _sgd_step(wp, bp, xp[s], int(y[s]), rate)
            _sgd_step(wf, bf, xf[s], int(y[s]), rate)
    if not (np.isfinite(wp).all() and np.isfinite(wf).all() and np.isfinite(bp).all() and np.isfinite(bf).all()):
        from microt_deploy.errors import MicrotError

        raise MicrotError(f"the heads diverged at learning rate {lr:g} (the device refuses such heads too)",
                          "lower [device] train_lr in microt.toml")
    return (fold_standardisation(wp, bp, *stats_p, part_params["scale"], part_params["zero_point"]),
            fold_standardisation(wf, bf, *stats_f, full_params["scale"], full_params["zero_point"]))
