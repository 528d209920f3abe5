"""Nonsense arguments are refused with the protocol's statuses, over the serial link and through the
C API (microt.h) alike: the checks live in mdt_learn.c / microt.c, where the work is done. Never a
NaN answered with OK."""

import math
import struct
import subprocess

import numpy as np
import pytest

from microt_deploy.link.protocol import Command, Status
from tests.firmware.toy_model import INPUT

INF, NAN = float("inf"), float("nan")


def _status(device, command, payload):
    return device.request(command, payload, expect=None)


def _train(device, task=0, epochs=2, lr=0.05, first=0, n=8, seed=1):
    return _status(device, Command.TRAIN, struct.pack("<BHfIII", task, epochs, lr, first, n, seed))


def _ratio(device, ratio, task=0, first=0, n=8):
    return _status(device, Command.SET_RATIO, struct.pack("<BfII", task, ratio, first, n))


def _labels(device, task, n_classes, first, labels):
    return _status(device, Command.SET_LABELS, struct.pack("<BBI", task, n_classes, first) + bytes(labels))[0]


@pytest.fixture
def ready(device):
    """A device with 8 stored, labelled slots for task 0 (3 classes)."""
    rng = np.random.default_rng(0)
    y = np.arange(8) % 3
    for slot in range(8):
        x = rng.integers(-30, 30, INPUT).astype(np.int8)
        x[y[slot]] = 120
        device.load_input(x)
        device.store_features(slot)
    device.set_labels(0, 3, 0, y)
    return device


@pytest.mark.parametrize("lr", [INF, -INF, NAN, 0.0, -0.0, -0.1, 1000.5, 1e30, float(np.float32(3.4e38))])
def test_train_refuses_a_nonsense_learning_rate(ready, lr):
    status, body = _train(ready, lr=lr)
    assert (status, body) == (Status.BAD_ARGUMENT, b"")
    # Refused before anything changed: the task is not trained.
    assert _status(ready, Command.INFER, b"\x00\x00")[0] == Status.NOT_READY


def test_train_refuses_other_nonsense(ready):
    assert _train(ready, epochs=0)[0] == Status.BAD_ARGUMENT
    assert _train(ready, n=0)[0] == Status.BAD_ARGUMENT
    assert _train(ready, task=2)[0] == Status.BAD_ARGUMENT
    assert _train(ready, task=255)[0] == Status.BAD_ARGUMENT
    assert _train(ready, first=60, n=5)[0] == Status.OUT_OF_RANGE  # max_slots 64
    assert _train(ready, first=64, n=1)[0] == Status.OUT_OF_RANGE
    assert _train(ready, first=0xFFFFFFFF, n=2)[0] == Status.OUT_OF_RANGE  # no u32 wrap-around
    assert _train(ready, first=1, n=0xFFFFFFFF)[0] == Status.OUT_OF_RANGE
    assert _train(ready, first=0, n=9)[0] == Status.NOT_READY  # slot 8 is empty
    # Wrong payload sizes are BAD_LENGTH, before any argument is read.
    assert _status(ready, Command.TRAIN, bytes(18))[0] == Status.BAD_LENGTH
    assert _status(ready, Command.SET_RATIO, bytes(14))[0] == Status.BAD_LENGTH


def test_largest_accepted_arguments_answer_finite_numbers(ready):
    status, body = _train(ready, epochs=3, lr=1000.0)
    assert status == Status.OK
    values = struct.unpack("<ffffQ", body)
    assert all(math.isfinite(v) for v in values[:4])
    w, b = ready.read_head(0, 0)
    assert np.isfinite(w).all() and np.isfinite(b).all()
    for ratio in (0.0, 1e-30, 0.5, 1.0):
        status, body = _ratio(ready, ratio)
        assert status == Status.OK and math.isfinite(struct.unpack("<f", body)[0])


def test_set_ratio_refuses_nonsense(ready):
    assert _ratio(ready, 0.5)[0] == Status.NOT_READY  # untrained
    assert ready.train(0, 2, 0.05, 0, 8).part_accuracy >= 0.0
    for ratio in (NAN, INF, -INF, -0.01, 1.0001, 2.0, -1e-30):
        assert _ratio(ready, ratio) == (Status.BAD_ARGUMENT, b""), ratio
    assert _ratio(ready, -0.0)[0] == Status.OK  # IEEE -0 == 0: nothing exits early
    assert _ratio(ready, 0.5, n=0)[0] == Status.BAD_ARGUMENT
    assert _ratio(ready, 0.5, task=2)[0] == Status.BAD_ARGUMENT
    assert _ratio(ready, 0.5, first=63, n=2)[0] == Status.OUT_OF_RANGE
    assert _ratio(ready, 0.5, first=0xFFFFFFFF, n=1)[0] == Status.OUT_OF_RANGE
    assert _ratio(ready, 0.5, first=6, n=4)[0] == Status.NOT_READY  # slots 8, 9 are empty
    # The refusals left the threshold as it was: every sample still goes on (NEVER_EXIT).
    assert ready.set_ratio(0, 0.0, 0, 8) == 2.0


def test_set_labels_refuses_nonsense_and_changes_nothing(ready):
    for n_classes in (0, 1, 9, 255):  # max_classes 8
        assert _labels(ready, 0, n_classes, 0, [0]) == Status.BAD_ARGUMENT
    assert _labels(ready, 2, 3, 0, [0]) == Status.BAD_ARGUMENT  # max_tasks 2
    assert _labels(ready, 0, 3, 0, [0, 1, 3]) == Status.BAD_ARGUMENT  # label >= n_classes
    assert _labels(ready, 0, 3, 0, [0xFF]) == Status.BAD_ARGUMENT
    assert _labels(ready, 0, 3, 63, [0, 1]) == Status.OUT_OF_RANGE
    assert _labels(ready, 0, 3, 64, []) == Status.OUT_OF_RANGE
    assert _labels(ready, 0, 3, 0xFFFFFFFF, [0]) == Status.OUT_OF_RANGE
    assert _status(ready, Command.SET_LABELS, bytes(5))[0] == Status.BAD_LENGTH
    # None of the refusals reset the task or touched its labels: training still sees all 8.
    assert ready.train(0, 2, 0.05, 0, 8).part_accuracy >= 0.0


def test_other_commands_refuse_out_of_range_ids(ready):
    assert _status(ready, Command.INFER, b"\x00\x02")[0] == Status.BAD_ARGUMENT  # unknown flag
    assert _status(ready, Command.INFER, b"\x07\x00")[0] == Status.BAD_ARGUMENT
    assert _status(ready, Command.READ_HEAD, struct.pack("<BBIH", 0, 2, 0, 1))[0] == Status.BAD_ARGUMENT
    assert _status(ready, Command.READ_TENSOR, struct.pack("<BIH", 3, 0, 1))[0] == Status.BAD_ARGUMENT
    assert _status(ready, Command.STORE_FEATURES, struct.pack("<I", 0xFFFFFFFF))[0] == Status.OUT_OF_RANGE
    assert _status(ready, Command.LOAD_INPUT, struct.pack("<I", 0xFFFFFFFF) + b"\x00")[0] == Status.OUT_OF_RANGE


# The same refusals through the C API a user's firmware calls (the exported library's microt.h).
API_MAIN = r"""
#include <math.h>
#include <stdio.h>

#include "microt.h"

int main(void)
{
    static const uint8_t labels[8] = {0, 1, 2, 0, 1, 2, 0, 1};
    static const uint8_t bad[2] = {0, 3};
    int8_t x[MICROT_INPUT_SIZE];
    microt_train_result_t tr;
    microt_result_t r;
    float th = -1.0f;
    const float *w;
    uint32_t i, nc, dim;
    volatile float zero = 0.0f;
    float nan = zero / zero;
    microt_init(NULL, NULL);
    for (i = 0; i < 8; i++) {
        uint32_t k;
        for (k = 0; k < MICROT_INPUT_SIZE; k++) {
            x[k] = (int8_t)((k * 7u + i * 13u) % 60u) - 30;
        }
        x[labels[i]] = 120;
        if (microt_set_input(0, x, MICROT_INPUT_SIZE) || microt_store_features(i, NULL)) {
            return 10;
        }
    }
    printf("LABELS %d %d %d %d %d %d %d\n", microt_set_labels(0, 3, 0, labels, 8),
           microt_set_labels(0, 1, 0, labels, 8), microt_set_labels(0, 256, 0, labels, 8),
           microt_set_labels(0, 3, 0, bad, 2),
           microt_set_labels(9, 3, 0, labels, 8), microt_set_labels(0, 3, MICROT_MAX_SLOTS - 1, labels, 2),
           microt_set_labels(0, 3, 0, NULL, 2));
    printf("TRAIN %d %d %d %d %d %d %d %d %d\n", microt_train(0, 2, INFINITY, 0, 8, 1, &tr),
           microt_train(0, 2, nan, 0, 8, 1, &tr), microt_train(0, 2, -1.0f, 0, 8, 1, &tr),
           microt_train(0, 2, 1e6f, 0, 8, 1, &tr), microt_train(0, 0, 0.1f, 0, 8, 1, &tr),
           microt_train(0, MICROT_MAX_EPOCHS + 1u, 0.1f, 0, 8, 1, &tr), microt_train(0, 2, 0.1f, 0, 0, 1, &tr),
           microt_train(0, 2, 0.1f, 60, 8, 1, &tr), microt_train(0, 2, MICROT_MAX_LR, 0, 8, 1, &tr));
    printf("FINITE %d %d\n", isfinite(tr.part_loss) && isfinite(tr.full_loss), isfinite(tr.part_accuracy));
    printf("RATIO %d %d %d %d %d %d\n", microt_set_ratio(0, nan, 0, 8, &th), microt_set_ratio(0, INFINITY, 0, 8, &th),
           microt_set_ratio(0, -0.5f, 0, 8, &th), microt_set_ratio(0, 1.5f, 0, 8, &th),
           microt_set_ratio(0, 0.5f, 0, 0, &th), microt_set_ratio(0, 0.5f, 0, 8, &th));
    printf("THRESHOLD %d\n", isfinite(th) && th > 0.0f && th <= 1.0f);
    printf("NULLS %d %d %d %d %d\n", microt_set_input(0, NULL, 4), microt_set_input_f32(0, NULL, 4),
           microt_infer(0, 0, NULL), microt_head(0, 0, &w, NULL, &nc, &dim), microt_threshold(0, NULL));
    printf("OK %d %d\n", microt_set_input(0, NULL, 0), microt_infer(0, 0, &r));
    return 0;
}
"""


def test_c_api_refuses_the_same_arguments(host_image, tmp_path):
    fw = host_image.parent
    (tmp_path / "main.c").write_text(API_MAIN)
    sources = [str(p) for p in sorted(fw.glob("*.c")) if p.name not in ("mdt_app.c", "mdt_board_host.c")]
    exe = tmp_path / "api"
    flags = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-g", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all", f"-I{fw}"]
    built = subprocess.run(["gcc", *flags, str(tmp_path / "main.c"), *sources, "-lm", "-o", str(exe)],
                           capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stderr[-2000:]
    done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    out = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in done.stdout.splitlines()}
    ok, arg, rng = Status.OK, Status.BAD_ARGUMENT, Status.OUT_OF_RANGE
    assert out["LABELS"] == [ok, arg, arg, arg, arg, rng, arg]
    assert out["TRAIN"] == [arg, arg, arg, arg, arg, arg, arg, rng, ok]
    assert out["FINITE"] == [1, 1]
    assert out["RATIO"] == [arg, arg, arg, arg, arg, ok]
    assert out["THRESHOLD"] == [1]
    assert out["NULLS"] == [arg] * 5
    assert out["OK"] == [ok, ok]
