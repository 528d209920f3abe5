"""The device's head trainer on the host: what ``mdt_train`` (firmware_templates/app/mdt_learn.c) computes
from the stored int8 features, so that heads can be predicted without a device (the split search
trains one pair per task and candidate cut this way).

The same algorithm step for step: both heads start at zero; every epoch shuffles the slots with the
firmware's xorshift32 Fisher-Yates; each sample, in that order, takes one plain SGD step on the part
head, then one on the full head (softmax cross entropy, float32, features dequantised as the device
does). numpy's float32 dot product and exp may round differently from the C loop and newlib's
``expf`` in the last place, so the heads agree with the device's to float32 rounding, not bit for bit
(tests/evaluate/test_split_search.py holds them against the host build of the firmware).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from microt_deploy.evaluate.simulate import dequantize

DEFAULT_SEED = 0x9E3779B9  # mdt_train's state when the seed is 0
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
    xp = dequantize(np.asarray(part_q).reshape(n, -1), part_params["scale"], part_params["zero_point"])
    xf = dequantize(np.asarray(full_q).reshape(n, -1), full_params["scale"], full_params["zero_point"])
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
    return (wp, bp), (wf, bf)
