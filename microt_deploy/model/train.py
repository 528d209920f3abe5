"""Stages 1-3 of MicroT: self-supervised distillation, splitting and joint training of part and full.

Owns ``train_project(project, progress=None)``: builds the frozen teacher, distils it into the
student (stage 1: MSE between a linear projection of the full features and the teacher embedding,
plus the optional cross entropy "Loss 2" when ``train.sskd_ce`` is true), then trains part and full
jointly (stage 3: L3 + L4 + L5 + L6 on the first task's labels). Writes
``checkpoints/extractor.pt`` and ``checkpoints/train.json`` atomically.

Linear-probe accuracies in train.json are fitted on the train split's features and scored on the
calib split, for part and full features and every task, before and after joint training.
"""

from __future__ import annotations

import io
import json
import pickle
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from microt_deploy import atomic
from microt_deploy.model.augment import light_view
from microt_deploy.model.backbone import Backbone, count_macs, part_mac_share, resolve_model_config
from microt_deploy.model.data import Split, load_splits
from microt_deploy.model.probe import linear_probe_accuracy
from microt_deploy.model.teacher import build_teacher
from microt_deploy.project import Project

ProgressFn = Callable[[str, int, int, dict[str, float]], None]


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """NHWC float32 numpy -> NCHW torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


@torch.no_grad()
def extract_features(model: Backbone, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(part, full) float features of NHWC images with the model in eval mode."""
    model.eval()
    parts, fulls = [], []
    x = to_nchw(images)
    for start in range(0, len(x), batch):
        part, full = model(x[start : start + batch])
        parts.append(part.numpy())
        fulls.append(full.numpy())
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


def _sgd(params: list[nn.Parameter], cfg: dict[str, Any], epochs: int) -> tuple[Any, Any]:
    opt = torch.optim.SGD(
        params,
        lr=float(cfg.get("lr", 0.01)),
        momentum=float(cfg.get("momentum", 0.9)),
        weight_decay=float(cfg.get("weight_decay", 5e-4)),
    )
    # Cosine decay: with few epochs it settles the weights better than a constant rate.
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    # Drop a trailing batch of one: BatchNorm cannot train on it.
    return [b for b in order.split(batch_size) if len(b) > 1]


def run_sskd(
    student: Backbone,
    teacher: nn.Module,
    heads: nn.ModuleDict,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: dict[str, Any],
    gen: torch.Generator,
    progress: ProgressFn | None,
) -> list[dict[str, float]]:
    """Stage 1: MSE(full projection, teacher) (+ CE of the full head when ``sskd_ce``)."""
    epochs = int(cfg.get("sskd_epochs", 30))
    use_ce = bool(cfg.get("sskd_ce", False))
    params = list(student.parameters()) + list(heads["proj_full"].parameters())
    if use_ce:
        params += list(heads["cls_full"].parameters())
    opt, sched = _sgd(params, cfg, epochs)
    history = []
    for epoch in range(epochs):
        student.train()
        sums = {"mse": 0.0, "ce": 0.0}
        batches = _batches(len(x), int(cfg.get("batch_size", 64)), gen)
        for idx in batches:
            view = light_view(x[idx], gen)
            with torch.no_grad():
                target = teacher(view)
            full = student.full(view)
            mse = F.mse_loss(heads["proj_full"](full), target)
            loss = mse
            if use_ce:
                ce = F.cross_entropy(heads["cls_full"](full), y[idx])
                loss = loss + ce
                sums["ce"] += float(ce.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sums["mse"] += float(mse.detach())
        sched.step()
        history.append({k: v / max(len(batches), 1) for k, v in sums.items()})
        if progress:
            progress("sskd", epoch + 1, epochs, history[-1])
    return history


def run_joint(
    student: Backbone,
    teacher: nn.Module,
    heads: nn.ModuleDict,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: dict[str, Any],
    gen: torch.Generator,
    progress: ProgressFn | None,
) -> list[dict[str, float]]:
    """Stage 3: L3 MSE(full proj, teacher) + L4 CE(full head) + L5 MSE(part proj, teacher) + L6 CE(part)."""
    epochs = int(cfg.get("joint_epochs", 30))
    opt, sched = _sgd(list(student.parameters()) + list(heads.parameters()), cfg, epochs)
    history = []
    for epoch in range(epochs):
        student.train()
        sums = dict.fromkeys(("total", "l3", "l4", "l5", "l6"), 0.0)
        batches = _batches(len(x), int(cfg.get("batch_size", 64)), gen)
        for idx in batches:
            view = light_view(x[idx], gen)
            with torch.no_grad():
                target = teacher(view)
            part, full = student(view)
            terms = {
                "l3": F.mse_loss(heads["proj_full"](full), target),
                "l4": F.cross_entropy(heads["cls_full"](full), y[idx]),
                "l5": F.mse_loss(heads["proj_part"](part), target),
                "l6": F.cross_entropy(heads["cls_part"](part), y[idx]),
            }
            loss = terms["l3"] + terms["l4"] + terms["l5"] + terms["l6"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sums["total"] += float(loss.detach())
            for k, v in terms.items():
                sums[k] += float(v.detach())
        sched.step()
        history.append({k: v / max(len(batches), 1) for k, v in sums.items()})
        if progress:
            progress("joint", epoch + 1, epochs, history[-1])
    return history


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


def train_project(project: Project, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run stages 1-3 for ``project``; writes checkpoints/extractor.pt and train.json, returns the summary."""
    config = project.config
    cfg = config["train"]
    set_threads(cfg)
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
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    teacher, teacher_info = build_teacher(model_cfg, cfg, splits["train"].images, progress)
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
    t0 = time.perf_counter()
    sskd = run_sskd(student, teacher, heads, x, y, cfg, gen, progress)
    timings["sskd_s"] = time.perf_counter() - t0
    before = probe_all(student, splits)
    t0 = time.perf_counter()
    joint = run_joint(student, teacher, heads, x, y, cfg, gen, progress)
    timings["joint_s"] = time.perf_counter() - t0
    after = probe_all(student, splits)
    student.eval()
    timings["total_s"] = time.perf_counter() - started

    summary: dict[str, Any] = {
        "model": model_cfg,
        "macs": {"full": count_macs(model_cfg), "part_share": part_mac_share(model_cfg)},
        "task": first_task["name"],
        "samples": {name: len(s) for name, s in splits.items()},
        "teacher": teacher_info,
        "sskd": {"losses": sskd, "ce": bool(cfg.get("sskd_ce", False))},
        "joint": {"losses": joint},
        "probe": {"before_joint": before, "after_joint": after, "fit": "train", "scored_on": "calib"},
        "seconds": timings,
    }
    save_extractor(project.checkpoints / "extractor.pt", student, heads)
    atomic.write_text(project.checkpoints / "train.json", json.dumps(summary, indent=2))
    return summary
