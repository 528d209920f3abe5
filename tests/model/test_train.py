"""Training (stages 1-3) on a tiny config: files written, losses recorded, deterministic, reloadable."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from microt_deploy.model.data import load_splits
from microt_deploy.model.train import extract_features, load_extractor, train_project
from microt_deploy.project import init_project

from .tiny import tiny_config


def test_tiny_training_run(tmp_path):
    calls = []
    project = init_project(tmp_path / "p", tiny_config(sskd_ce=True))
    summary = train_project(project, progress=lambda *a: calls.append(a))

    ckpt = project.checkpoints / "extractor.pt"
    data = json.loads((project.checkpoints / "train.json").read_text())
    assert data["task"] == "digits" and data["samples"] == {"train": 60, "calib": 20, "test": 20}
    assert len(data["teacher"]["losses"]) == 2 and len(data["sskd"]["losses"]) == 2
    joint = data["joint"]["losses"]
    assert len(joint) == 3
    for epoch in joint:
        assert math.isclose(epoch["total"], epoch["l3"] + epoch["l4"] + epoch["l5"] + epoch["l6"], rel_tol=1e-6)
    assert all(math.isfinite(v) for e in joint for v in e.values())
    assert data["sskd"]["ce"] is True and data["sskd"]["losses"][0]["ce"] > 0
    for stage in ("before_joint", "after_joint"):
        for task in ("digits", "loops"):
            for kind in ("part", "full"):
                assert 0.0 <= data["probe"][stage][task][kind] <= 1.0
    assert summary["probe"] == data["probe"]
    assert [c[0] for c in calls] == ["teacher"] * 2 + ["sskd"] * 2 + ["joint"] * 3
    assert calls[-1][1:3] == (3, 3)

    # the checkpoint reloads into the same features, and the split views are exact
    model = load_extractor(ckpt)
    images = load_splits(project.config)["test"].images
    part, full = extract_features(model, images)
    assert part.shape == (20, 8) and full.shape == (20, 16)
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        assert torch.equal(model.rest(model.trunk(x)), model.full(x))

    # deterministic: a second run gives bit-identical weights
    again = init_project(tmp_path / "q", tiny_config(sskd_ce=True))
    train_project(again)
    other = load_extractor(again.checkpoints / "extractor.pt")
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert np.array_equal(extract_features(other, images)[1], full)


def test_joint_training_learns_the_task(tmp_path):
    cfg = tiny_config(joint_epochs=25, lr=0.05)
    cfg["data"]["max_per_class"] = 30
    project = init_project(tmp_path / "p", cfg)
    data = train_project(project)
    losses = data["joint"]["losses"]
    assert losses[-1]["l4"] < 0.5 * losses[0]["l4"] and losses[-1]["l6"] < losses[0]["l6"]
    # 10 digit classes: a linear probe on the full features is far above chance after joint training
    assert data["probe"]["after_joint"]["digits"]["full"] > 0.6
