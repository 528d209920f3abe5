"""PlatformIO development platform of the microt-deploy emulated board (nothing beyond the base)."""

from platformio.public import PlatformBase


class MicrotqemuPlatform(PlatformBase):
    """The platform's behaviour is all in builder/main.py."""
