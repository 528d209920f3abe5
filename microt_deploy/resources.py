"""Where the non-Python folders are: ``firmware_templates/``, ``boards/`` and ``bench/``.

In a source checkout (and the editable install ``make setup`` makes) they are the repository's
top-level folders, used in place, so an edited template takes effect without a reinstall. A wheel
(``pip install .``) carries copies of them as package data in ``microt_deploy/_data/`` (setup.py's
build step puts them there); when that folder exists it wins.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# What a wheel ships (setup.py copies the repository's folders here at build time).
DATA_DIR = PACKAGE_DIR / "_data"
# The repository's top level, in a source checkout or an editable install.
SOURCE_ROOT = PACKAGE_DIR.parent
FOLDERS = ("firmware_templates", "boards", "bench")


def data_root() -> Path:
    """The folder that holds ``firmware_templates/``, ``boards/`` and ``bench/``: the package data
    when installed from a wheel, else the repository's top level."""
    return DATA_DIR if DATA_DIR.is_dir() else SOURCE_ROOT


def path(relative: str | Path) -> Path:
    """``relative`` (e.g. ``"firmware_templates/runtime"``) under :func:`data_root`."""
    rel = Path(relative)
    if rel.is_absolute() or not rel.parts or rel.parts[0] not in FOLDERS:
        raise ValueError(f"{relative!r} is not under one of {', '.join(FOLDERS)}")
    return data_root() / rel


def installed() -> bool:
    """True when the folders come from the package data (a non-editable install)."""
    return data_root() == DATA_DIR
