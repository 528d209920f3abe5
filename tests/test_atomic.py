"""Outputs appear whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from microt_deploy import atomic


def test_write_text_is_whole_and_world_readable(tmp_path: Path) -> None:
    target = tmp_path / "a" / "out.txt"
    old = os.umask(0o022)
    try:
        atomic.write_text(target, "hello")
    finally:
        os.umask(old)
    assert target.read_text() == "hello"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_staged_dir_leaves_old_folder_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "compiled"
    final.mkdir()
    (final / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic.staged_dir(final) as tmp:
        (tmp / "half.c").write_text("partial")
        raise RuntimeError("stage failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compiled"]
    assert [p.name for p in final.iterdir()] == ["keep.txt"]


def test_staged_dir_replaces_on_success(tmp_path: Path) -> None:
    final = tmp_path / "compiled"
    with atomic.staged_dir(final) as tmp:
        (tmp / "new.c").write_text("x")
    assert [p.name for p in final.iterdir()] == ["new.c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compiled"]
