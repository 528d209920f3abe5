"""The one user-facing error type: a single line saying what is wrong and what to do about it."""

from __future__ import annotations


class MicrotError(Exception):
    """An error the user can act on. The CLI prints ``str(err)`` on one line and exits ``exit_code``.

    ``problem`` says what is wrong, ``fix`` says what to do; both are short, plain sentences.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str = "", exit_code: int | None = None) -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.problem
        if self.fix:
            text += f"; {self.fix}"
        return " ".join(text.split())


class DeviceError(MicrotError):
    """The device (board, emulator or host build) did not answer or answered with an error."""

    exit_code = 3


class ToolMissingError(MicrotError):
    """A required external tool (cross compiler, QEMU, PlatformIO) is not installed."""

    exit_code = 4


class NoBoardError(MicrotError):
    """No connected board was found (no serial port matched the board's USB ids)."""

    exit_code = 5


class RigError(MicrotError):
    """A rig file (hardware map) that cannot be read: names the file, the entry, the field and the fix."""

    exit_code = 4
