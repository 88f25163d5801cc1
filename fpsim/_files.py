"""Safe output files: a path is checked before any work, and written atomically through a temporary file.

Invariant: fpsim only ever replaces a regular file (a symlink is followed to its target) or creates a new one;
devices, FIFOs, sockets and folders are refused, and an error names the user's path, never a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

_MAX_PATH = 4096  # PATH_MAX on Linux; longer names fail in the kernel with a less helpful message
_MAX_NAME = 255  # NAME_MAX: the longest single file or folder name


def check_output_path(path: str | os.PathLike, *, suffixes: Sequence[str] = (), argument: str = "path") -> Path:
    """The resolved target of an output path that fpsim may write; `ValueError` naming `argument` otherwise.

    `suffixes` (e.g. ``(".png", ".svg")``) restricts the extension; an empty tuple allows any. The folder is
    probed by creating (and removing) a file, since `os.access` cannot see read-only mounts and says yes to root.
    """
    text = _path_text(path, argument)
    if suffixes and Path(text).suffix.lower() not in suffixes:
        raise ValueError(f"{argument} must end in {', '.join(suffixes)}; got {text!r}")
    target = Path(os.path.realpath(text))  # a symlink is written through, to the file it names
    mode = _mode(target, text, argument)
    if mode is not None:
        _check_replaceable(mode, text, argument)
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"{argument} {text!r}: the folder {str(folder)!r} does not exist; create it first")
    _probe_folder(folder, text, argument)
    return target


def make_folder(path: str | os.PathLike, argument: str, *, advice: str = "name a folder") -> Path:
    """The folder at `path`, created with its parents if missing; `ValueError` naming `argument` where `path` is a
    file (the message ends with `advice`) or the folder cannot be created."""
    text, folder = str(path), Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{argument} {text!r} is a file: {advice}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{argument} {text!r}: cannot create the folder ({err.strerror})") from None
    return folder


def _path_text(path: object, argument: str) -> str:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{argument} must be a file path (str or os.PathLike); got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{argument} must be a text path, not bytes; got {text!r}")
    if not text.strip():
        raise ValueError(f"{argument} must name a file; got an empty path")
    if len(text) > _MAX_PATH or any(len(part) > _MAX_NAME for part in Path(text).parts):
        raise ValueError(
            f"{argument} is too long ({len(text)} characters; at most {_MAX_PATH}, and {_MAX_NAME} per name): "
            "use a shorter file name"
        )
    return text


def _mode(target: Path, text: str, argument: str) -> int | None:
    """The file type and permission bits of the resolved target; None where no file exists yet."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ValueError(f"{argument} {text!r}: cannot inspect it ({err.strerror})") from None
    if stat.S_ISLNK(mode):  # realpath stops at a symlink only when the chain loops or runs too deep
        raise ValueError(f"{argument} {text!r} is a symlink loop: point it at a file, or name another file")
    return mode


def _check_replaceable(mode: int, text: str, argument: str) -> None:
    if stat.S_ISDIR(mode):
        raise ValueError(f"{argument} {text!r} is a folder: name a file inside it")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{argument} {text!r} is not a regular file (a device, FIFO or socket): name a file")
    if not mode & 0o222:  # a read-only file: root could replace it, but its owner asked for it to be kept
        raise ValueError(f"{argument} {text!r} is read-only: make it writable (chmod u+w) or name another file")


def _probe_folder(folder: Path, text: str, argument: str) -> None:
    """Create and remove a temporary file: os.access cannot see read-only mounts or virtual file systems."""
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".fpsim-probe-")
    except OSError as err:
        raise ValueError(f"{argument} {text!r}: cannot create files in {str(folder)!r} ({err.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO], None],
    *,
    binary: bool = False,
    suffixes: Sequence[str] = (),
    argument: str = "path",
) -> Path:
    """Call `write(file)` on a temporary file beside the target, then rename it over the target.

    The path is checked again (as `check_output_path`), since it may have changed since the first check. On any
    failure (a full disk, Ctrl-C) the temporary file is removed and the target is left as it was; an `OSError`
    then names the user's path.
    """
    target = check_output_path(path, suffixes=suffixes, argument=argument)
    existing = target.stat() if target.exists() else None
    handle, temporary = _create_beside(target)
    try:
        with os.fdopen(handle, "wb") if binary else os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        _keep_ownership(temporary, existing)
        os.replace(temporary, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):  # Ctrl-C may land after the rename
            os.unlink(temporary)
        if isinstance(err, OSError):  # name the user's path, not the temporary file
            raise OSError(err.errno, f"cannot write {os.fspath(path)!r}: {err.strerror or err}") from None
        raise
    return target


def _create_beside(target: Path) -> tuple[int, str]:
    """A new, empty file in target's folder, opened for writing, with the permissions a new file gets there:
    0o666 less the umask (and any default ACL), as the kernel applies them. mkstemp would make it 0o600."""
    for _ in range(100):
        temporary = str(target.parent / f".fpsim-{secrets.token_hex(6)}{target.suffix}")
        with contextlib.suppress(FileExistsError):  # a name taken by chance: draw another
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {str(target)!r}")


def _keep_ownership(temporary: str, existing: os.stat_result | None) -> None:
    """Give the new file the replaced file's permissions (and owner, when root writes); a new file keeps the
    permissions it was created with."""
    if existing is None:
        return
    os.chmod(temporary, stat.S_IMODE(existing.st_mode))
    if os.geteuid() == 0:
        os.chown(temporary, existing.st_uid, existing.st_gid)
