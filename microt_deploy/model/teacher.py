"""The frozen self-supervised teacher whose embedding the student distils (MicroT stage 1).

Owns teacher specs and how each becomes a callable ``NCHW images -> (N, teacher_dim)``:

- ``builtin:ssl-convnet``: a wider ConvNet trained here, briefly, with SimCLR's NT-Xent loss on two
  augmented views of the train images (no labels). Stands in for DINOv2 where no weights exist.
- ``torchscript:<path>``: a TorchScript file (e.g. a traced DINOv2 ViT-S/14 the user exported).
- ``module:<pkg.mod:factory>``: ``factory()`` returns a torch module (the user loads its weights).

External teachers receive the student's normalised images (values in [-1, 1], NCHW), resized to
``model.teacher_input_size`` when set (e.g. 224 for DINOv2); anything else (ImageNet mean/std) is the
wrapped module's business. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from microt_deploy.errors import MicrotError
from microt_deploy.model.augment import ssl_view

ProgressFn = Callable[[str, int, int, dict[str, float]], None]


class ConvNetTeacher(nn.Module):
    """Plain ConvNet (conv-BN-ReLU x4, global pool) with a linear embedding of width ``dim``.

    Its layers are 2-4x wider than the default student's; strides (2, 2, 2, 1) keep a 30-epoch run
    within the train stage's time budget on two shared cores.
    """

    STRIDES = (2, 2, 2, 1)

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, self.STRIDES[i], 1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers)
        self.embed = nn.Linear(chans[-1], dim)
        # SimCLR's projector: the loss is taken after it, the embedding before it.
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x).mean(dim=(2, 3)))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy: each view must pick its partner out of 2N-1."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def train_ssl_convnet(
    images: torch.Tensor,
    dim: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: ProgressFn | None = None,
) -> tuple[ConvNetTeacher, list[float]]:
    """Train a ConvNetTeacher with NT-Xent on ``images`` (NCHW); returns it frozen, with losses."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ConvNetTeacher(dim)
    # Adam: SimCLR with plain SGD needs far more epochs than a 2-core budget allows.
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    losses: list[float] = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        total, steps = 0.0, 0
        for start in range(0, len(order) - 1, batch_size):
            batch = images[order[start : start + batch_size]]
            if len(batch) < 2:
                continue
            v1, v2 = ssl_view(batch, gen), ssl_view(batch, gen)
            loss = nt_xent(model.projector(model(v1)), model.projector(model(v2)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        sched.step()
        losses.append(total / max(steps, 1))
        if progress:
            progress("teacher", epoch + 1, epochs, {"loss": losses[-1]})
    return freeze(model), losses


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class StandardisedTeacher(nn.Module):
    """The teacher followed by a fixed per-dimension standardisation (train-set mean and std).

    Distillation is an MSE on these targets; unit-variance dimensions keep its scale independent of
    the teacher (DINOv2 or the small built-in one) and keep the loss from being dominated by a few
    high-variance dimensions.
    """

    def __init__(self, inner: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.inner(x) - self.mean) / self.std


@torch.no_grad()
def standardise(teacher: nn.Module, images: torch.Tensor, batch: int = 256) -> StandardisedTeacher:
    """Wrap ``teacher`` so that its embedding of ``images`` has zero mean and unit std per dimension."""
    emb = torch.cat([teacher(images[i : i + batch]) for i in range(0, len(images), batch)])
    return freeze(StandardisedTeacher(teacher, emb.mean(dim=0), emb.std(dim=0) + 1e-6))


class ResizedTeacher(nn.Module):
    """Resize the input to the external teacher's resolution before calling it."""

    def __init__(self, inner: nn.Module, size: int) -> None:
        super().__init__()
        self.inner = inner
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.inner(x)


def _load_external(spec: str) -> nn.Module:
    kind, _, target = spec.partition(":")
    if kind == "torchscript":
        path = Path(target).expanduser()
        if not path.is_file():
            raise MicrotError(f"teacher file {path} does not exist", "give the path of a TorchScript .pt file")
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as err:
            raise MicrotError(
                f"{path} is not a TorchScript file ({str(err).splitlines()[0]})",
                "save the teacher with torch.jit.script(model).save(path) or torch.jit.trace",
            ) from None
    mod_name, _, factory = target.partition(":")
    try:
        module = importlib.import_module(mod_name)
        made = getattr(module, factory)()
    except (ImportError, AttributeError) as err:
        raise MicrotError(
            f"cannot load teacher {spec!r} ({err})", "give module:<importable.module>:<factory function>"
        ) from None
    if not isinstance(made, nn.Module):
        raise MicrotError(f"teacher factory {target} returned {type(made).__name__}", "return a torch.nn.Module")
    return made


def build_teacher(
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    train_images: np.ndarray,
    progress: ProgressFn | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Make the frozen teacher named by ``model.teacher``; returns it and a summary for train.json.

    The returned module's embedding is standardised on the train images (see StandardisedTeacher).
    """
    spec = str(model_cfg.get("teacher", "builtin:ssl-convnet"))
    dim = int(model_cfg["teacher_dim"])
    nchw = torch.from_numpy(np.ascontiguousarray(train_images.transpose(0, 3, 1, 2)))
    if spec == "builtin:ssl-convnet":
        teacher, losses = train_ssl_convnet(
            nchw,
            dim,
            int(train_cfg.get("teacher_epochs", 30)),
            int(train_cfg.get("batch_size", 64)),
            float(train_cfg.get("teacher_lr", 2e-3)),
            int(train_cfg.get("seed", 0)),
            progress,
        )
        return standardise(teacher, nchw), {"spec": spec, "dim": dim, "losses": losses}
    if not spec.startswith(("torchscript:", "module:")):
        raise MicrotError(
            f"unknown teacher {spec!r}",
            "use builtin:ssl-convnet, torchscript:<path> or module:<pkg.mod:factory>",
        )
    teacher = _load_external(spec)
    size = int(model_cfg.get("teacher_input_size", 0))
    if size:
        teacher = ResizedTeacher(teacher, size)
    teacher = freeze(teacher)
    with torch.no_grad():
        out = teacher(nchw[:2])
    if out.ndim != 2 or out.shape[1] != dim:
        raise MicrotError(
            f"teacher {spec!r} gives outputs of shape {tuple(out.shape)}, not (N, {dim})",
            f"set model.teacher_dim = {out.shape[-1]}" if out.ndim == 2 else "make it return (N, dim) embeddings",
        )
    return standardise(teacher, nchw), {"spec": spec, "dim": dim, "losses": []}
