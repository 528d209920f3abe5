"""microt-deploy's offline stand-in for PlatformIO's ST STM32 platform: everything is in builder/."""

from platformio.public import PlatformBase


class Ststm32Platform(PlatformBase):
    """The behaviour lives in builder/main.py."""
