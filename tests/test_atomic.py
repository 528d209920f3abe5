"""Outputs appear whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from microt_deploy import atomic
from microt_deploy.errors import MicrotError


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


def test_write_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    cases = {link: "a symbolic link", fifo: "a FIFO", tmp_path / "folder": "a folder",
             target / "under": "is not a folder", target / "deeper" / "under": "is not a folder"}
    for path, kind in cases.items():
        with pytest.raises(MicrotError, match=kind) as err:
            atomic.write_text(path, "new")
        assert err.value.exit_code == 2 and "\n" not in str(err.value)
    assert target.read_text() == "keep" and link.is_symlink() and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link", "precious"]


def test_write_keeps_an_existing_files_permissions(tmp_path: Path) -> None:
    target = tmp_path / "script.sh"
    target.write_text("old")
    target.chmod(0o750)
    atomic.write_text(target, "new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o750


def test_staged_dir_refuses_a_file_or_a_link_as_its_folder(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for path in (plain, tmp_path / "link"):
        with pytest.raises(MicrotError, match="cannot write the folder"), atomic.staged_dir(path):
            pass
    assert plain.read_text() == "x" and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "plain", "real"]


def test_temporaries_are_tracked_until_renamed(tmp_path: Path) -> None:
    with atomic.staged_dir(tmp_path / "out") as tmp:
        assert tmp in atomic.temporaries()
        atomic.remove_temporaries()  # what the signal handler does
        assert not tmp.exists()
        tmp.mkdir()
    assert atomic.temporaries() == [] and (tmp_path / "out").is_dir()


def test_remove_stale_deletes_leftovers_and_puts_back_a_half_swapped_folder(tmp_path: Path) -> None:
    (tmp_path / "firmware" / "b").mkdir(parents=True)
    (tmp_path / "firmware" / ".b.abcd1234.tmp").mkdir()
    (tmp_path / "firmware" / "b" / ".firmware.elf.tmp").write_text("half")
    (tmp_path / ".export.x_y9Zq12.tmp").write_text("half")
    (tmp_path / "compiled.keep").mkdir()
    (tmp_path / ".compiled.old").mkdir()  # killed between the two renames: no compiled/ now
    (tmp_path / ".compiled.old" / "plan.json").write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".user.tmp").write_text("not ours")
    removed = atomic.remove_stale(tmp_path)
    assert len(removed) == 4
    assert (tmp_path / "compiled" / "plan.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compiled", "compiled.keep", "data", "firmware"]
    assert [p.name for p in (tmp_path / "firmware").iterdir()] == ["b"]
    assert not any((tmp_path / "firmware" / "b").iterdir())
    assert (tmp_path / "data" / ".user.tmp").exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_staged_dir_replaces_an_existing_folder_whole(tmp_path: Path, monkeypatch, exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    final = tmp_path / "fw"
    for n in range(2):
        with atomic.staged_dir(final) as tmp:
            (tmp / f"v{n}").write_text(str(n))
    assert [p.name for p in final.iterdir()] == ["v1"]
    assert [p.name for p in tmp_path.iterdir()] == ["fw"]
