"""Stage package: targets (build an image, launch it, hand back a serial port to it)."""

from microt_deploy.targets.builder import BuildResult, build, image_path, require_tool
from microt_deploy.targets.runner import flash, launch, open_port, qemu_command

__all__ = ["BuildResult", "build", "flash", "image_path", "launch", "open_port", "qemu_command", "require_tool"]
