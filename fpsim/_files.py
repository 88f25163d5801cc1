"""Safe output files: a path is checked before any work, and written atomically through a temporary file.

Invariant: fpsim only ever replaces a regular file (a symlink is followed to its target) or creates a new one;
devices, FIFOs, sockets and folders are refused, and an error names the user's path, never a temporary file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

_MAX_PATH = 4096  # PATH_MAX on Linux; longer names fail in the kernel with a less helpful message


def check_output_path(path: str | os.PathLike, *, suffixes: Sequence[str] = (), argument: str = "path") -> Path:
    """The resolved target of an output path that fpsim may write; `ValueError` naming `argument` otherwise.

    `suffixes` (e.g. ``(".png", ".svg")``) restricts the extension; an empty tuple allows any.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{argument} must be a file path (str or os.PathLike); got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{argument} must name a file; got an empty path")
    if len(text) > _MAX_PATH or any(len(part) > 255 for part in Path(text).parts):
        raise ValueError(f"{argument} is too long ({len(text)} characters): use a shorter file name")
    if suffixes and Path(text).suffix.lower() not in suffixes:
        raise ValueError(f"{argument} must end in {', '.join(suffixes)}; got {text!r}")
    target = Path(os.path.realpath(text))  # a symlink is written through, to the file it names
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ValueError(f"{argument} {text!r} is a folder: name a file inside it")
        if not stat.S_ISREG(mode):
            raise ValueError(f"{argument} {text!r} is not a regular file (a device, FIFO or socket): name a file")
        if not os.access(target, os.W_OK):
            raise ValueError(f"{argument} {text!r} is not writable")
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"{argument} {text!r}: the folder {str(folder)!r} does not exist")
    _probe_folder(folder, text, argument)
    return target


def _probe_folder(folder: Path, text: str, argument: str) -> None:
    """Create and remove a temporary file: os.access cannot see read-only mounts or virtual file systems."""
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".fpsim-probe-")
    except OSError as err:
        raise ValueError(f"{argument} {text!r}: cannot create files in {str(folder)!r} ({err.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = False, argument: str = "path"
) -> Path:
    """Call `write(file)` on a temporary file beside the target, then rename it over the target.

    On any failure (a full disk, Ctrl-C) the temporary file is removed and the target is left as it was.
    """
    target = check_output_path(path, argument=argument)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644  # keep an existing file's permissions
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".fpsim-", suffix=target.suffix)
    try:
        with os.fdopen(handle, "wb" if binary else "w") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException as err:
        os.unlink(temporary)
        if isinstance(err, OSError):  # name the user's path, not the temporary file
            raise OSError(err.errno, f"cannot write {os.fspath(path)!r}: {err.strerror or err}") from None
        raise
    return target
