"""The datasets the extractor is trained, calibrated and evaluated on: loading, resizing, splitting.

Owns ``load_splits(config)`` (the contract in docs/contracts.md). Two sources:

- ``dataset = "digits"``: scikit-learn's bundled ``load_digits`` (1797 8x8 grey images, offline),
  with the tasks ``digit`` (10 classes) and ``loops`` (closed loops in the numeral, 3 classes).
- ``dataset = "<path>"``: an ImageFolder-style folder (one sub-folder of PNG/JPEG images per class);
  its tasks take ``labels = "folder"`` (the class index is the sorted position of the folder name).
  Images of any size and mode are converted to RGB and resized (bilinear) to ``model.input_size``;
  fewer than two class folders, a class folder without images or an unreadable image is a one-line
  MicrotError naming the folder or file.

Normalisation (what the exported trunk's float input means): pixel intensity in [0, 1]
(digits: value / 16; folders: value / 255), then ``(x - 0.5) / 0.5``, so every input lies in
[-1, 1]; grey digits are repeated over 3 channels. Images are NHWC float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microt_deploy.errors import MicrotError

SPLIT_NAMES = ("train", "calib", "test")
NORM_MEAN = 0.5
NORM_STD = 0.5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# Closed loops in each numeral 0..9: 0 -> 1 loop, 8 -> 2 loops, ...; grouped as 0 / 1 / 2 loops.
LOOPS_OF_DIGIT = np.array([1, 0, 0, 0, 1, 0, 1, 0, 2, 1], dtype=np.int64)
DIGIT_LABEL_KINDS = {"digit": 10, "loops": 3}


@dataclass
class Split:
    """One split: normalised NHWC float32 images and one int64 label vector per task name."""

    images: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) interpolation matrix with half-pixel centres (torch ``align_corners=False``)."""
    out = np.zeros((dst, src), dtype=np.float64)
    scale = src / dst
    for i in range(dst):
        pos = max((i + 0.5) * scale - 0.5, 0.0)
        lo = min(int(np.floor(pos)), src - 1)
        hi = min(lo + 1, src - 1)
        frac = pos - lo
        out[i, lo] += 1.0 - frac
        out[i, hi] += frac
    return out


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W) or (N, H, W, C) images to size x size, bilinear, deterministic (pure numpy)."""
    rows = bilinear_matrix(images.shape[1], size)
    cols = bilinear_matrix(images.shape[2], size)
    if images.ndim == 3:
        out = np.einsum("ih,nhw,jw->nij", rows, images.astype(np.float64), cols)
    else:
        out = np.einsum("ih,nhwc,jw->nijc", rows, images.astype(np.float64), cols)
    return out.astype(np.float32)


def normalise(unit_images: np.ndarray) -> np.ndarray:
    """Map intensities in [0, 1] to the trunk's float input range [-1, 1]."""
    return ((unit_images - NORM_MEAN) / NORM_STD).astype(np.float32)


class _DigitImages:
    """The bundled digits, resized to ``size`` only when indexed: at the paper backbones' 176x176 all
    1797 images would take 668 MB as float32 (and ~2 GB while being resized), though a capped split
    (``max_per_class``) uses a few hundred. Indexing with an index array gives normalised NHWC float32,
    the same values as resizing all of them first."""

    def __init__(self, grey: np.ndarray, size: int) -> None:
        self.grey = grey
        self.size = size

    def __len__(self) -> int:
        return int(self.grey.shape[0])

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.size, self.size, 3), np.float32)
        for start in range(0, len(idx), 256):  # bounded float64 temporaries
            chunk = idx[start:start + 256]
            resized = np.clip(resize_bilinear(self.grey[chunk], self.size), 0.0, 1.0)
            out[start:start + len(chunk)] = normalise(resized)[..., None]
        return out


def _load_digits(size: int) -> tuple[_DigitImages, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = bunch.images.astype(np.float32) / 16.0
    digit = bunch.target.astype(np.int64)
    return _DigitImages(grey, size), {"digit": digit, "loops": LOOPS_OF_DIGIT[digit]}


def _load_folder(root: Path, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from PIL import Image

    if not root.is_dir():
        raise MicrotError(
            f"dataset folder {root} does not exist",
            'set data.dataset to "digits" or to a folder with one sub-folder of images per class',
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files and len(classes) >= 2:
            raise MicrotError(
                f"class folder {root / name} of the dataset has no PNG or JPEG images",
                "add images to it or remove the folder",
            )
        for path in files:
            # Any size and mode (grey, palette, RGBA, 16-bit) is converted to RGB and resized, not rejected.
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise MicrotError(f"cannot read image {path} ({err})", "remove or replace the file") from None
            images.append(np.asarray(rgb, dtype=np.float32) / 255.0)
            labels.append(index)
    if len(classes) < 2 or not images:
        raise MicrotError(
            f"dataset folder {root} has {len(classes)} class folder{'' if len(classes) == 1 else 's'} and "
            f"{len(images)} images",
            "give it at least two sub-folders (one per class) of PNG or JPEG images",
        )
    return normalise(np.stack(images)), {"folder": np.asarray(labels, dtype=np.int64)}


def _stratified_indices(strata: np.ndarray, fractions: list[float], seed: int, max_per_class: int) -> list[np.ndarray]:
    """Per class: shuffle with ``seed``, cut by ``fractions``; each split sorted for stable order."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(strata):
        members = np.flatnonzero(strata == cls)
        members = members[rng.permutation(len(members))]
        if max_per_class > 0:
            members = members[:max_per_class]
        bounds = np.round(np.cumsum(fractions) * len(members)).astype(int)
        start = 0
        for i, stop in enumerate(bounds):
            parts[i].append(members[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) for p in parts]


def _check_fractions(data_cfg: dict[str, Any]) -> list[float]:
    fractions = [float(f) for f in data_cfg.get("split", [0.6, 0.15, 0.25])]
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise MicrotError(
            f"data.split = {fractions} is not three positive fractions summing to 1",
            "set data.split to [train, calib, test], e.g. [0.6, 0.15, 0.25]",
        )
    return fractions


def _task_labels(tasks: list[dict[str, Any]], raw: dict[str, np.ndarray], dataset: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for task in tasks:
        name, kind = task["name"], task.get("labels", task["name"])
        if kind not in raw:
            raise MicrotError(
                f"task {name!r} asks for labels {kind!r}, which dataset {dataset!r} does not have "
                f"(it has {sorted(raw)})",
                f"set the task's labels to one of {sorted(raw)}",
            )
        found = int(raw[kind].max()) + 1
        if int(task.get("classes", found)) != found:
            raise MicrotError(
                f"task {name!r} says {task['classes']} classes but labels {kind!r} have {found}",
                f"set classes = {found} for task {name!r}",
            )
        out[name] = raw[kind]
    return out


def load_splits(config: dict[str, Any]) -> dict[str, Split]:
    """Load the configured dataset and return its stratified ``train`` / ``calib`` / ``test`` splits.

    Reads ``config["model"]["input_size"]``, ``config["data"]`` (``dataset``, ``split``, ``seed``,
    optional ``max_per_class`` to cap samples per class for quick runs) and ``config["tasks"]``.
    Deterministic: the same config gives the same arrays. Stratified on the first task's labels.
    """
    size = int(config["model"]["input_size"])
    data_cfg = config.get("data", {})
    fractions = _check_fractions(data_cfg)
    dataset = str(data_cfg.get("dataset", "digits"))
    images: Any
    if dataset == "digits":
        images, raw = _load_digits(size)  # resized when indexed below: only the images the splits keep
    else:
        images, raw = _load_folder(Path(dataset).expanduser(), size)
    tasks = config.get("tasks") or []
    if not tasks:
        raise MicrotError("the config has no tasks", "add a [[tasks]] entry with name, labels and classes")
    labels = _task_labels(tasks, raw, dataset)
    strata = labels[tasks[0]["name"]]
    index_sets = _stratified_indices(
        strata, fractions, int(data_cfg.get("seed", 0)), int(data_cfg.get("max_per_class", 0))
    )
    for name, idx in zip(SPLIT_NAMES, index_sets, strict=True):
        if len(idx) == 0:
            raise MicrotError(f"the {name} split is empty", "use more images or larger split fractions")
    return {
        name: Split(images=np.ascontiguousarray(images[idx]), labels={k: v[idx] for k, v in labels.items()})
        for name, idx in zip(SPLIT_NAMES, index_sets, strict=True)
    }
