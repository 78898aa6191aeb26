"""Atomic writes: every file or folder ltxv produces is built under a hidden temporary name beside its target
(the same folder, so the rename is atomic and never crosses filesystems) and renamed into place only when
complete. Results get the mode a plain open()/mkdir() gives (0666 / 0777 minus the umask). Missing parent
folders are created, and removed again when the write fails. A bad target raises a one-line ValueError
naming the path and the fix."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_writable(path: str | os.PathLike[str], folder: bool = False) -> Path:
    """Fail now, not after a long computation, if `atomic_file(path)` (or `atomic_folder(path)` with
    folder=True) could not start: `path` names a folder (a new folder: anything there), a parent is a file,
    or nothing can be created there. A probe is created and removed; the file system is left as it was."""
    path = Path(path)
    tmp, created, _ = _begin(path, folder)
    (tmp.rmdir if folder else tmp.unlink)()
    _remove_empty(created)
    return path


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty hidden file beside `path` for the caller to fill (or replace); on success it gets the
    mode of a new file and replaces `path`, on any error it and the parent folders made for it are removed."""
    path = Path(path)
    tmp, created, mode = _begin(path, folder=False)
    try:
        yield tmp
        _set_mode(tmp, mode)  # writers that replace the file may leave it private (safetensors: 0600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_empty(created)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike[str], replace: bool = False) -> Iterator[Path]:
    """Yield a new empty hidden folder beside `path` to fill; on success it becomes `path`. An existing `path`
    is refused, unless replace=True and it is a folder: that one is then swapped out and deleted. On any
    error the temporary folder and the parent folders made for it are removed. Everything in it gets the
    mode of a new file or folder."""
    path = Path(path)
    tmp, created, mode = _begin(path, folder=True, replace=replace)
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            _set_mode(Path(root), mode)
            for name in files:
                _set_mode(Path(root, name), mode & 0o666)  # 0666 & ~umask == (0777 & ~umask) & 0666
        if path.is_dir():  # replace=True: swap, then delete the old one
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a UTF-8 text file (JSON, JSONL) atomically; returns its path."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _begin(path: Path, folder: bool, replace: bool = False) -> tuple[Path, list[Path], int]:
    """Refuse a bad target, make the missing parent folders, create the temporary file or folder beside
    `path`. Returns (temporary path, parent folders created (outermost first), the mode the system gave it:
    0666 or 0777 less the umask)."""
    if folder and path.exists() and not (replace and path.is_dir()):
        raise ValueError(f"cannot write {str(path)!r}: it already exists; give a new name or remove it")
    if not folder and path.is_dir():
        raise ValueError(
            f"cannot write {str(path)!r}: it is a folder; give a file name (inside it or elsewhere)"
        )
    created = _make_parents(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        if folder:
            tmp.mkdir(mode=0o777)  # the umask applies, as for any new folder
        else:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        _remove_empty(created)
        raise ValueError(
            f"cannot write {str(path)!r}: cannot create anything in {str(path.parent)!r} ({err.strerror}); "
            "choose another location"
        ) from None
    return tmp, created, tmp.stat().st_mode & 0o777


def _set_mode(path: Path, mode: int) -> None:
    if not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
        path.chmod(mode)


def _make_parents(path: Path) -> list[Path]:
    """Create the missing folders above `path`; returns them, outermost first."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(
            f"cannot write {str(path)!r}: {str(parent)!r} is a file, not a folder; choose another location"
        )
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o777)
        except FileExistsError:  # made meanwhile by someone else: not ours to remove
            continue
        except OSError as err:
            _remove_empty(created)
            raise ValueError(
                f"cannot write {str(path)!r}: cannot create the folder {str(folder)!r} ({err.strerror}); "
                "choose another location"
            ) from None
        created.append(folder)
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders made for a failed write, innermost first, keeping any that something else filled."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass
