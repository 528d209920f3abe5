"""Every kind of frozen teacher (checkpoint:, timm:) and the one-line errors of one that cannot load."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from microt_deploy.errors import MicrotError
from microt_deploy.model.teacher import build_teacher, teacher_identity

from .teacher_factory import make_teacher

ARCH = "tests.model.teacher_factory:make_teacher"


def _images(n: int = 12, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def _embed(teacher: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return teacher(torch.from_numpy(_images().transpose(0, 3, 1, 2).copy()))


def _reference() -> torch.Tensor:
    teacher, _ = build_teacher({"teacher": f"module:{ARCH}", "teacher_dim": 8}, {}, _images())
    return _embed(teacher)


def test_checkpoint_teacher_whole_module_and_state_dict(tmp_path):
    want = _reference()
    whole = tmp_path / "whole.pt"
    torch.save(make_teacher(), whole)
    teacher, info = build_teacher({"teacher": f"checkpoint:{whole}", "teacher_dim": 8}, {}, _images())
    assert info["losses"] == [] and torch.allclose(_embed(teacher), want, atol=1e-6)

    state = tmp_path / "state.pt"
    torch.save({"state_dict": make_teacher().state_dict(), "epoch": 3}, state)
    cfg = {"teacher": f"checkpoint:{state}", "teacher_dim": 8, "teacher_arch": ARCH}
    teacher, _ = build_teacher(cfg, {}, _images())
    assert torch.allclose(_embed(teacher), want, atol=1e-6)

    with pytest.raises(MicrotError, match=r"state dict but model\.teacher_arch is not set"):
        build_teacher({**cfg, "teacher_arch": ""}, {}, _images())
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(MicrotError, match=rf"{other} does not fit teacher"):
        build_teacher({**cfg, "teacher": f"checkpoint:{other}"}, {}, _images())


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"not a checkpoint at all", "is not a readable torch checkpoint"), (None, "does not exist")],
)
def test_checkpoint_teacher_that_cannot_load_is_one_line(tmp_path, content, problem):
    path = tmp_path / "teacher.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MicrotError, match=problem) as err:
        build_teacher({"teacher": f"checkpoint:{path}", "teacher_dim": 8}, {}, _images())
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_checkpoint_teacher(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(make_teacher(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(MicrotError, match=rf"{cut} is not a readable torch checkpoint"):
        build_teacher({"teacher": f"checkpoint:{cut}", "teacher_dim": 8}, {}, _images())


def test_timm_teacher_without_timm_is_one_line(tmp_path, monkeypatch):
    weights = tmp_path / "dinov2.pth"
    torch.save(make_teacher().state_dict(), weights)
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, installed or not
    cfg = {"teacher": "timm:vit_small_patch14_dinov2.lvd142m", "teacher_dim": 8, "teacher_weights": str(weights)}
    with pytest.raises(MicrotError, match="needs timm, which is not installed; pip install timm"):
        build_teacher(cfg, {}, _images())
    with pytest.raises(MicrotError, match=r"needs model\.teacher_weights"):
        build_teacher({**cfg, "teacher_weights": ""}, {}, _images())
    with pytest.raises(MicrotError, match=rf"teacher weights file {tmp_path / 'missing.pth'} does not exist"):
        build_teacher({**cfg, "teacher_weights": str(tmp_path / "missing.pth")}, {}, _images())


def test_timm_teacher_builds_without_download_and_loads_the_local_weights(tmp_path, monkeypatch):
    calls = []

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        if name != "vit_small_patch14_dinov2.lvd142m":
            raise RuntimeError(f"Unknown model ({name})")
        torch.manual_seed(99)  # different from the weights: the state dict must be loaded
        return make_teacher()

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    weights = tmp_path / "dinov2.pth"
    torch.save({"model": make_teacher().state_dict()}, weights)
    cfg = {"teacher": "timm:vit_small_patch14_dinov2.lvd142m", "teacher_dim": 8, "teacher_weights": str(weights)}
    teacher, _ = build_teacher(cfg, {}, _images())
    assert torch.allclose(_embed(teacher), _reference(), atol=1e-6)
    assert calls[0] == ("vit_small_patch14_dinov2.lvd142m", False, {"num_classes": 0})
    with pytest.raises(MicrotError, match="timm cannot build 'vit_huge'"):
        build_teacher({**cfg, "teacher": "timm:vit_huge"}, {}, _images())


def test_teacher_identity_follows_the_file(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(make_teacher(), path)
    cfg = {"teacher": f"checkpoint:{path}", "teacher_dim": 8}
    before = teacher_identity(cfg)
    path.write_bytes(path.read_bytes() + b"\0")
    assert teacher_identity(cfg) != before
    assert teacher_identity({"teacher": f"module:{ARCH}"})["module_file"]["path"].endswith("teacher_factory.py")
