"""Augmentations: shapes and range kept, seeded runs repeat, shifts really move pixels."""

from __future__ import annotations

import torch

from microt_deploy.model.augment import light_view, random_noise, random_shift, ssl_view


def _batch() -> torch.Tensor:
    x = torch.full((4, 3, 8, 8), -1.0)
    x[:, :, 3:5, 3:5] = 1.0
    return x


def test_views_keep_shape_and_range_and_repeat_with_the_seed():
    for fn in (ssl_view, light_view):
        a = fn(_batch(), torch.Generator().manual_seed(1))
        b = fn(_batch(), torch.Generator().manual_seed(1))
        c = fn(_batch(), torch.Generator().manual_seed(2))
        assert a.shape == (4, 3, 8, 8) and a.min() >= -1 and a.max() <= 1
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_shift_moves_the_square_and_keeps_its_mass():
    out = random_shift(_batch(), 2, torch.Generator().manual_seed(0))
    moved = [not torch.equal(o, _batch()[0]) for o in out]
    assert any(moved)
    # edge replication of a -1 border never creates or loses the bright square (+1 pixels)
    assert all(int((o == 1.0).sum()) == 3 * 4 for o in out)


def test_noise_has_the_requested_strength():
    x = torch.zeros(64, 3, 8, 8)
    noisy = random_noise(x, 0.1, torch.Generator().manual_seed(0))
    assert abs(float(noisy.std()) - 0.1) < 0.01
