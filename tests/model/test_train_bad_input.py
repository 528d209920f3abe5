"""Bad input to `microt-deploy train`: one line naming the file and the problem, a non-zero exit and
no half-written output; images of mixed sizes and modes are resized, not rejected."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from microt_deploy import cli
from microt_deploy.errors import MicrotError
from microt_deploy.model.data import load_splits
from microt_deploy.model.train import train_project
from microt_deploy.project import DEFAULT_CONFIG, init_project

from .tiny import tiny_config


def _folder_config(root) -> dict:
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["data"]["dataset"] = str(root)
    cfg["tasks"] = [{"name": "pets", "labels": "folder", "classes": 2}]
    return cfg


def _save(path, size, mode, value):
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    img = Image.fromarray(pixels)
    img = img.convert(mode) if mode != "RGB" else img
    img.save(path)


def test_images_of_mixed_sizes_and_modes_are_resized_not_rejected(tmp_path):
    sizes = [(8, 8), (40, 25), (13, 77), (64, 64)]
    modes = ["RGB", "L", "RGBA", "P"]
    for name, value in (("a", 30), ("b", 220)):
        (tmp_path / name).mkdir()
        for i, (size, mode) in enumerate(zip(sizes, modes, strict=True)):
            _save(tmp_path / name / f"{i}.{'jpg' if mode in ('RGB', 'L') else 'png'}", size, mode, value)
    cfg = _folder_config(tmp_path)
    cfg["data"]["split"] = [0.5, 0.25, 0.25]
    splits = load_splits(cfg)
    assert sum(len(s) for s in splits.values()) == 8
    for split in splits.values():
        assert split.images.shape[1:] == (32, 32, 3)
        bright = split.images.mean(axis=(1, 2, 3)) > 0
        assert np.array_equal(bright.astype(np.int64), split.labels["pets"])


@pytest.mark.parametrize("layout", ["empty", "one_class", "empty_class", "files_only", "corrupt_image"])
def test_bad_dataset_folders_are_one_line(tmp_path, layout):
    root = tmp_path / "data"
    root.mkdir()
    if layout in ("one_class", "empty_class", "corrupt_image"):
        (root / "cats").mkdir()
        for i in range(3):
            _save(root / "cats" / f"{i}.png", (10, 10), "RGB", 50)
    if layout in ("empty_class", "corrupt_image"):
        (root / "dogs").mkdir()
        (root / "dogs" / "readme.txt").write_text("no images here")
    if layout == "corrupt_image":
        (root / "dogs" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    if layout == "files_only":
        _save(root / "0.png", (10, 10), "RGB", 50)
    want = {
        "empty": rf"dataset folder {root} has 0 class folders and 0 images",
        "one_class": rf"dataset folder {root} has 1 class folder and 3 images",
        "empty_class": rf"class folder {root / 'dogs'} of the dataset has no PNG or JPEG images",
        "files_only": rf"dataset folder {root} has 0 class folders",
        "corrupt_image": rf"cannot read image {root / 'dogs' / '0.png'}",
    }[layout]
    with pytest.raises(MicrotError, match=want) as err:
        load_splits(_folder_config(root))
    assert "\n" not in str(err.value)


def _cli_train(project, *extra):
    return CliRunner().invoke(cli.main, ["train", "-p", str(project.root), *extra])


def _one_error_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


def test_cli_bad_inputs_are_one_line_with_nonzero_exit_and_no_output(tmp_path):
    # a teacher that cannot be loaded
    cfg = tiny_config()
    cfg["model"]["teacher"] = f"checkpoint:{tmp_path / 'dino.pt'}"
    project = init_project(tmp_path / "p", cfg)
    res = _cli_train(project)
    assert res.exit_code == 2
    assert f"teacher file {tmp_path / 'dino.pt'} does not exist" in _one_error_line(res)
    (tmp_path / "dino.pt").write_bytes(b"PK\x03\x04 truncated zip")
    res = _cli_train(project)
    assert res.exit_code == 2 and "is not a readable torch checkpoint" in _one_error_line(res)
    assert not (project.checkpoints / "extractor.pt").exists() and not (project.checkpoints / "train.json").exists()

    # a dataset folder with no images
    (tmp_path / "empty").mkdir()
    empty = init_project(tmp_path / "q", {**tiny_config(), "data": {"dataset": str(tmp_path / "empty")},
                                          "tasks": [{"name": "t", "labels": "folder", "classes": 2}]})
    res = _cli_train(empty)
    assert res.exit_code == 2 and f"dataset folder {tmp_path / 'empty'} has 0 class folders" in _one_error_line(res)


def test_cli_corrupt_checkpoint_then_fresh_and_resume_line(tmp_path):
    project = init_project(tmp_path / "p", tiny_config(teacher_epochs=1, sskd_epochs=1, joint_epochs=2))

    def stop(stage, done, total, metrics):
        if stage == "joint":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_project(project, progress=stop)
    joint = project.checkpoints / "resume" / "joint.pt"
    good = joint.read_bytes()
    joint.write_bytes(good[:100])
    res = _cli_train(project)
    assert res.exit_code == 2
    line = _one_error_line(res)
    assert f"{joint} is not a readable training checkpoint" in line and "train --fresh" in line
    assert not (project.checkpoints / "extractor.pt").exists()

    joint.write_bytes(good)
    res = _cli_train(project)
    assert res.exit_code == 0, res.output
    assert "resumed an interrupted run: teacher loaded, sskd loaded, joint resumed after epoch 1" in res.stdout
    res = _cli_train(project, "--fresh")
    assert res.exit_code == 0 and "resumed" not in res.stdout and "extractor.pt" in res.stdout
