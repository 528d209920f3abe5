"""Writing outputs so that a failure never leaves a half-written file or folder behind, and never
destroys what is at the output path unless it is a regular file (or, for folders, a folder).

Every output goes to a temporary name in the same folder (``.<name>.<random>.tmp``) and is renamed
over the target when complete. The temporaries of the running command are tracked, so that the
CLI's signal handler can remove them (:func:`remove_temporaries`); those of a killed command are
removed by the next command holding the project lock (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from microt_deploy.errors import MicrotError

# Temporary paths of this process that are not yet renamed into place.
_temporaries: set[Path] = set()

FIX_FILE = "name a new or regular file"
FIX_DIR = "name a new folder or one this tool wrote"


def _kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is, in words (None for regular files and folders)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return "not a regular file"


def check_file_target(path: Path, fix: str = FIX_FILE) -> None:
    """Refuse an output file path that is a link, device, FIFO, socket or folder, or whose parent is
    not a folder, with a one-line MicrotError (exit 2)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        _check_parent(path, fix)
        return
    except NotADirectoryError:
        _check_parent(path, fix)
        raise  # pragma: no cover - _check_parent raised
    kind = "a folder" if stat.S_ISDIR(mode) else _kind(mode)
    if kind is not None:
        raise MicrotError(f"cannot write {path}: it is {kind}", fix)


def check_dir_target(path: Path, fix: str = FIX_DIR) -> None:
    """Refuse an output folder path that exists and is not a folder (a file, a link, a device...)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        _check_parent(path, fix)
        return
    except NotADirectoryError:
        _check_parent(path, fix)
        raise  # pragma: no cover - _check_parent raised
    if not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else _kind(mode)
        raise MicrotError(f"cannot write the folder {path}: it is {kind}", fix)


def _check_parent(path: Path, fix: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder."""
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise MicrotError(f"cannot write {path}: {parent} is not a folder", fix)
        return


def _make_parent(path: Path, fix: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MicrotError(f"cannot write {path}: {path.parent} is not a folder", fix) from None
    except PermissionError:
        raise MicrotError(f"cannot write {path}: permission denied", "choose a folder you can write") from None


def write_bytes(path: Path, data: bytes, *, fix: str = FIX_FILE) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    Refuses (MicrotError) a target that is a symbolic link, device, FIFO, socket or folder."""
    path = Path(path)
    check_file_target(path, fix)
    _make_parent(path, fix)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError:
        raise MicrotError(f"cannot write {path}: permission denied", "choose a folder you can write") from None
    tmp = Path(name)
    _temporaries.add(tmp)
    try:
        try:
            mode = os.stat(path).st_mode & 0o7777  # an existing file keeps its permissions
        except OSError:
            mode = 0o666 & ~_umask()  # mkstemp creates 0600; a new file gets the umask's
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        check_file_target(path, fix)  # what appeared there meanwhile is not replaced either
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _temporaries.discard(tmp)


def write_text(path: Path, text: str, *, fix: str = FIX_FILE) -> None:
    """Text variant of :func:`write_bytes` (UTF-8)."""
    write_bytes(path, text.encode("utf-8"), fix=fix)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_dir(final: Path, *, fix: str = FIX_DIR) -> Iterator[Path]:
    """Yield a temporary folder next to ``final``; on success it replaces ``final`` whole.

    On any exception (a signal's included) the temporary folder is removed and ``final`` is left as
    it was. Refuses a ``final`` that exists and is not a folder (a file, link, device...)."""
    final = Path(final)
    check_dir_target(final, fix)
    _make_parent(final, fix)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    _temporaries.add(tmp)
    try:
        tmp.chmod(0o777 & ~_umask())
        yield tmp
        check_dir_target(final, fix)
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _temporaries.discard(tmp)


def swap_in(tmp: Path, final: Path) -> None:
    """Put folder ``tmp`` at ``final``; the old ``final`` (if any) is deleted. With renameat2's
    exchange there is no moment without a ``final``; elsewhere two renames (SIGINT / SIGTERM /
    SIGHUP held back between them) and a ``.<name>.old`` that :func:`remove_stale` puts back if the
    process is killed between them."""
    with _signals_deferred():
        exchanged = final.exists() and _exchange(tmp, final)
        if not exchanged:
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
    if exchanged:
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
    else:
        shutil.rmtree(final.with_name(f".{final.name}.old"), ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM / SIGHUP back while the block runs (they are delivered after it)."""
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def temporaries() -> list[Path]:
    """The temporary files and folders this process has not renamed into place yet."""
    return sorted(_temporaries)


def remove_temporaries() -> None:
    """Delete this process's temporaries (the signal handler calls it before exiting)."""
    for tmp in list(_temporaries):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()
        _temporaries.discard(tmp)


# .<name>.<8 random>.tmp (mkstemp/mkdtemp), .<name>.tmp (a build's image), .<name>.tmp.png (a plot)
_STALE = re.compile(r"^\..+(\.[A-Za-z0-9_]{8}\.tmp|\.tmp|\.tmp\.png)$")
_OLD = re.compile(r"^\.(.+)\.old$")
_SKIP = {".pio", ".git", "data", ".venv", "node_modules"}


def remove_stale(root: Path, depth: int = 3) -> list[Path]:
    """Delete what killed commands left in the project folder ``root`` (``depth`` levels down): their
    temporaries, and ``.<name>.old`` folders (put back as ``<name>`` where that is missing). Only
    call it while holding the project lock. Returns what it removed or restored."""
    found: list[Path] = []
    root = Path(root)

    def walk(folder: Path, level: int) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            path = Path(entry.path)
            if path in _temporaries:
                continue
            old = _OLD.match(entry.name)
            if old and entry.is_dir(follow_symlinks=False):
                final = path.with_name(old[1])
                if not os.path.lexists(final):
                    os.replace(path, final)
                else:
                    shutil.rmtree(path, ignore_errors=True)
                found.append(path)
            elif _STALE.match(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()
                found.append(path)
            elif level < depth and entry.is_dir(follow_symlinks=False) and entry.name not in _SKIP:
                walk(path, level + 1)

    walk(root, 1)
    return found
