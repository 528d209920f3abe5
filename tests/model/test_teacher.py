"""Teachers: the built-in SSL ConvNet learns, external TorchScript / module teachers plug in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microt_deploy.errors import MicrotError
from microt_deploy.model.data import load_splits
from microt_deploy.model.teacher import build_teacher, nt_xent

from .teacher_factory import make_teacher
from .tiny import tiny_config


def _images(n: int = 40, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def test_nt_xent_prefers_matching_views():
    z = torch.randn(16, 8)
    matched = nt_xent(z, z + 0.01 * torch.randn(16, 8))
    shuffled = nt_xent(z, z[torch.randperm(16)])
    assert matched < shuffled
    assert matched < 1.0


def test_builtin_teacher_trains_and_is_frozen_and_standardised():
    images = load_splits(tiny_config())["train"].images
    model_cfg = {"teacher": "builtin:ssl-convnet", "teacher_dim": 8}
    train_cfg = {"teacher_epochs": 8, "batch_size": 20, "seed": 0}
    teacher, info = build_teacher(model_cfg, train_cfg, images)
    assert len(info["losses"]) == 8 and info["losses"][-1] < 0.9 * info["losses"][0]
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        emb = teacher(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    assert emb.shape == (60, 8)
    assert torch.allclose(emb.mean(0), torch.zeros(8), atol=1e-4)
    assert torch.allclose(emb.std(0), torch.ones(8), atol=1e-3)
    again, _ = build_teacher(model_cfg, train_cfg, images)
    with torch.no_grad():
        x = torch.zeros(1, 3, 16, 16)
        assert torch.equal(teacher(x), again(x))  # seeded: same teacher twice


def test_torchscript_teacher(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.jit.script(make_teacher()).save(str(path))
    cfg = {"teacher": f"torchscript:{path}", "teacher_dim": 8, "teacher_input_size": 24}
    teacher, info = build_teacher(cfg, {}, _images())
    assert info["losses"] == []
    with torch.no_grad():
        assert teacher(torch.zeros(3, 3, 16, 16)).shape == (3, 8)
    with pytest.raises(MicrotError, match="teacher_dim = 8"):
        build_teacher({**cfg, "teacher_dim": 16}, {}, _images())
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(MicrotError, match="TorchScript"):
        build_teacher({**cfg, "teacher": f"torchscript:{tmp_path / 'bad.pt'}"}, {}, _images())


def test_module_teacher_and_bad_specs():
    cfg = {"teacher": "module:tests.model.teacher_factory:make_teacher", "teacher_dim": 8}
    teacher, _ = build_teacher(cfg, {}, _images())
    with torch.no_grad():
        assert teacher(torch.zeros(2, 3, 16, 16)).shape == (2, 8)
    with pytest.raises(MicrotError, match="returned str"):
        build_teacher({**cfg, "teacher": "module:tests.model.teacher_factory:not_a_module"}, {}, _images())
    with pytest.raises(MicrotError, match="cannot load teacher"):
        build_teacher({**cfg, "teacher": "module:no.such.module:f"}, {}, _images())
    with pytest.raises(MicrotError, match="unknown teacher"):
        build_teacher({**cfg, "teacher": "onnx:vit_small.onnx"}, {}, _images())
