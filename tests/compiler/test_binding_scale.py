"""A split buffer binds across graphs when its scales differ only by float32 rounding."""

from __future__ import annotations

import numpy as np

from microt_deploy.compiler.planner import BINDING_SCALE_RTOL, same_scale


def test_one_float32_ulp_binds_but_a_real_difference_does_not() -> None:
    s = np.float32(0.08393582)
    assert same_scale(s, np.nextafter(s, np.float32(1)))  # what two calibrations of one range give
    assert not same_scale(s, s * np.float32(1.001))
    assert not same_scale([s, s], [s])  # per-channel vs per-tensor never binds
    # at the bound the worst step error is far below half a step: the bytes mean the same values
    assert 255 * BINDING_SCALE_RTOL < 0.01
