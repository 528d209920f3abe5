"""Random augmentations for self-supervised training (two views of one image), seeded via torch.

Works on NCHW float tensors in the normalised range; every function takes a ``torch.Generator`` so
runs are reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (edge-replicated padding, then a crop)."""
    n, _, h, w = x.shape
    if max_shift <= 0:
        return x
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    rows = [padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offsets.tolist())]
    return torch.stack(rows)


def random_resized_crop(x: torch.Tensor, min_scale: float, gen: torch.Generator) -> torch.Tensor:
    """Crop a random square covering [min_scale, 1] of each side and resize it back (bilinear)."""
    n, _, h, w = x.shape
    scale = min_scale + (1.0 - min_scale) * torch.rand(n, generator=gen)
    centre = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_noise(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``std``."""
    return x + std * torch.randn(x.shape, generator=gen)


def random_contrast(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Scale each image's contrast by a factor in [1 - strength, 1 + strength]."""
    factor = 1.0 + strength * (torch.rand(x.shape[0], 1, 1, 1, generator=gen) * 2 - 1)
    return x * factor


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def ssl_view(
    x: torch.Tensor,
    gen: torch.Generator,
    crop: float = 0.7,
    shift: int = 2,
    contrast: float = 0.3,
    noise: float = 0.05,
    flip: bool = False,
) -> torch.Tensor:
    """One self-supervised view: resized crop, shift, contrast and noise, clamped to [-1, 1].

    The defaults are the builtin teacher's (``train.teacher_aug_*``); ``crop`` is the smallest side
    fraction kept (1 for no crop), ``flip`` adds a random left-right mirror (off by default: numerals
    are not mirror-symmetric)."""
    if crop < 1.0:
        x = random_resized_crop(x, crop, gen)
    x = random_shift(x, shift, gen)
    if contrast > 0:
        x = random_contrast(x, contrast, gen)
    if noise > 0:
        x = random_noise(x, noise, gen)
    if flip:
        x = random_flip(x, gen)
    return x.clamp(-1.0, 1.0)


def light_view(
    x: torch.Tensor, gen: torch.Generator, shift: int = 1, noise: float = 0.02, flip: bool = False
) -> torch.Tensor:
    """A mild view for distillation and supervised training: a small shift and a little noise
    (``train.aug_shift`` / ``aug_noise`` / ``aug_flip``; 0 / false turns each off)."""
    x = random_shift(x, shift, gen)
    if noise > 0:
        x = random_noise(x, noise, gen)
    if flip:
        x = random_flip(x, gen)
    return x.clamp(-1.0, 1.0)
