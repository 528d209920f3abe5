"""[train] options: device / AMP resolution, loss weights, optimiser, schedule and augmentation keys."""

from __future__ import annotations

import math

import pytest
import torch

from microt_deploy.config_schema import validate
from microt_deploy.errors import MicrotError
from microt_deploy.model.augment import light_view, ssl_view
from microt_deploy.model.train import resolve_device, setup_runtime, train_project
from microt_deploy.project import DEFAULT_CONFIG, init_project

from .tiny import tiny_config


def test_auto_device_is_the_cpu_without_a_gpu_and_cuda_without_one_is_one_line(monkeypatch):
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device({}).type == want and resolve_device({"device": "auto"}).type == want
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device({"device": "auto"}) == torch.device("cpu")
    rt = setup_runtime({"device": "auto", "amp": True})
    assert (rt.device.type, rt.amp, rt.world, rt.rank) == ("cpu", False, 1, 0)  # AMP is for CUDA only
    with pytest.raises(MicrotError, match=r'train\.device = "cuda" but torch .* sees no CUDA GPU; set') as err:
        resolve_device({"device": "cuda"})
    assert "\n" not in str(err.value)


def test_cuda_without_gpu_fails_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    project = init_project(tmp_path / "p", tiny_config(device="cuda"))
    with pytest.raises(MicrotError, match="sees no CUDA GPU"):
        train_project(project)
    assert not project.checkpoints.exists()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("device", "tpu", "train.device"), ("optimizer", "sgdd", 'did you mean "sgd"'), ("l4_weight", -1, "l4_weight"),
     ("teacher_aug_crop", 0, "teacher_aug_crop"), ("amp", "yes", "train.amp")],
)
def test_bad_option_values_are_refused_by_the_schema(key, value, match):
    cfg = tiny_config()
    cfg["train"][key] = value
    with pytest.raises(MicrotError, match=match):
        validate(cfg)


def test_default_options_are_todays_behaviour():
    """Every new key is optional: init writes the same [train] as before, defaults apply in code."""
    assert set(DEFAULT_CONFIG["train"]) == {"seed", "teacher_epochs", "sskd_epochs", "joint_epochs", "batch_size",
                                            "lr", "momentum", "weight_decay"}
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    gen_a, gen_b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(light_view(x, gen_a), light_view(x, gen_b, shift=1, noise=0.02, flip=False))
    assert torch.equal(ssl_view(x, gen_a), ssl_view(x, gen_b, crop=0.7, shift=2, contrast=0.3, noise=0.05))
    assert torch.equal(light_view(x, gen_a, shift=0, noise=0.0), x)  # both off: the image itself
    flipped = light_view(x.repeat(16, 1, 1, 1), gen_a, shift=0, noise=0.0, flip=True)
    assert any(torch.equal(f, x[0].flip(2)) for f in flipped[::2])


def _train(tmp_path, name, **train):
    base = {"teacher_epochs": 1, "sskd_epochs": 1, "joint_epochs": 2}
    project = init_project(tmp_path / name, tiny_config(**{**base, **train}))
    summary = train_project(project)
    blob = torch.load(project.checkpoints / "extractor.pt", weights_only=True)
    return summary, blob["state_dict"]["stem.0.weight"]


def test_loss_weights_optimiser_and_augmentation_keys_take_effect(tmp_path):
    base, w0 = _train(tmp_path, "base")
    weights = {"l3_weight": 0.5, "l4_weight": 2.0, "l5_weight": 0.0, "l6_weight": 1.5}
    summary, w1 = _train(tmp_path, "weights", sskd_ce=True, sskd_ce_weight=0.5, **weights)
    for epoch in summary["joint"]["losses"]:
        want = sum(weights[f"{k}_weight"] * epoch[k] for k in ("l3", "l4", "l5", "l6"))
        assert math.isclose(epoch["total"], want, rel_tol=1e-5)
    assert not torch.equal(w0, w1)
    for key, value in (("optimizer", "adamw"), ("scheduler", "constant"), ("aug_flip", True),
                       ("aug_shift", 0), ("teacher_temperature", 0.5)):
        _, w = _train(tmp_path, key, **{key: value})
        assert not torch.equal(w0, w), key
    again, w2 = _train(tmp_path, "again")
    assert torch.equal(w0, w2) and again["joint"] == base["joint"]
