"""The frozen self-supervised teacher whose embedding the student distils (MicroT stage 1).

Owns teacher specs and how each becomes a callable ``NCHW images -> (N, teacher_dim)``:

- ``builtin:ssl-convnet``: a wider ConvNet trained here, briefly, with SimCLR's NT-Xent loss on two
  augmented views of the train images (no labels). Stands in for DINOv2 where no weights exist.
- ``torchscript:<path>``: a TorchScript file (e.g. a traced DINOv2 ViT-S/14 the user exported).
- ``checkpoint:<path>``: a ``torch.save``d nn.Module (unpickling runs the file's code: name only files
  you trust), or a state dict (bare or under ``state_dict`` / ``model``) plus
  ``model.teacher_arch = "pkg.mod:factory"`` that builds the module it fits.
- ``module:<pkg.mod:factory>``: ``factory()`` returns a torch module (the user loads its weights).
- ``timm:<model_name>`` with ``model.teacher_weights = "<local file>"``: ``timm.create_model(name,
  pretrained=False, num_classes=0)`` and that state dict (timm is imported only for this spec and is
  not a dependency). The paper's DINOv2 ViT-S/14 is ``timm:vit_small_patch14_dinov2.lvd142m`` (its
  native input is 518: set ``model.teacher_input_size = 518`` and ``teacher_dim = 384``).

External teachers are frozen; training computes their embedding of the (un-augmented) train images
once and caches it under the project (``train.py``, ``train.teacher_cache``).

External teachers receive the student's normalised images (values in [-1, 1], NCHW), resized to
``model.teacher_input_size`` when set (e.g. 224 for DINOv2); anything else (ImageNet mean/std) is the
wrapped module's business. Nothing is ever downloaded; a teacher that cannot be loaded is one
line naming the file or spec and the problem (MicrotError).
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
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


def ssl_options(train_cfg: dict[str, Any]) -> dict[str, Any]:
    """The builtin teacher's NT-Xent temperature and view augmentation from ``[train]``."""
    return {
        "temperature": float(train_cfg.get("teacher_temperature", 0.2)),
        "aug": {
            "crop": float(train_cfg.get("teacher_aug_crop", 0.7)),
            "shift": int(train_cfg.get("teacher_aug_shift", 2)),
            "contrast": float(train_cfg.get("teacher_aug_contrast", 0.3)),
            "noise": float(train_cfg.get("teacher_aug_noise", 0.05)),
            "flip": bool(train_cfg.get("aug_flip", False)),
        },
    }


def train_ssl_convnet(
    images: torch.Tensor,
    dim: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: ProgressFn | None = None,
    *,
    temperature: float = 0.2,
    aug: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    device: torch.device | None = None,
) -> tuple[ConvNetTeacher, list[float]]:
    """Train a ConvNetTeacher with NT-Xent on ``images`` (NCHW); returns it frozen, with losses.

    ``on_epoch(state)`` gets, after each epoch, what ``resume`` takes to continue exactly from there
    (model, optimiser, scheduler, generator and torch RNG states, epoch, losses)."""
    device = device or torch.device("cpu")
    aug = aug or {}
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ConvNetTeacher(dim).to(device)
    # Adam: SimCLR with plain SGD needs far more epochs than a 2-core budget allows.
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    losses: list[float] = []
    first = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        losses = list(resume["losses"])
        first = int(resume["epoch"])
    for epoch in range(first, epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        total, steps = 0.0, 0
        for start in range(0, len(order) - 1, batch_size):
            batch = images[order[start : start + batch_size]]
            if len(batch) < 2:
                continue
            v1, v2 = ssl_view(batch, gen, **aug).to(device), ssl_view(batch, gen, **aug).to(device)
            loss = nt_xent(model.projector(model(v1)), model.projector(model(v2)), temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        sched.step()
        losses.append(total / max(steps, 1))
        if on_epoch:
            on_epoch(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "losses": list(losses),
                    "epoch": epoch + 1,
                }
            )
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
def standardise(
    teacher: nn.Module, images: torch.Tensor, batch: int = 256, device: torch.device | None = None
) -> StandardisedTeacher:
    """Wrap ``teacher`` so that its embedding of ``images`` has zero mean and unit std per dimension
    (``images`` may stay on the CPU: each batch goes to ``device``)."""
    device = device or images.device
    emb = torch.cat([teacher(images[i : i + batch].to(device)) for i in range(0, len(images), batch)])
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


TEACHER_SPECS = "builtin:ssl-convnet, torchscript:<path>, checkpoint:<path>, module:<pkg.mod:factory> or timm:<name>"
EXTERNAL_PREFIXES = ("torchscript:", "checkpoint:", "module:", "timm:")


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:limit]


def _existing_file(path_text: str, what: str, fix: str) -> Path:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise MicrotError(f"{what} {path} does not exist", fix)
    return path


def _call_factory(target: str, spec: str, fix: str) -> nn.Module:
    """``pkg.mod:factory`` -> ``factory()``, which must return a torch module."""
    mod_name, _, factory = target.partition(":")
    if not mod_name or not factory:
        raise MicrotError(f"teacher {spec!r}: {target!r} is not <importable.module>:<factory>", fix)
    try:
        module = importlib.import_module(mod_name)
        made = getattr(module, factory)()
    except (ImportError, AttributeError) as err:
        raise MicrotError(f"cannot load teacher {spec!r} ({err})", fix) from None
    if not isinstance(made, nn.Module):
        raise MicrotError(f"teacher factory {target} returned {type(made).__name__}", "return a torch.nn.Module")
    return made


def _state_dict_of(blob: Any) -> dict[str, torch.Tensor] | None:
    """A state dict, bare or under the usual keys of a training checkpoint; None if ``blob`` is none."""
    if isinstance(blob, dict):
        for key in ("state_dict", "model", "teacher", "module"):
            if isinstance(blob.get(key), dict):
                blob = blob[key]
                break
        if blob and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in blob.items()):
            return {k.removeprefix("module."): v for k, v in blob.items()}
    return None


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, spec: str, fix: str) -> nn.Module:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise MicrotError(f"{path} does not fit teacher {spec!r} ({_first_line(err)})", fix) from None
    return model


def _load_checkpoint(target: str, model_cfg: dict[str, Any], spec: str) -> nn.Module:
    fix = 'give a torch.save()d nn.Module, or a state dict and model.teacher_arch = "pkg.mod:factory"'
    path = _existing_file(target, "teacher file", fix)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # A pickled nn.Module (not a plain state dict): loading it runs the file's code, as torch.load
        # always did before weights_only; the user named this file as their teacher.
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is the same user problem
            raise MicrotError(f"{path} is not a readable torch checkpoint ({_first_line(err)})", fix) from None
    except Exception as err:  # noqa: BLE001 - zip / EOF / runtime errors of a damaged file
        raise MicrotError(f"{path} is not a readable torch checkpoint ({_first_line(err)})", fix) from None
    if isinstance(blob, torch.jit.ScriptModule) or isinstance(blob, nn.Module):
        return blob
    state = _state_dict_of(blob)
    if state is None:
        raise MicrotError(f"{path} holds a {type(blob).__name__}, neither an nn.Module nor a state dict", fix)
    arch = str(model_cfg.get("teacher_arch", "") or "")
    if not arch:
        raise MicrotError(f"{path} holds a state dict but model.teacher_arch is not set", fix)
    return _load_state(_call_factory(arch, spec, fix), state, path, spec, fix)


def _load_timm(name: str, model_cfg: dict[str, Any], spec: str) -> nn.Module:
    fix = "set model.teacher_weights to a local weights file of that model (nothing is downloaded)"
    weights = str(model_cfg.get("teacher_weights", "") or "")
    if not weights:
        raise MicrotError(f"teacher {spec!r} needs model.teacher_weights", fix)
    path = _existing_file(weights, "teacher weights file", fix)
    try:
        import timm
    except ImportError:
        raise MicrotError(f"teacher {spec!r} needs timm, which is not installed", "pip install timm") from None
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except Exception as err:  # noqa: BLE001 - timm raises RuntimeError / KeyError for unknown names
        raise MicrotError(f"timm cannot build {name!r} ({_first_line(err)})", "give a timm model name") from None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise MicrotError(f"{path} is not a readable weights file ({_first_line(err)})", fix) from None
    state = _state_dict_of(blob)
    if state is None:
        raise MicrotError(f"{path} holds a {type(blob).__name__}, not a state dict", fix)
    # timm's classifier is dropped (num_classes=0): the teacher embedding is the pooled feature.
    state = {k: v for k, v in state.items() if not k.startswith("head.") and not k.startswith("fc.")}
    return _load_state(model, state, path, spec, fix)


def _load_external(spec: str, model_cfg: dict[str, Any] | None = None) -> nn.Module:
    model_cfg = model_cfg or {}
    kind, _, target = spec.partition(":")
    if kind == "torchscript":
        path = _existing_file(target, "teacher file", "give the path of a TorchScript .pt file")
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - RuntimeError / ValueError / zip errors alike
            raise MicrotError(
                f"{path} is not a TorchScript file ({_first_line(err)})",
                "save the teacher with torch.jit.script(model).save(path) or torch.jit.trace",
            ) from None
    if kind == "checkpoint":
        return _load_checkpoint(target, model_cfg, spec)
    if kind == "timm":
        return _load_timm(target, model_cfg, spec)
    return _call_factory(target, spec, "give module:<importable.module>:<factory function>")


def load_external_teacher(model_cfg: dict[str, Any]) -> nn.Module:
    """The frozen external teacher named by ``model.teacher`` (resized to ``teacher_input_size``)."""
    spec = str(model_cfg.get("teacher", ""))
    if not spec.startswith(EXTERNAL_PREFIXES):
        raise MicrotError(f"unknown teacher {spec!r}", f"use {TEACHER_SPECS}")
    teacher = _load_external(spec, model_cfg)
    size = int(model_cfg.get("teacher_input_size", 0) or 0)
    if size:
        teacher = ResizedTeacher(teacher, size)
    return freeze(teacher)


def _file_identity(path_text: str) -> dict[str, Any]:
    path = Path(path_text).expanduser()
    try:
        st = path.stat()
    except OSError:
        return {"path": str(path), "missing": True}
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _module_identity(target: str) -> dict[str, Any]:
    mod_name = target.partition(":")[0]
    try:
        found = importlib.util.find_spec(mod_name)
    except (ImportError, ValueError):
        found = None
    origin = getattr(found, "origin", None)
    return _file_identity(origin) if origin and origin not in ("built-in", "frozen") else {"module": mod_name}


def teacher_identity(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """What makes an external teacher what it is: its spec and the size / mtime of its files.

    Part of the embedding cache's key and of the training checkpoints' fingerprint: replacing the
    teacher file (or editing the factory's module) invalidates both."""
    spec = str(model_cfg.get("teacher", "builtin:ssl-convnet"))
    kind, _, target = spec.partition(":")
    ident: dict[str, Any] = {"spec": spec, "input_size": int(model_cfg.get("teacher_input_size", 0) or 0)}
    if kind in ("torchscript", "checkpoint"):
        ident["file"] = _file_identity(target)
    if kind == "checkpoint" and model_cfg.get("teacher_arch"):
        ident["arch"] = str(model_cfg["teacher_arch"])
        ident["arch_file"] = _module_identity(str(model_cfg["teacher_arch"]))
    if kind == "module":
        ident["module_file"] = _module_identity(target)
    if kind == "timm":
        ident["weights"] = _file_identity(str(model_cfg.get("teacher_weights", "")))
    return ident


@torch.no_grad()
def embed_images(
    teacher: nn.Module,
    nchw: torch.Tensor,
    dim: int,
    spec: str,
    batch: int = 256,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The teacher's raw embedding (N, dim) of every image (float32, CPU), checked for its shape."""
    device = device or torch.device("cpu")
    outs = []
    for start in range(0, len(nchw), batch):
        out = teacher(nchw[start : start + batch].to(device))
        if start == 0 and (out.ndim != 2 or out.shape[1] != dim):
            raise MicrotError(
                f"teacher {spec!r} gives outputs of shape {tuple(out.shape)}, not (N, {dim})",
                f"set model.teacher_dim = {out.shape[-1]}" if out.ndim == 2 else "make it return (N, dim) embeddings",
            )
        outs.append(out.float().cpu())
    return torch.cat(outs)


def standardised_targets(emb: torch.Tensor) -> torch.Tensor:
    """The distillation targets from raw embeddings: what StandardisedTeacher would give."""
    return (emb - emb.mean(dim=0)) / (emb.std(dim=0) + 1e-6)


def build_teacher(
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    train_images: np.ndarray,
    progress: ProgressFn | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Make the frozen teacher named by ``model.teacher``; returns it and a summary for train.json.

    The returned module's embedding is standardised on the train images (see StandardisedTeacher).
    (Training uses :mod:`microt_deploy.model.train`'s resumable, cached path; this is the plain one.)
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
            **ssl_options(train_cfg),
        )
        return standardise(teacher, nchw), {"spec": spec, "dim": dim, "losses": losses}
    teacher = load_external_teacher(model_cfg)
    embed_images(teacher, nchw[:2], dim, spec)
    return standardise(teacher, nchw), {"spec": spec, "dim": dim, "losses": []}
