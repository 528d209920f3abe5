"""Stages 1-3 of MicroT: self-supervised distillation, splitting and joint training of part and full.

Owns ``train_project(project, progress=None, fresh=False)``: builds the frozen teacher, distils it
into the student (stage 1: MSE between a linear projection of the full features and the teacher
embedding, plus the optional cross entropy "Loss 2" when ``train.sskd_ce`` is true), then trains
part and full jointly (stage 3: L3 + L4 + L5 + L6 on the first task's labels, each weighted by
``train.l3_weight`` ...). Writes ``checkpoints/extractor.pt`` and ``checkpoints/train.json``
atomically. ``train.labels_only`` trains without any teacher: stage 1 is skipped and stage 3 runs on
L4 + L6, the label cross entropies, alone (the unoptimized extractor of the evidence table).

How it runs as users run it:

- **Teacher embeddings cached.** An external teacher (torchscript / checkpoint / module / timm) is
  frozen, so its embedding of each *un-augmented* train image is computed once (on the training
  device) and kept in ``checkpoints/teacher_cache/<key>.pt``; the key hashes the teacher's spec and
  the size / mtime of its files, ``teacher_dim`` and the train images' bytes (so any data config that
  changes the images changes it). Stages 1 and 3 then distil the student's view of an image (the
  light augmentation: a +-1 px shift and 2 % noise by default) onto the cached embedding of the clean
  image. ``train.teacher_cache = false`` calls the teacher on every augmented view instead. The
  builtin teacher is trained here and small: it is always called online.
- **Resume.** After every epoch of each stage (teacher, sskd, joint) ``checkpoints/resume/<stage>.pt``
  is written atomically: weights, optimiser, scheduler, AMP scaler, the batch generator's and
  torch's RNG states, the epoch and the loss history, with a fingerprint of the config (everything
  that changes results: not ``threads`` or ``device``) and of the teacher's files. A new run resumes
  from the last complete epoch when the fingerprints match (bit-identical to an uninterrupted run
  on a deterministic CPU), starts over when they differ, and ignores them with ``fresh=True``
  (``train --fresh``, which also recomputes the teacher cache). A successful run removes them.
- **Device.** ``train.device = "auto"`` (CUDA when torch sees a GPU, else the CPU), ``"cpu"`` or
  ``"cuda"``; ``train.amp`` (default true) runs forward passes under float16 autocast with a
  GradScaler on CUDA (never on the CPU). Augmentation always runs on the CPU with its seeded
  generator, so the batches are the same on every device.
- **Several processes** (``torchrun --nproc_per_node=N -m microt_deploy.cli train -p PROJECT``): with
  ``WORLD_SIZE`` > 1 the process group is initialised (nccl on CUDA, gloo on the CPU). Every rank
  draws the same global batch (``batch_size`` images, the same generator as one process), augments
  it, and trains on its strided shard; the loss is scaled by the shard's share so DDP's gradient
  average is the global batch's mean gradient, and BatchNorm statistics are reduced over all ranks
  (``SyncBatchNorm`` semantics, CPU included), so N processes compute what one does up to float
  summation order. A trailing batch smaller than N is skipped. The builtin teacher trains on every
  rank and rank 0's copy is broadcast. Only rank 0 writes checkpoints, the cache and the outputs,
  probes and reports progress (several machines need the project folder on a shared file system).

Linear-probe accuracies in train.json are fitted on the train split's features and scored on the
calib split, for part and full features and every task, before and after joint training.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from microt_deploy import atomic
from microt_deploy.errors import MicrotError
from microt_deploy.model.augment import light_view
from microt_deploy.model.backbone import Backbone, count_macs, part_mac_share, resolve_model_config
from microt_deploy.model.data import Split, load_splits
from microt_deploy.model.probe import linear_probe_accuracy
from microt_deploy.model.teacher import (
    ConvNetTeacher,
    embed_images,
    freeze,
    load_external_teacher,
    ssl_options,
    standardise,
    standardised_targets,
    teacher_identity,
    train_ssl_convnet,
)
from microt_deploy.project import Project

ProgressFn = Callable[[str, int, int, dict[str, float]], None]
BUILTIN = "builtin:ssl-convnet"
STAGES = ("teacher", "sskd", "joint")
CHECKPOINT_VERSION = 1
# [train] keys that do not change what training computes (a resume across them is exact).
NOT_IN_FINGERPRINT = ("threads", "device")


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """NHWC float32 numpy -> NCHW torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


@torch.no_grad()
def extract_features(model: Backbone, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(part, full) float features of NHWC images with the model in eval mode (on the model's device)."""
    model.eval()
    device = next(model.parameters()).device
    parts, fulls = [], []
    x = to_nchw(images)
    for start in range(0, len(x), batch):
        part, full = model(x[start : start + batch].to(device))
        parts.append(part.cpu().numpy())
        fulls.append(full.cpu().numpy())
    return np.concatenate(parts), np.concatenate(fulls)


def probe_all(model: Backbone, splits: dict[str, Split]) -> dict[str, dict[str, float]]:
    """Linear-probe accuracy (train -> calib) of part and full features for every task."""
    tr_part, tr_full = extract_features(model, splits["train"].images)
    ca_part, ca_full = extract_features(model, splits["calib"].images)
    out: dict[str, dict[str, float]] = {}
    for task, y_train in splits["train"].labels.items():
        y_calib = splits["calib"].labels[task]
        out[task] = {
            "part": linear_probe_accuracy(tr_part, y_train, ca_part, y_calib),
            "full": linear_probe_accuracy(tr_full, y_train, ca_full, y_calib),
        }
    return out



# ---------------------------------------------------------------- device and processes


@dataclass
class Runtime:
    """Where training runs: the device, AMP, and this process's rank among ``world`` processes."""

    device: torch.device
    amp: bool = False
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def resolve_device(train_cfg: dict[str, Any]) -> torch.device:
    """``train.device``: "auto" picks CUDA when torch sees a GPU, else the CPU."""
    want = str(train_cfg.get("device", "auto"))
    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        raise MicrotError(
            f'train.device = "cuda" but torch {torch.__version__} sees no CUDA GPU',
            'set train.device = "auto" or "cpu", or install a CUDA build of torch on a machine with a GPU',
        )
    if want not in ("auto", "cpu", "cuda"):
        raise MicrotError(f"train.device = {want!r} is not auto, cpu or cuda", 'set train.device = "auto"')
    return torch.device("cuda" if want == "cuda" or (want == "auto" and has_cuda) else "cpu")


def setup_runtime(train_cfg: dict[str, Any]) -> Runtime:
    """The device and, under torchrun (``WORLD_SIZE`` > 1), the process group (nccl / gloo)."""
    device = resolve_device(train_cfg)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank, owns = 0, False
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0") or 0)
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns = True
        rank, world = dist.get_rank(), dist.get_world_size()
    amp = bool(train_cfg.get("amp", True)) and device.type == "cuda"
    return Runtime(device=device, amp=amp, rank=rank, world=world, owns_group=owns)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the gradients (what SyncBatchNorm does)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        torch.distributed.all_reduce(out)
        return out


class _SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole global batch over all ranks.

    ``nn.SyncBatchNorm`` is CUDA-only; this one reduces with autograd-aware all-reduces (two passes:
    the mean, then the centred sum of squares), on gloo or nccl. Same parameters and buffers as
    BatchNorm2d (it is swapped in by class and back after training)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        c = self.num_features
        count = torch.tensor(float(x.shape[0] * x.shape[2] * x.shape[3]), device=x.device)
        stats = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count[None]]))
        n = stats[c]
        mean = stats[:c] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / n
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(float(n) - 1, 1.0)), alpha=m)
        y = centred / torch.sqrt(var + self.eps)[None, :, None, None]
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


@contextlib.contextmanager
def _synced_batchnorm(module: nn.Module, rt: Runtime) -> Iterator[None]:
    swapped = [m for m in module.modules() if type(m) is nn.BatchNorm2d] if rt.distributed else []
    for m in swapped:
        m.__class__ = _SyncBatchNorm
    try:
        yield
    finally:
        for m in swapped:
            m.__class__ = nn.BatchNorm2d


# ---------------------------------------------------------------- optimiser, batches, checkpoints


def make_optimizer(params: list[nn.Parameter], cfg: dict[str, Any], epochs: int) -> tuple[Any, Any]:
    """``train.optimizer`` (sgd / adam / adamw) with lr, momentum (SGD) and weight decay, and
    ``train.scheduler`` (cosine decay to 0 over the stage's epochs, or constant)."""
    lr = float(cfg.get("lr", 0.01))
    wd = float(cfg.get("weight_decay", 5e-4))
    kind = str(cfg.get("optimizer", "sgd"))
    if kind == "sgd":
        opt: Any = torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum", 0.9)), weight_decay=wd)
    elif kind == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    elif kind == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    else:
        raise MicrotError(f"train.optimizer = {kind!r} is not sgd, adam or adamw", 'set train.optimizer = "sgd"')
    if str(cfg.get("scheduler", "cosine")) == "constant":
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _epoch: 1.0)
    # Cosine decay: with few epochs it settles the weights better than a constant rate.
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))


def _sgd(params: list[nn.Parameter], cfg: dict[str, Any], epochs: int) -> tuple[Any, Any]:
    """The stage optimiser (kept under its old name)."""
    return make_optimizer(params, cfg, epochs)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    # Drop a trailing batch of one: BatchNorm cannot train on it.
    return [b for b in order.split(batch_size) if len(b) > 1]


def _aug(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "shift": int(cfg.get("aug_shift", 1)),
        "noise": float(cfg.get("aug_noise", 0.02)),
        "flip": bool(cfg.get("aug_flip", False)),
    }


def _weighted(term: torch.Tensor, weight: float) -> torch.Tensor:
    return term if weight == 1.0 else term * weight


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_fingerprint(config: dict[str, Any], model_cfg: dict[str, Any]) -> str:
    """What a resume checkpoint must match: every config value that changes the training, and the
    external teacher's files."""
    train = {k: v for k, v in config["train"].items() if k not in NOT_IN_FINGERPRINT}
    spec = str(model_cfg.get("teacher", BUILTIN))
    if bool(train.get("labels_only", False)):
        spec = "none"  # no teacher: its files are never read
    return _digest(
        {
            "version": CHECKPOINT_VERSION,
            "model": model_cfg,
            "train": train,
            "data": config.get("data", {}),
            "tasks": config.get("tasks", []),
            "teacher": spec if spec in (BUILTIN, "none") else teacher_identity(model_cfg),
        }
    )


def _blob(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _read_checkpoint(path: Path, what: str, fix: str) -> dict[str, Any]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, bad pickle, EOF: one user problem
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise MicrotError(f"{path} is not a readable {what} ({first})", fix) from None
    if not isinstance(blob, dict):
        raise MicrotError(f"{path} is not a microt-deploy {what}", fix)
    return blob


class Checkpoints:
    """``checkpoints/resume/<stage>.pt``: per-epoch training state, written by rank 0 only."""

    def __init__(self, folder: Path, fingerprint: str, rt: Runtime, fresh: bool) -> None:
        self.folder, self.fingerprint, self.rt = folder, fingerprint, rt
        self.states: dict[str, dict[str, Any]] = {}
        self.ignored: list[str] = []
        if fresh:
            return
        fix = "delete it, or run `microt-deploy train --fresh` to start over"
        for stage in STAGES:
            path = self.path(stage)
            if not path.is_file():
                continue
            state = _read_checkpoint(path, "training checkpoint", fix)
            missing = {"fingerprint", "epoch", "epochs"} - set(state)
            if missing:
                raise MicrotError(f"{path} is not a microt-deploy training checkpoint (no {min(missing)})", fix)
            if state["fingerprint"] == fingerprint:
                self.states[stage] = state
            else:
                self.ignored.append(stage)

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.pt"

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.states.get(stage)

    def complete(self, stage: str) -> bool:
        state = self.states.get(stage)
        return state is not None and int(state["epoch"]) >= int(state["epochs"])

    def drop_after(self, stage: str) -> None:
        """A stage that (re)trains from scratch invalidates what later stages saved."""
        for later in STAGES[STAGES.index(stage) + 1 :]:
            self.states.pop(later, None)

    @contextlib.contextmanager
    def loading(self, stage: str) -> Iterator[None]:
        """Restoring ``stage``'s checkpoint: contents that do not fit are one line naming the file.
        (Only the restoring itself: a stage's training runs outside this.)"""
        if stage not in self.states:
            yield
            return
        try:
            yield
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
            raise MicrotError(
                f"{self.path(stage)} does not fit this training ({type(err).__name__}: {first})",
                "delete it, or run `microt-deploy train --fresh` to start over",
            ) from None

    def save(self, stage: str, state: dict[str, Any]) -> None:
        if self.rt.main:
            atomic.write_bytes(self.path(stage), _blob({**state, "fingerprint": self.fingerprint, "stage": stage}))

    def remove(self) -> None:
        if self.rt.main:
            for stage in STAGES:
                with contextlib.suppress(FileNotFoundError):
                    self.path(stage).unlink()
            with contextlib.suppress(OSError):
                self.folder.rmdir()


def _rng_state() -> dict[str, Any]:
    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(state["cuda_rng"])


# ---------------------------------------------------------------- the teacher


def _no_targets(idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """``train.labels_only``: no teacher, an empty target that no loss term reads."""
    return view.new_zeros(len(idx), 0)


class Targets:
    """The distillation target of a batch: cached embeddings by index, or the teacher on the view."""

    def __init__(self, teacher: nn.Module | None = None, cached: torch.Tensor | None = None) -> None:
        self.teacher, self.cached = teacher, cached

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return self.cached[idx].to(view.device)
        assert self.teacher is not None
        return self.teacher(view).float()


def cache_key(model_cfg: dict[str, Any], images: torch.Tensor) -> str:
    """The teacher cache's key: teacher identity, its dim and the train images' bytes."""
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    return _digest({"teacher": teacher_identity(model_cfg), "dim": int(model_cfg["teacher_dim"]),
                    "images": digest, "shape": list(images.shape), "version": CHECKPOINT_VERSION})


def cached_teacher_embeddings(
    model_cfg: dict[str, Any], images: torch.Tensor, folder: Path, rt: Runtime, fresh: bool = False
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The external teacher's raw embedding of ``images`` (NCHW, un-augmented), from the cache or
    computed once (by rank 0, on the training device) and written there atomically."""
    key = cache_key(model_cfg, images)
    path = folder / f"{key[:24]}.pt"
    spec = str(model_cfg["teacher"])
    fix = "delete it (it is recomputed), or run `microt-deploy train --fresh`"
    if not rt.main:
        rt.barrier()  # rank 0 fills the cache first
    hit = path.is_file() and (not fresh or not rt.main)  # other ranks read what rank 0 just wrote
    if hit:
        blob = _read_checkpoint(path, "teacher cache file", fix)
        emb = blob.get("embeddings")
        if blob.get("key") != key or not isinstance(emb, torch.Tensor) or tuple(emb.shape[:1]) != (len(images),):
            raise MicrotError(f"{path} is not this teacher's cache file", fix)
    else:
        if not rt.main:
            raise MicrotError(f"rank {rt.rank} found no teacher cache at {path}",
                              "put the project folder on a file system all ranks share")
        teacher = load_external_teacher(model_cfg).to(rt.device)
        with torch.autocast(rt.device.type, enabled=rt.amp):
            emb = embed_images(teacher, images, int(model_cfg["teacher_dim"]), spec, device=rt.device)
        atomic.write_bytes(path, _blob({"key": key, "identity": teacher_identity(model_cfg), "embeddings": emb}))
    if rt.main:
        rt.barrier()
    return emb, {"cache": str(path), "cache_hit": hit}


def _train_builtin(
    x: torch.Tensor, dim: int, epochs: int, cfg: dict[str, Any], state: dict[str, Any] | None,
    ckpts: Checkpoints, rt: Runtime, progress: ProgressFn | None,
) -> tuple[nn.Module, list[float]]:
    return train_ssl_convnet(
        x, dim, epochs, int(cfg.get("batch_size", 64)), float(cfg.get("teacher_lr", 2e-3)),
        int(cfg.get("seed", 0)), progress if rt.main else None, resume=state,
        on_epoch=lambda st: ckpts.save("teacher", {**st, **_rng_state(), "epochs": epochs}),
        device=rt.device, **ssl_options(cfg),
    )


def _builtin_teacher(
    x: torch.Tensor, model_cfg: dict[str, Any], cfg: dict[str, Any], ckpts: Checkpoints, rt: Runtime,
    progress: ProgressFn | None,
) -> tuple[nn.Module, list[float], str]:
    """Train (or resume, or reload) the builtin SSL teacher; returns it standardised."""
    dim = int(model_cfg["teacher_dim"])
    epochs = int(cfg.get("teacher_epochs", 30))
    state = ckpts.get("teacher")
    how = "trained"
    if state is not None and ckpts.complete("teacher"):
        teacher = ConvNetTeacher(dim).to(rt.device)
        with ckpts.loading("teacher"):
            teacher.load_state_dict(state["model"])
            _set_rng_state(state)
            losses, how = list(state["losses"]), "loaded"
    else:
        ckpts.drop_after("teacher")
        if state is not None:
            how = f"resumed after epoch {state['epoch']}"
        if state is not None:
            with ckpts.loading("teacher"), torch.random.fork_rng(devices=[]):  # the contents fit?
                ConvNetTeacher(dim).load_state_dict(state["model"])
                for key in ("optimizer", "scheduler", "generator", "torch_rng", "losses", "epoch"):
                    state[key]  # noqa: B018 - a KeyError names what is missing
        teacher, losses = _train_builtin(x, dim, epochs, cfg, state, ckpts, rt, progress)
    teacher = freeze(teacher)
    if rt.distributed:  # every rank trained the same teacher; rank 0's copy is the one
        for tensor in teacher.state_dict().values():
            torch.distributed.broadcast(tensor, 0)
    return standardise(teacher, x, device=rt.device), losses, how


# ---------------------------------------------------------------- stages 1 and 3


class _SskdNet(nn.Module):
    """Stage 1's trained modules (the student, proj_full and, with ``sskd_ce``, cls_full): exactly the
    parameters that get gradients, as DDP requires; ``all_heads`` (unregistered) is checkpointed."""

    def __init__(self, student: Backbone, heads: nn.ModuleDict, use_ce: bool) -> None:
        super().__init__()
        self.student = student
        self.proj_full = heads["proj_full"]
        self.cls_full = heads["cls_full"] if use_ce else None
        self.__dict__["all_heads"] = heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = self.student.full(x)
        return self.proj_full(full), (self.cls_full(full) if self.cls_full is not None else full)


class _JointNet(nn.Module):
    """Stage 3's trained modules: the student and all four heads (``labels_only``: the two classifiers;
    the projections' places in the output hold the features, which no loss term reads)."""

    def __init__(self, student: Backbone, heads: nn.ModuleDict, labels_only: bool = False) -> None:
        super().__init__()
        self.student, self.labels_only = student, labels_only
        self.heads = nn.ModuleDict({k: heads[k] for k in ("cls_full", "cls_part")}) if labels_only else heads
        self.__dict__["all_heads"] = heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        part, full = self.student(x)
        h = self.heads
        if self.labels_only:
            return full, h["cls_full"](full), part, h["cls_part"](part)
        return h["proj_full"](full), h["cls_full"](full), h["proj_part"](part), h["cls_part"](part)


def _sskd_terms(out: tuple[torch.Tensor, ...], y: torch.Tensor, target: torch.Tensor,
                cfg: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    mse = F.mse_loss(out[0].float(), target)
    loss = _weighted(mse, float(cfg.get("sskd_mse_weight", 1.0)))
    terms = {"mse": mse}
    if bool(cfg.get("sskd_ce", False)):
        ce = F.cross_entropy(out[1].float(), y)
        loss = loss + _weighted(ce, float(cfg.get("sskd_ce_weight", 1.0)))
        terms["ce"] = ce
    return terms, loss


def _joint_terms(out: tuple[torch.Tensor, ...], y: torch.Tensor, target: torch.Tensor,
                 cfg: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    if bool(cfg.get("labels_only", False)):  # no teacher: the label cross entropies alone
        terms = {"l4": F.cross_entropy(out[1].float(), y), "l6": F.cross_entropy(out[3].float(), y)}
        return terms, (_weighted(terms["l4"], float(cfg.get("l4_weight", 1.0)))
                       + _weighted(terms["l6"], float(cfg.get("l6_weight", 1.0))))
    terms = {
        "l3": F.mse_loss(out[0].float(), target),
        "l4": F.cross_entropy(out[1].float(), y),
        "l5": F.mse_loss(out[2].float(), target),
        "l6": F.cross_entropy(out[3].float(), y),
    }
    w = [float(cfg.get(f"{k}_weight", 1.0)) for k in terms]
    loss = (_weighted(terms["l3"], w[0]) + _weighted(terms["l4"], w[1]) + _weighted(terms["l5"], w[2])
            + _weighted(terms["l6"], w[3]))
    return terms, loss


def _run_stage(
    stage: str,
    net: nn.Module,
    params: list[nn.Parameter],
    terms_fn: Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor]],
    keys: tuple[str, ...],
    x: torch.Tensor,
    y: torch.Tensor,
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: dict[str, Any],
    gen: torch.Generator,
    rt: Runtime,
    progress: ProgressFn | None,
    ckpts: Checkpoints | None = None,
    carry: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """One training stage, epoch by epoch; checkpoints after each epoch, resumes from ``ckpts``."""
    epochs = int(cfg.get(f"{stage}_epochs", 30))
    opt, sched = make_optimizer(params, cfg, epochs)
    scaler = torch.amp.GradScaler("cuda") if rt.amp else None
    history: list[dict[str, float]] = []
    first = 0
    state = ckpts.get(stage) if ckpts is not None else None
    if state is not None:
        assert ckpts is not None
        with ckpts.loading(stage):
            net.student.load_state_dict(state["student"])
            net.all_heads.load_state_dict(state["heads"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            gen.set_state(state["generator"])
            _set_rng_state(state)
            history, first = list(state["history"]), int(state["epoch"])
    model: nn.Module = net
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [rt.device.index] if rt.device.type == "cuda" else None
        model = DistributedDataParallel(net, device_ids=ids)
    batch_size = int(cfg.get("batch_size", 64))
    aug = _aug(cfg)
    with _synced_batchnorm(net.student, rt):
        for epoch in range(first, epochs):
            net.train()
            sums = dict.fromkeys(keys, 0.0)
            batches = _batches(len(x), batch_size, gen)
            steps = 0
            for idx in batches:
                view = light_view(x[idx], gen, **aug)  # the global batch's view: the generator stays in step
                share = 1.0
                if rt.distributed:
                    if len(idx) < rt.world:
                        continue
                    share = len(idx[rt.rank :: rt.world]) * rt.world / len(idx)
                    idx, view = idx[rt.rank :: rt.world], view[rt.rank :: rt.world]
                view, yb = view.to(rt.device), y[idx].to(rt.device)
                with torch.autocast(rt.device.type, enabled=rt.amp):
                    target = targets(idx, view)
                    out = model(view)
                terms, loss = terms_fn(out, yb, target.float(), cfg)
                if share != 1.0:
                    loss = loss * share
                opt.zero_grad()
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                logged = {"total": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
                if rt.distributed:
                    names = list(logged)
                    packed = torch.stack([logged[k].float() * (1.0 if k == "total" else share) for k in names])
                    torch.distributed.all_reduce(packed)
                    logged = dict(zip(names, packed / rt.world, strict=True))
                for k in keys:
                    if k in logged:
                        sums[k] += float(logged[k])
                steps += 1
            sched.step()
            history.append({k: v / max(steps, 1) for k, v in sums.items()})
            if ckpts is not None:
                ckpts.save(stage, {
                    "student": net.student.state_dict(), "heads": net.all_heads.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "generator": gen.get_state(), **_rng_state(), "history": history,
                    "epoch": epoch + 1, "epochs": epochs, "carry": carry or {},
                })
            if progress and rt.main:
                progress(stage, epoch + 1, epochs, history[-1])
    return history


def _local_runtime() -> Runtime:
    return Runtime(device=torch.device("cpu"))


def run_sskd(
    student: Backbone,
    teacher: nn.Module,
    heads: nn.ModuleDict,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: dict[str, Any],
    gen: torch.Generator,
    progress: ProgressFn | None,
    *,
    rt: Runtime | None = None,
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ckpts: Checkpoints | None = None,
) -> list[dict[str, float]]:
    """Stage 1: MSE(full projection, teacher) (+ CE of the full head when ``sskd_ce``)."""
    params = list(student.parameters()) + list(heads["proj_full"].parameters())
    if bool(cfg.get("sskd_ce", False)):
        params += list(heads["cls_full"].parameters())
    use_ce = bool(cfg.get("sskd_ce", False))
    return _run_stage("sskd", _SskdNet(student, heads, use_ce), params, _sskd_terms, ("mse", "ce"), x, y,
                      targets or Targets(teacher), cfg, gen, rt or _local_runtime(), progress, ckpts)


def run_joint(
    student: Backbone,
    teacher: nn.Module,
    heads: nn.ModuleDict,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: dict[str, Any],
    gen: torch.Generator,
    progress: ProgressFn | None,
    *,
    rt: Runtime | None = None,
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ckpts: Checkpoints | None = None,
    carry: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Stage 3: L3 MSE(full proj, teacher) + L4 CE(full head) + L5 MSE(part proj, teacher) + L6 CE(part);
    ``train.labels_only``: L4 + L6 only, the projections untrained and no target read."""
    labels_only = bool(cfg.get("labels_only", False))
    net = _JointNet(student, heads, labels_only)
    params = list(student.parameters()) + list(net.heads.parameters())
    keys = ("total", "l4", "l6") if labels_only else ("total", "l3", "l4", "l5", "l6")
    return _run_stage("joint", net, params, _joint_terms, keys,
                      x, y, targets or Targets(teacher), cfg, gen, rt or _local_runtime(), progress, ckpts, carry)


def save_extractor(path: Any, model: Backbone, heads: nn.ModuleDict | None = None) -> None:
    """Write the student's state dict and its resolved model config (and the training heads)."""
    buf = io.BytesIO()
    torch.save(
        {
            "state_dict": model.state_dict(),
            "model_config": model.config,
            "heads": heads.state_dict() if heads is not None else {},
        },
        buf,
    )
    atomic.write_bytes(path, buf.getvalue())


def load_extractor(path: Any) -> Backbone:
    """Rebuild the student from ``checkpoints/extractor.pt`` (eval mode)."""
    from microt_deploy.errors import MicrotError

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MicrotError(f"no trained extractor at {path}", "run `microt-deploy train` first") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise MicrotError(
            f"{path} is not a readable extractor checkpoint ({str(err).splitlines()[0][:120]})",
            "run `microt-deploy train` again to rewrite it",
        ) from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "model_config" not in blob:
        raise MicrotError(f"{path} is not a microt-deploy extractor checkpoint", "run `microt-deploy train` again")
    model = Backbone(blob["model_config"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise MicrotError(
            f"{path} does not match its own model config ({str(err).splitlines()[0][:120]})",
            "run `microt-deploy train` again",
        ) from None
    return model.eval()


def set_threads(train_cfg: dict[str, Any]) -> None:
    """Torch intra-op threads: ``train.threads``, default 1.

    Measured on the shared 2-core machines: with 2 threads and the other core busy, OpenMP's
    spinning made a small teacher run 90x slower (40.6 s vs 0.45 s); 1 thread never stalls.
    """
    torch.set_num_threads(max(1, int(train_cfg.get("threads", 1))))


def _how(stage: str, ckpts: Checkpoints) -> str:
    state = ckpts.states[stage]
    return f"{stage} loaded" if ckpts.complete(stage) else f"{stage} resumed after epoch {state['epoch']}"


def train_project(project: Project, progress: ProgressFn | None = None, fresh: bool = False) -> dict[str, Any]:
    """Run stages 1-3 for ``project``; writes checkpoints/extractor.pt and train.json, returns the summary.

    Resumes from ``checkpoints/resume/`` when its checkpoints match the config (``fresh``: ignore
    them and the teacher cache). Under torchrun every rank calls this; only rank 0 writes."""
    config = project.config
    cfg = config["train"]
    set_threads(cfg)
    rt = setup_runtime(cfg)
    try:
        return _train(project, progress, fresh, rt)
    except RuntimeError as err:  # another rank stopped (its own error says why): gloo / nccl lose it
        text = str(err)
        broke = isinstance(err, torch.distributed.DistError) or any(
            word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed")
        )
        if not (rt.distributed and broke):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise MicrotError(
            f"rank {rt.rank} of {rt.world}: the process group broke off ({type(err).__name__}: {first})",
            "another rank stopped first: its error says why",
        ) from None
    finally:
        if rt.owns_group:
            torch.distributed.destroy_process_group()


def _train(project: Project, progress: ProgressFn | None, fresh: bool, rt: Runtime) -> dict[str, Any]:
    config = project.config
    cfg = config["train"]
    started = time.perf_counter()
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model_cfg = resolve_model_config(config["model"])
    splits = load_splits(config)
    first_task = config["tasks"][0]
    x = to_nchw(splits["train"].images)
    y = torch.from_numpy(splits["train"].labels[first_task["name"]])
    n_classes = int(first_task["classes"])
    dim = int(model_cfg["teacher_dim"])
    spec = str(model_cfg.get("teacher", BUILTIN))
    timings: dict[str, float] = {}
    ckpts = Checkpoints(project.checkpoints / "resume", config_fingerprint(config, model_cfg), rt, fresh)
    rt.barrier()  # every rank has read the checkpoints before rank 0 writes new ones
    resumed: list[str] = []

    t0 = time.perf_counter()
    labels_only = bool(cfg.get("labels_only", False))
    if labels_only:  # no teacher at all: stage 3 reads no target
        targets = _no_targets
        teacher_info = {"spec": None, "labels_only": True, "dim": dim, "losses": []}
    elif spec == BUILTIN:
        teacher, losses, how = _builtin_teacher(x, model_cfg, cfg, ckpts, rt, progress)
        targets = Targets(teacher)
        teacher_info: dict[str, Any] = {"spec": spec, "dim": dim, "losses": losses}
        if how != "trained":
            resumed.append(f"teacher {how}")
    else:
        # Loading a user's teacher may reseed torch's RNG (a factory's torch.manual_seed): fork it, so
        # the student's initialisation is the same whether the cache served or the teacher ran.
        with torch.random.fork_rng(devices=[rt.device.index or 0] if rt.device.type == "cuda" else []):
            if bool(cfg.get("teacher_cache", True)):
                emb, cache_info = cached_teacher_embeddings(
                    model_cfg, x, project.checkpoints / "teacher_cache", rt, fresh
                )
                targets = Targets(cached=standardised_targets(emb))
            else:
                online = load_external_teacher(model_cfg).to(rt.device)
                embed_images(online, x[:2], dim, spec, device=rt.device)
                targets, cache_info = Targets(standardise(online, x, device=rt.device)), {"cache": None}
        teacher_info = {"spec": spec, "dim": dim, "losses": [], **cache_info}
    timings["teacher_s"] = time.perf_counter() - t0

    student = Backbone(model_cfg)
    heads = nn.ModuleDict(
        {
            "proj_full": nn.Linear(student.full_dim, dim),
            "cls_full": nn.Linear(student.full_dim, n_classes),
            "proj_part": nn.Linear(student.part_dim, dim),
            "cls_part": nn.Linear(student.part_dim, n_classes),
        }
    )
    student.to(rt.device)
    heads.to(rt.device)
    sskd_state, joint_state = ckpts.get("sskd"), ckpts.get("joint")
    t0 = time.perf_counter()
    if labels_only:  # stage 1 distils the teacher: skipped
        ckpts.states.pop("sskd", None)
        sskd = []
        before = (joint_state["carry"].get("before_joint", {}) if joint_state is not None
                  else probe_all(student, splits) if rt.main else {})
    elif joint_state is not None and sskd_state is not None and ckpts.complete("sskd"):
        sskd = list(sskd_state["history"])  # stage 3 resumes below: its checkpoint holds everything
        before = joint_state["carry"].get("before_joint", {})
        resumed.append("sskd loaded")
    else:
        ckpts.states.pop("joint", None)
        if sskd_state is not None:
            resumed.append(_how("sskd", ckpts))
        sskd = run_sskd(student, None, heads, x, y, cfg, gen, progress, rt=rt, targets=targets,  # type: ignore[arg-type]
                        ckpts=ckpts)
        before = probe_all(student, splits) if rt.main else {}
    timings["sskd_s"] = time.perf_counter() - t0
    if joint_state is not None and "joint" in ckpts.states:
        resumed.append(_how("joint", ckpts))
    t0 = time.perf_counter()
    joint = run_joint(student, None, heads, x, y, cfg, gen, progress, rt=rt, targets=targets,  # type: ignore[arg-type]
                      ckpts=ckpts, carry={"before_joint": before})
    timings["joint_s"] = time.perf_counter() - t0
    student.eval()
    summary: dict[str, Any] = {}
    if rt.main:
        after = probe_all(student, splits)
        timings["total_s"] = time.perf_counter() - started
        summary = {
            "model": model_cfg,
            "macs": {"full": count_macs(model_cfg), "part_share": part_mac_share(model_cfg)},
            "task": first_task["name"],
            "samples": {name: len(s) for name, s in splits.items()},
            "teacher": teacher_info,
            "sskd": {"losses": sskd, "ce": bool(cfg.get("sskd_ce", False)), "skipped": labels_only},
            "joint": {"losses": joint},
            "probe": {"before_joint": before, "after_joint": after, "fit": "train", "scored_on": "calib"},
            "seconds": timings,
            "run": {"device": str(rt.device), "amp": rt.amp, "processes": rt.world,
                    "resumed": resumed, "restarted": bool(ckpts.ignored), "fresh": fresh},
        }
        save_extractor(project.checkpoints / "extractor.pt", student, heads)
        atomic.write_text(project.checkpoints / "train.json", json.dumps(summary, indent=2))
        ckpts.remove()
    rt.barrier()
    return summary
