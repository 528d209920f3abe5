"""A measurement session on a device: store features, train the task heads on the device, then
evaluate part-only, full-only and staged inference over a sweep of stage-decision ratios.

The device does all the deciding; this module only streams samples, collects what the device
answers and keeps it as plain arrays for the host simulation and the report.

How the samples reach the device is a transport (:func:`open_transport`): over the UART (LOAD_INPUT
frames), or, for a device running on this machine (QEMU, the host build) whose firmware answers
HOST_OPEN, from a temporary host file the device reads itself (semihosting under QEMU): then one
short request loads a sample (LOAD_SAMPLE) and one stores the features of a range of them
(STORE_SAMPLES). Either way the evaluation sets each ratio's threshold with SET_THRESHOLD (the
value SET_RATIO answered once per task and ratio) instead of recomputing it per sample, where the
firmware knows that command.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microt_deploy.errors import DeviceError, MicrotError

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


STORE_BATCH = 16  # samples per STORE_SAMPLES request: the progress bar moves once per request


class UartTransport:
    """Samples travel in LOAD_INPUT frames. ``bytes_sent`` / ``seconds`` add up what the session
    functions sent and how long they took (:meth:`report`)."""

    kind = "uart"

    def __init__(self, baud: int | None = None) -> None:
        self.baud = baud
        self.bytes_sent = 0
        self.seconds = 0.0

    @contextlib.contextmanager
    def measure(self, device: Any) -> Iterator[None]:
        stats = getattr(device, "stats", None)
        sent = stats.get("bytes_sent", 0) if isinstance(stats, dict) else 0
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds += time.monotonic() - started
            if isinstance(stats, dict):
                self.bytes_sent += stats.get("bytes_sent", 0) - sent

    def begin(self, device: Any, samples: np.ndarray) -> None:
        """Make ``samples`` the ones :meth:`load` indexes (nothing to do over the UART)."""

    def load(self, device: Any, samples: np.ndarray, i: int) -> None:
        device.load_input(np.ascontiguousarray(samples[i], dtype=np.int8).tobytes())

    def store(self, device: Any, samples: np.ndarray, first_slot: int, progress: Progress, label: str) -> None:
        total = len(samples)
        for i in range(total):
            self.load(device, samples, i)
            device.store_features(first_slot + i)
            progress(label, i + 1, total)

    def close(self) -> None:
        pass

    def report(self) -> dict[str, Any]:
        """The report's ``transport`` entry."""
        return {"kind": self.kind, "baud": self.baud, "bytes_sent": int(self.bytes_sent),
                "seconds": round(self.seconds, 2)}


class HostFileTransport(UartTransport):
    """Samples go to a temporary file on this machine that the device reads itself (HOST_OPEN,
    LOAD_SAMPLE, STORE_SAMPLES): semihosting under QEMU, the file system for the host build. The
    folder is removed by :meth:`close`."""

    kind = "semihosting"

    def __init__(self, baud: int | None = None) -> None:
        super().__init__(baud)
        self.folder = Path(tempfile.mkdtemp(prefix="mdt-samples-"))
        # Removed by close(), or at the latest when the transport is collected / the process ends.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self._files = 0
        self._current: np.ndarray | None = None

    def _write(self, samples: np.ndarray) -> Path:
        self._files += 1
        path = self.folder / f"samples{self._files}.bin"
        data = np.ascontiguousarray(samples, dtype=np.int8).tobytes()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # the device never sees a half-written file
        return path

    def probe(self, device: Any) -> bool:
        """True when the firmware opens a host file (False: an older firmware, a board without
        host files, a device that cannot see this machine's files)."""
        from microt_deploy.link.protocol import Command, Status

        size = int(device.hello().input_size) if getattr(device, "info", None) is None else int(device.info.input_size)
        path = self._write(np.zeros((1, size), np.int8))
        status, _ = device.request(Command.HOST_OPEN, str(path).encode(), expect=None)
        return status == Status.OK

    def begin(self, device: Any, samples: np.ndarray) -> None:
        if self._current is samples:
            return
        path = self._write(samples)
        n = device.host_open(str(path))
        if n != len(samples):
            raise DeviceError(f"the device reads {n} samples from {path}, {len(samples)} were written",
                              "the firmware's input size differs from the samples'; rebuild the firmware")
        self._current = samples

    def load(self, device: Any, samples: np.ndarray, i: int) -> None:
        self.begin(device, samples)
        device.load_sample(i)

    def store(self, device: Any, samples: np.ndarray, first_slot: int, progress: Progress, label: str) -> None:
        self.begin(device, samples)
        total = len(samples)
        for start in range(0, total, STORE_BATCH):
            count = min(STORE_BATCH, total - start)
            device.store_samples(start, first_slot + start, count)
            progress(label, start + count, total)

    def close(self) -> None:
        self._current = None
        self._cleanup()


@contextlib.contextmanager
def open_transport(device: Any, baud: int | None = None, kind: str = "auto") -> Iterator[UartTransport]:
    """:func:`choose_transport`, closed (its temporary file removed) when the context ends."""
    transport = choose_transport(device, baud, kind)
    try:
        yield transport
    finally:
        transport.close()


def choose_transport(device: Any, baud: int | None = None, kind: str = "auto") -> UartTransport:
    """The transport for ``device``: ``auto`` picks the host file where the device runs on this
    machine (``device.local``) and its firmware opens one, else the UART; ``uart`` / ``semihosting``
    force one (``semihosting`` raises where it cannot work). Call its ``close()`` when done."""
    if kind not in ("auto", "uart", "semihosting"):
        raise MicrotError(f"unknown transport {kind!r}", "use auto, uart or semihosting")
    transport: UartTransport = UartTransport(baud)
    if kind != "uart" and (getattr(device, "local", False) or kind == "semihosting"):
        candidate = HostFileTransport(baud)
        try:
            if candidate.probe(device):
                transport = candidate
            elif kind == "semihosting":
                raise DeviceError("the device cannot read host files (HOST_OPEN refused)",
                                  "use the UART transport, or rebuild the firmware from this version")
        finally:
            if transport is not candidate:
                candidate.close()
    return transport


def store_features(device: Any, samples: np.ndarray, first_slot: int, progress: Progress = _noop,
                   label: str = "features", transport: UartTransport | None = None) -> None:
    """Send each int8 sample and store its part and full features in consecutive device slots."""
    transport = transport or UartTransport()
    with transport.measure(device):
        transport.store(device, samples, first_slot, progress, label)


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
                   n_calib: int, ratios: Sequence[float], progress: Progress = _noop,
                   transport: UartTransport | None = None) -> list[TaskEvaluation]:
    """For every test sample: one forced-full inference per task (part-only and full-only answers),
    then one real staged inference per task and ratio, the threshold set on the device each time
    (SET_THRESHOLD with the value SET_RATIO answered, or SET_RATIO again on an older firmware)."""
    transport = transport or UartTransport()
    with transport.measure(device):
        return _evaluate(device, tasks, test_inputs, calib_first, n_calib, ratios, progress, transport)


def _threshold_setter(device: Any, evals: Sequence[TaskEvaluation], tasks: Sequence[TaskSpec],
                      calib_first: int, n_calib: int) -> Callable[[TaskSpec, TaskEvaluation, float], None]:
    """How each staged inference gets its ratio's threshold: SET_THRESHOLD when the firmware answers
    it (tried once with the threshold the device holds anyway), else SET_RATIO every time."""
    from microt_deploy.link.protocol import Command, Status

    request = getattr(device, "request", None)
    if request is not None and hasattr(device, "set_threshold") and tasks and evals[0].thresholds:
        task, ev = tasks[0], evals[0]
        last = list(ev.thresholds)[-1]
        status, _ = request(Command.SET_THRESHOLD, struct.pack("<Bf", task.index, ev.thresholds[last]),
                            expect=None)
        if status == Status.OK:
            return lambda t, e, r: device.set_threshold(t.index, e.thresholds[r])
        if status != Status.UNKNOWN_COMMAND:
            raise DeviceError(f"device answered {status.name} to SET_THRESHOLD",
                              "the task's threshold is one the device computed; check the firmware")
    return lambda t, e, r: device.set_ratio(t.index, r, calib_first, n_calib)


def _evaluate(device: Any, tasks: Sequence[TaskSpec], test_inputs: np.ndarray, calib_first: int, n_calib: int,
              ratios: Sequence[float], progress: Progress, transport: UartTransport) -> list[TaskEvaluation]:
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

    set_threshold = _threshold_setter(device, evals, tasks, calib_first, n_calib)
    transport.begin(device, test_inputs)
    done = 0
    try:
        for i in range(n):
            transport.load(device, test_inputs, i)
            for task, ev in zip(tasks, evals, strict=True):
                forced = device.infer(task.index, force_full=True)
                ev.part_pred[i] = forced.part_prediction
                ev.part_conf[i] = forced.confidence
                ev.full_pred[i] = forced.full_prediction
                ev.forced_counters[i] = _counters(forced)
                for r in ratios:
                    set_threshold(task, ev, r)
                    staged = device.infer(task.index, force_full=False)
                    ev.staged_pred[r][i] = staged.prediction
                    ev.staged_exit[r][i] = staged.exit_stage
                    ev.staged_counters[r][i] = _counters(staged)
            done = i + 1
            progress("evaluate", done, n)
    except DeviceError as err:
        # The device stopped (or the phase ran out of time): the samples it answered in full stay
        # with the error, for a report marked partial; the sample it was on is dropped.
        err.partial_evaluations = [first_samples(ev, done) for ev in evals]  # type: ignore[attr-defined]
        raise
    return evals


def first_samples(ev: TaskEvaluation, k: int) -> TaskEvaluation:
    """``ev`` cut to its first ``k`` test samples."""
    return TaskEvaluation(
        name=ev.name, labels=ev.labels[:k], part_pred=ev.part_pred[:k], part_conf=ev.part_conf[:k],
        full_pred=ev.full_pred[:k], forced_counters=ev.forced_counters[:k], thresholds=dict(ev.thresholds),
        staged_pred={r: a[:k] for r, a in ev.staged_pred.items()},
        staged_exit={r: a[:k] for r, a in ev.staged_exit.items()},
        staged_counters={r: a[:k] for r, a in ev.staged_counters.items()},
    )


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
