"""A report folder: markdown text and tables, PNG figures and one JSON record, as `demo`, `compare` and the
GPU check write them.

Invariant: the folder and every file the report will write in it (declared up front) are checked before any
work; each file is written atomically, and report.md only links figures that were written.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from fpsim._files import atomic_write, check_output_path


def check_folder(path: str | os.PathLike, argument: str = "--out", files: Sequence[str] = ("report.md",)) -> Path:
    """A folder fpsim may write a report into: an existing writable folder, or a new one whose parent exists.

    Each of `files` that already exists in it must be a file fpsim may replace (a writable regular file, or a
    symlink to one): a folder of that name is refused now, not after the work that would have filled it.
    """
    if not isinstance(path, str | os.PathLike) or not os.fspath(path).strip():
        raise ValueError(f"{argument} must name a folder; got {path!r}")
    folder = Path(os.path.realpath(os.fspath(path)))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{argument} {os.fspath(path)!r} exists and is not a folder: name a folder")
    if not folder.exists() and not folder.parent.is_dir():
        raise ValueError(f"{argument} {os.fspath(path)!r}: its parent folder {str(folder.parent)!r} does not exist")
    for name in files if folder.exists() else ():
        problem = _replace_problem(folder / name)
        if problem:
            raise ValueError(
                f"{argument} {os.fspath(path)!r} holds {name!r}, which {problem}, but the report writes a file of "
                f"that name there: move it away or choose another {argument}"
            )
    probe_parent = folder if folder.exists() else folder.parent
    check_output_path(probe_parent / "report.md", argument=argument)  # can files be created there?
    return folder


def _replace_problem(entry: Path) -> str | None:
    """Why fpsim could not replace an existing entry by a file; None where it can, or where nothing is there."""
    try:
        mode = os.stat(entry).st_mode  # follows symlinks: a link to a file is written through
    except FileNotFoundError:
        return None
    except OSError as err:  # a symlink loop, say
        return f"cannot be inspected ({err.strerror})"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    return None if mode & 0o222 else "is read-only"  # a read-only file: its owner asked for it to be kept


def markdown_table(rows: list[dict]) -> str:
    """A markdown table with one column per key of the first row; every cell on one line, `|` escaped."""
    if not rows:
        return "_(no rows)_"
    headers = list(rows[0])
    lines = ["| " + " | ".join(map(_markdown_cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(row[h]) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def _markdown_cell(value: object) -> str:
    """`cell` made safe inside a markdown table row: a line break or a bare `|` would end the row or the cell."""
    return " ".join(cell(value).split()).replace("|", "\\|")


def cell(value: object) -> str:
    """A table cell: floats to 4 significant digits (scientific beyond 10^4), booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 or not math.isfinite(value) else f"{value:.3e}"
    return "–" if value is None else str(value)


class Report:
    """Collects sections, figures and data, then writes `report.md`, `report.json` and the figures (NAME.png,
    for each of `figures`, declared up front so that their paths are checked too) into `folder`.

    `argument` names the user's option for the folder in error messages.
    """

    def __init__(
        self, folder: str | os.PathLike, title: str, argument: str = "--out", figures: Sequence[str] = ()
    ) -> None:
        self.figures = tuple(figures)
        files = ("report.md", "report.json", *(f"{name}.png" for name in self.figures))
        self.folder, self.title, self.argument = check_folder(folder, argument, files), title, argument
        self.parts: list[str] = []
        self.data: dict = {}

    def section(self, heading: str, text: str = "") -> None:
        self.parts.append(f"## {heading}\n\n{text}".rstrip() + "\n")

    def text(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def figure(self, name: str, figure, caption: str) -> Path:
        """Save a matplotlib Figure as NAME.png in the folder (NAME: one of the figures declared) and link it."""
        if name not in self.figures:
            raise ValueError(f"figure {name!r} was not declared: pass it in Report(figures=...) so it is checked first")
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f"{name}.png"
        save = lambda file: figure.savefig(file, format="png", dpi=110)  # noqa: E731
        atomic_write(path, save, binary=True, argument=self.argument)
        self.parts.append(f"![{caption}]({path.name})\n\n*{caption}*\n")
        return path

    def write(self) -> Path:
        """Write report.md and report.json; return the report.md path."""
        self.folder.mkdir(exist_ok=True)
        markdown = f"# {self.title}\n\n" + "\n".join(self.parts)
        data = json.dumps(self.data, indent=1, default=_jsonable)
        atomic_write(self.folder / "report.json", lambda f: f.write(data), argument=self.argument)
        return atomic_write(self.folder / "report.md", lambda f: f.write(markdown), argument=self.argument)


def _jsonable(value: object) -> object:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a report's JSON")
