"""Training as users run it: resume after an interruption is exact, a config change or --fresh starts
over, a corrupt checkpoint is one line, external teachers' embeddings are computed once and cached."""

from __future__ import annotations

import json

import pytest
import torch

from microt_deploy.errors import MicrotError
from microt_deploy.model.train import load_extractor, train_project
from microt_deploy.project import init_project

from . import teacher_factory
from .tiny import tiny_config


class Interrupted(Exception):
    pass


def _interrupt_at(stage: str, epoch: int):
    def progress(name, done, total, metrics):
        if (name, done) == (stage, epoch):
            raise Interrupted  # like a Ctrl-C right after the epoch's checkpoint is written

    return progress


def _weights(project) -> dict[str, torch.Tensor]:
    blob = torch.load(project.checkpoints / "extractor.pt", weights_only=True)
    return {**blob["state_dict"], **{f"heads.{k}": v for k, v in blob["heads"].items()}}


def _results(project) -> dict:
    data = json.loads((project.checkpoints / "train.json").read_text())
    return {k: data[k] for k in ("teacher", "sskd", "joint", "probe")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    project = init_project(tmp_path_factory.mktemp("ref") / "p", tiny_config(sskd_ce=True))
    train_project(project)
    assert not (project.checkpoints / "resume").exists()  # a finished run removes its checkpoints
    return _weights(project), _results(project)


@pytest.mark.parametrize(("stage", "epoch"), [("teacher", 1), ("sskd", 1), ("joint", 2)])
def test_resume_after_an_interruption_is_exact(tmp_path, reference, stage, epoch):
    project = init_project(tmp_path / "p", tiny_config(sskd_ce=True))
    with pytest.raises(Interrupted):
        train_project(project, progress=_interrupt_at(stage, epoch))
    assert not (project.checkpoints / "extractor.pt").exists()  # nothing half-done in the outputs
    assert (project.checkpoints / "resume" / f"{stage}.pt").is_file()

    calls = []
    summary = train_project(project, progress=lambda *a: calls.append(a[:2]))
    assert f"{stage} resumed after epoch {epoch}" in summary["run"]["resumed"]
    assert calls[0] == (stage, epoch + 1)  # the finished epochs are not trained again
    weights, results = reference
    mine = _weights(project)
    assert mine.keys() == weights.keys()
    for name, value in weights.items():
        assert torch.equal(mine[name], value), name  # bit-identical to the uninterrupted run
    assert _results(project) == results
    assert not (project.checkpoints / "resume").exists()


def test_config_change_or_fresh_starts_over_and_corrupt_checkpoint_is_one_line(tmp_path, reference):
    project = init_project(tmp_path / "p", tiny_config(sskd_ce=True))
    with pytest.raises(Interrupted):
        train_project(project, progress=_interrupt_at("joint", 1))
    joint = project.checkpoints / "resume" / "joint.pt"
    good = joint.read_bytes()

    joint.write_bytes(good[: len(good) // 2])
    with pytest.raises(MicrotError, match="is not a readable training checkpoint") as err:
        train_project(project)
    line = str(err.value)
    assert str(joint) in line and "--fresh" in line and "\n" not in line
    assert not (project.checkpoints / "extractor.pt").exists()

    joint.write_bytes(good)
    changed = init_project(project.root, {"train": {"lr": 0.02}})  # another config: its checkpoints are stale
    summary = train_project(changed)
    assert summary["run"]["restarted"] and summary["run"]["resumed"] == []

    with pytest.raises(Interrupted):
        train_project(project, progress=_interrupt_at("sskd", 2))  # the original config again
    joint.parent.joinpath("sskd.pt").write_bytes(b"garbage")
    summary = train_project(project, fresh=True)
    assert summary["run"]["resumed"] == [] and summary["run"]["fresh"]
    for name, value in reference[0].items():
        assert torch.equal(_weights(project)[name], value), name


def test_external_teacher_embeddings_are_computed_once_and_cached(tmp_path):
    cfg = tiny_config(teacher_epochs=0, sskd_epochs=1, joint_epochs=1)
    cfg["model"]["teacher"] = "module:tests.model.teacher_factory:make_counting_teacher"
    project = init_project(tmp_path / "p", cfg)
    teacher_factory.CALLS["forward"] = 0
    first = train_project(project)
    assert teacher_factory.CALLS["forward"] >= 1 and first["teacher"]["cache_hit"] is False
    cache = list((project.checkpoints / "teacher_cache").glob("*.pt"))
    assert len(cache) == 1 and first["teacher"]["cache"] == str(cache[0])
    weights = _weights(project)

    teacher_factory.CALLS["forward"] = 0
    second = train_project(project)
    assert teacher_factory.CALLS["forward"] == 0  # the teacher is not even called: the cache serves
    assert second["teacher"]["cache_hit"] is True
    for name, value in weights.items():
        assert torch.equal(_weights(project)[name], value), name

    # other images (another data seed) -> another cache entry; fresh recomputes
    other = init_project(project.root, {"data": {"seed": 1}})
    assert train_project(other)["teacher"]["cache_hit"] is False
    assert len(list((project.checkpoints / "teacher_cache").glob("*.pt"))) == 2
    teacher_factory.CALLS["forward"] = 0
    assert train_project(other, fresh=True)["teacher"]["cache_hit"] is False
    assert teacher_factory.CALLS["forward"] >= 1

    # online (no cache): the teacher sees every augmented view
    online = init_project(project.root, {"train": {"teacher_cache": False}})
    teacher_factory.CALLS["forward"] = 0
    assert train_project(online)["teacher"]["cache"] is None
    assert teacher_factory.CALLS["forward"] > 2


def test_corrupt_teacher_cache_is_one_line(tmp_path):
    cfg = tiny_config(teacher_epochs=0, sskd_epochs=1, joint_epochs=1)
    cfg["model"]["teacher"] = "module:tests.model.teacher_factory:make_teacher"
    project = init_project(tmp_path / "p", cfg)
    train_project(project)
    (cache,) = (project.checkpoints / "teacher_cache").glob("*.pt")
    cache.write_bytes(b"\x00" * 64)
    with pytest.raises(MicrotError, match=rf"{cache} is not a readable teacher cache file.*--fresh"):
        train_project(project)
    assert train_project(project, fresh=True)["teacher"]["cache_hit"] is False
    assert load_extractor(project.checkpoints / "extractor.pt") is not None


def test_checkpoint_of_the_right_config_but_wrong_contents_is_one_line(tmp_path):
    project = init_project(tmp_path / "p", tiny_config())
    with pytest.raises(Interrupted):
        train_project(project, progress=_interrupt_at("sskd", 1))
    for stage in ("teacher", "sskd"):
        path = project.checkpoints / "resume" / f"{stage}.pt"
        state = torch.load(path, weights_only=True)
        good = path.read_bytes()
        key = "model" if stage == "teacher" else "student"
        state[key] = {"nonsense": torch.zeros(1)}
        torch.save(state, path)
        with pytest.raises(MicrotError, match=rf"{path} does not fit this training \(RuntimeError.*--fresh"):
            train_project(project)
        path.write_bytes(good)
