"""Build step only (the metadata is in pyproject.toml): a wheel carries the repository's top-level
firmware_templates/, boards/, bench/anchors/ and bench/models/ as package data in
microt_deploy/_data/ (found by microt_deploy/resources.py). An editable install copies nothing: the
package then uses the top-level folders in place."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Repository folder -> the same path under microt_deploy/_data/.
DATA_FOLDERS = ("firmware_templates", "boards", "bench/anchors", "bench/models")
# Build junk that can sit in the template folders after a local build or a test run.
JUNK = shutil.ignore_patterns("__pycache__", "*.py[co]", ".pio", ".pio-*", "*.o", "*.d", "*.elf", "*.bin",
                              "*.map", ".DS_Store", "*~", "*.swp")


class BuildPyWithData(build_py):
    """build_py, then a fresh copy of the data folders into <build_lib>/microt_deploy/_data."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "microt_deploy" / "_data"
        shutil.rmtree(target, ignore_errors=True)  # no file deleted from the repository lingers
        for rel in DATA_FOLDERS:
            source = ROOT / rel
            if not source.is_dir():
                raise SystemExit(f"setup.py: {source} is missing; build from a full checkout or its sdist")
            shutil.copytree(source, target / rel, ignore=JUNK)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        target = Path(self.build_lib) / "microt_deploy" / "_data"
        if target.is_dir() and not getattr(self, "editable_mode", False):
            outputs += [str(p) for p in sorted(target.rglob("*")) if p.is_file()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithData})
