"""A measurement session on a device: store features, train the task heads on the device, then
evaluate part-only, full-only and staged inference over a sweep of stage-decision ratios.

The device does all the deciding; this module only streams samples, collects what the device
answers and keeps it as plain arrays for the host simulation and the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from microt_deploy.errors import MicrotError

Progress = Callable[[str, int, int], None]

STAGES = ("trunk", "part_head", "part_classifier", "rest", "full_classifier")


@dataclass
class TaskSpec:
    """A local task: its index on the device, name, class count and labels per split."""

    index: int
    name: str
    classes: int
    train_labels: np.ndarray
    calib_labels: np.ndarray
    test_labels: np.ndarray


@dataclass
class TrainedTask:
    """What the device reports after training one task's two heads."""

    name: str
    result: dict[str, Any]
    part_head: tuple[np.ndarray, np.ndarray]
    full_head: tuple[np.ndarray, np.ndarray]


@dataclass
class TaskEvaluation:
    """Per-sample device answers for one task on the test split."""

    name: str
    labels: np.ndarray
    part_pred: np.ndarray
    part_conf: np.ndarray
    full_pred: np.ndarray
    forced_counters: np.ndarray  # (N, 5) counter values per stage with the rest always run
    thresholds: dict[float, float] = field(default_factory=dict)
    staged_pred: dict[float, np.ndarray] = field(default_factory=dict)
    staged_exit: dict[float, np.ndarray] = field(default_factory=dict)  # 0 part, 1 full
    staged_counters: dict[float, np.ndarray] = field(default_factory=dict)  # (N, 5)


def _noop(_stage: str, _done: int, _total: int) -> None:
    pass


def store_features(device: Any, samples: np.ndarray, first_slot: int, progress: Progress = _noop,
                   label: str = "features") -> None:
    """Send each int8 sample and store its part and full features in consecutive device slots."""
    total = len(samples)
    for i, sample in enumerate(samples):
        device.load_input(np.ascontiguousarray(sample, dtype=np.int8).tobytes())
        device.store_features(first_slot + i)
        progress(label, i + 1, total)


def train_tasks(device: Any, tasks: Sequence[TaskSpec], n_train: int, epochs: int, lr: float,
                seed: int, progress: Progress = _noop) -> list[TrainedTask]:
    """Label the stored train slots per task, train both heads on the device, read them back."""
    trained = []
    for n, task in enumerate(tasks):
        device.set_labels(task.index, task.classes, 0, task.train_labels.astype(np.uint8).tobytes())
        result = device.train(task.index, epochs=epochs, lr=lr, first_slot=0, n_slots=n_train, seed=seed)
        part = device.read_head(task.index, 0)
        full = device.read_head(task.index, 1)
        trained.append(TrainedTask(task.name, _as_dict(result), part, full))
        progress("train heads", n + 1, len(tasks))
    return trained


def evaluate_tasks(device: Any, tasks: Sequence[TaskSpec], test_inputs: np.ndarray, calib_first: int,
                   n_calib: int, ratios: Sequence[float], progress: Progress = _noop) -> list[TaskEvaluation]:
    """For every test sample: one forced-full inference per task (part-only and full-only answers),
    then one real staged inference per task and ratio, the threshold set on the device each time."""
    if n_calib <= 0:
        raise MicrotError("no calibration samples on the device", "keep a calibration split in [data] split")
    n = len(test_inputs)
    evals = []
    for task in tasks:
        ev = TaskEvaluation(
            name=task.name,
            labels=task.test_labels,
            part_pred=np.zeros(n, np.int64),
            part_conf=np.zeros(n, np.float64),
            full_pred=np.zeros(n, np.int64),
            forced_counters=np.zeros((n, len(STAGES)), np.int64),
        )
        for r in ratios:
            ev.thresholds[r] = float(device.set_ratio(task.index, r, calib_first, n_calib))
            ev.staged_pred[r] = np.zeros(n, np.int64)
            ev.staged_exit[r] = np.zeros(n, np.int64)
            ev.staged_counters[r] = np.zeros((n, len(STAGES)), np.int64)
        evals.append(ev)

    for i, sample in enumerate(test_inputs):
        device.load_input(np.ascontiguousarray(sample, dtype=np.int8).tobytes())
        for task, ev in zip(tasks, evals, strict=True):
            forced = device.infer(task.index, force_full=True)
            ev.part_pred[i] = forced.part_prediction
            ev.part_conf[i] = forced.confidence
            ev.full_pred[i] = forced.full_prediction
            ev.forced_counters[i] = _counters(forced)
            for r in ratios:
                device.set_ratio(task.index, r, calib_first, n_calib)
                staged = device.infer(task.index, force_full=False)
                ev.staged_pred[r][i] = staged.prediction
                ev.staged_exit[r][i] = staged.exit_stage
                ev.staged_counters[r][i] = _counters(staged)
        progress("evaluate", i + 1, n)
    return evals


def _counters(result: Any) -> list[int]:
    counters = result.counters
    if isinstance(counters, dict):
        return [int(counters.get(s, 0)) for s in STAGES]
    return [int(c) for c in counters]


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, dict):
        return dict(result)
    if hasattr(result, "__dataclass_fields__"):
        return {k: getattr(result, k) for k in result.__dataclass_fields__}
    return {"value": result}
