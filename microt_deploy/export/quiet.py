"""Running TensorFlow and onnx2tf quietly: their log chatter goes to a file, not the user's terminal.

TensorFlow's C++ logging and onnx2tf's prints write straight to file descriptors 1 and 2, so this
redirects the descriptors themselves; on failure the captured tail is kept for the error message.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


def quiet_tensorflow_env() -> None:
    """Set the environment before TensorFlow is first imported (it reads these once)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def import_tensorflow():  # -> the tensorflow module
    """Import TensorFlow (and onnx2tf's dependencies) without its start-up chatter on the terminal."""
    quiet_tensorflow_env()
    with quiet():
        import tensorflow as tf
    return tf


class Captured:
    """What a quiet block printed (filled in when the block ends)."""

    text: str = ""

    def tail(self, lines: int = 3) -> str:
        kept = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        return " | ".join(kept[-lines:])


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    """Redirect fds 1 and 2 (and Python's sys.stdout/err) into a temporary file for the block."""
    captured = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.text = sink.read()[-20000:].decode("utf-8", "replace")
