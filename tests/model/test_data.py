"""Data splits: shapes, normalisation, stratification, task labels, folders and bad configs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from microt_deploy.errors import MicrotError
from microt_deploy.model.data import LOOPS_OF_DIGIT, bilinear_matrix, load_splits, resize_bilinear
from microt_deploy.project import DEFAULT_CONFIG


@pytest.fixture(scope="module")
def splits():
    return load_splits(DEFAULT_CONFIG)


def test_shapes_dtypes_and_range(splits):
    total = 0
    for split in splits.values():
        assert split.images.dtype == np.float32
        assert split.images.shape[1:] == (32, 32, 3)
        assert split.images.min() >= -1.0 and split.images.max() <= 1.0
        # grey digits: the three channels are equal
        assert np.array_equal(split.images[..., 0], split.images[..., 2])
        for labels in split.labels.values():
            assert labels.dtype == np.int64 and labels.shape == (len(split),)
        total += len(split)
    assert total == 1797


def test_fractions_and_stratification(splits):
    sizes = {name: len(s) for name, s in splits.items()}
    assert abs(sizes["train"] - 0.6 * 1797) <= 10
    assert abs(sizes["calib"] - 0.15 * 1797) <= 10
    for name, frac in zip(("train", "calib", "test"), DEFAULT_CONFIG["data"]["split"], strict=True):
        counts = np.bincount(splits[name].labels["digits"], minlength=10)
        per_class = np.bincount(np.concatenate([s.labels["digits"] for s in splits.values()]), minlength=10)
        assert np.all(np.abs(counts - frac * per_class) <= 1.0)


def test_splits_are_disjoint_and_deterministic(splits):
    again = load_splits(DEFAULT_CONFIG)
    for name in splits:
        assert np.array_equal(splits[name].images, again[name].images)
    flat = {name: {s.tobytes() for s in split.images} for name, split in splits.items()}
    # digits has a few duplicate images, so allow a handful of byte-identical collisions
    assert len(flat["train"] & flat["test"]) < 5


def test_loops_labels_follow_digits(splits):
    for split in splits.values():
        assert np.array_equal(split.labels["loops"], LOOPS_OF_DIGIT[split.labels["digits"]])
    assert LOOPS_OF_DIGIT.tolist() == [1, 0, 0, 0, 1, 0, 1, 0, 2, 1]


def test_bilinear_resize_matches_torch():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    img = rng.random((2, 8, 8)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(img)[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    assert np.allclose(resize_bilinear(img, 32), want[:, 0].numpy(), atol=1e-6)
    assert np.allclose(bilinear_matrix(8, 32).sum(axis=1), 1.0)


def test_image_folder_dataset(tmp_path):
    rng = np.random.default_rng(1)
    for name, value in (("cats", 40), ("dogs", 200)):
        (tmp_path / name).mkdir()
        for i in range(8):
            pixels = np.clip(value + rng.integers(-20, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    (tmp_path / "cats" / "notes.txt").write_text("ignored")
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["data"]["dataset"] = str(tmp_path)
    cfg["tasks"] = [{"name": "pets", "labels": "folder", "classes": 2}]
    splits = load_splits(cfg)
    assert sum(len(s) for s in splits.values()) == 16
    assert splits["train"].images.shape[1:] == (32, 32, 3)
    for split in splits.values():
        # dark images are class 0 (cats, sorted first), bright ones class 1
        bright = split.images.mean(axis=(1, 2, 3)) > 0
        assert np.array_equal(bright.astype(np.int64), split.labels["pets"])


def test_bad_configs_name_the_fix(tmp_path):
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["data"]["split"] = [0.5, 0.5]
    with pytest.raises(MicrotError, match="data.split"):
        load_splits(cfg)
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["tasks"] = [{"name": "x", "labels": "colour", "classes": 3}]
    with pytest.raises(MicrotError, match="labels 'colour'"):
        load_splits(cfg)
    cfg["tasks"] = [{"name": "x", "labels": "loops", "classes": 4}]
    with pytest.raises(MicrotError, match="classes = 3"):
        load_splits(cfg)
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["data"]["dataset"] = str(tmp_path / "missing")
    with pytest.raises(MicrotError, match="does not exist"):
        load_splits(cfg)


def test_max_per_class_caps_samples():
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["data"]["max_per_class"] = 10
    splits = load_splits(cfg)
    assert sum(len(s) for s in splits.values()) == 100
    assert np.all(np.bincount(splits["test"].labels["digits"]) >= 2)



def test_digits_resize_only_the_kept_images_at_backbone_resolution():
    """At the paper backbones' 176x176, resizing all 1797 digits first took ~2 GB (668 MB kept); a
    capped split now resizes only its own images, to the same values as resizing them all first."""
    import tracemalloc

    from sklearn.datasets import load_digits

    from microt_deploy.model.data import _stratified_indices, normalise

    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["model"]["input_size"] = 176
    cfg["data"]["max_per_class"] = 4
    tracemalloc.start()
    try:
        splits = load_splits(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert splits["train"].images.shape[1:] == (176, 176, 3)
    assert peak < 60e6, f"{peak / 1e6:.0f} MB to load 40 images of 176x176"
    # the same values as the old route (every image resized, then indexed), at a size where that is cheap
    cfg["model"]["input_size"] = 20
    bunch = load_digits()
    everything = np.repeat(np.clip(resize_bilinear(bunch.images.astype(np.float32) / 16.0, 20), 0, 1)[..., None],
                           3, axis=3)
    indices = _stratified_indices(bunch.target, cfg["data"]["split"], 0, 4)
    for name, idx in zip(("train", "calib", "test"), indices, strict=True):
        assert np.array_equal(load_splits(cfg)[name].images, normalise(everything)[idx])
