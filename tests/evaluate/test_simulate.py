"""The host simulation's rules mirror the device's (docs/protocol.md)."""

from __future__ import annotations

import numpy as np

from microt_deploy.evaluate import simulate


def test_threshold_rule_matches_protocol() -> None:
    conf = np.array([0.9, 0.2, 0.5, 0.7, 0.4])  # sorted: 0.2 0.4 0.5 0.7 0.9
    assert simulate.threshold_for_ratio(conf, 0.5) == 0.5  # k = trunc(0.5 * 4) = 2
    assert simulate.threshold_for_ratio(conf, 1.0) == 0.2  # everything exits early
    assert simulate.threshold_for_ratio(conf, 0.0) == 2.0  # nothing does
    assert simulate.threshold_for_ratio(conf, 0.3) == 0.5  # trunc(0.7 * 4) = 2
    assert simulate.threshold_for_ratio(conf, 0.7) == 0.4  # trunc(0.3 * 4) = 1


def test_ratio_is_the_fraction_exiting_early_on_calibration_data() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 1001)
    for ratio in (0.3, 0.5, 0.7):
        t = simulate.threshold_for_ratio(conf, ratio)
        assert abs(np.mean(conf >= t) - ratio) < 0.002


def test_logits_accumulate_in_float32_like_the_device() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 33)).astype(np.float32)
    w = rng.normal(size=(5, 33)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    got = simulate.logits(x, w, b)
    for n in range(7):
        for c in range(5):
            acc = np.float32(b[c])
            for i in range(33):
                acc = np.float32(acc + np.float32(x[n, i] * w[c, i]))
            assert got[n, c] == acc


def test_staged_prediction_takes_part_when_confident() -> None:
    sim = simulate.HeadSimulation(part_pred=np.array([1, 2, 3]), part_conf=np.array([0.9, 0.5, 0.1]),
                                  full_pred=np.array([7, 8, 9]))
    pred, stage = simulate.staged_predictions(sim, 0.5)
    assert pred.tolist() == [1, 2, 9] and stage.tolist() == [0, 0, 1]


def test_compare_separates_threshold_ties_from_real_mismatches() -> None:
    conf = np.array([0.5, 0.5000001, 0.9])
    res = simulate.compare(np.array([1, 2, 3]), np.array([1, 9, 4]), conf, 0.5)
    assert res["agree"] == 1 and res["threshold_ties"] == [1] and res["unexplained"] == [2]
