"""CI rigs (board farms): a rig file in the shape of Zephyr twister's hardware map (:mod:`.hwmap`) and
its generation from the USB serial ports plugged in (:mod:`.generate`)."""

from microt_deploy.rig.generate import GenerateSummary, generate
from microt_deploy.rig.hwmap import RESETS, RigEntry, load_rig, save_rig, select

__all__ = ["RESETS", "GenerateSummary", "RigEntry", "generate", "load_rig", "save_rig", "select"]
