"""A report folder: markdown text and tables, PNG figures and one JSON record, as `demo`, `compare` and the
GPU check write them.

Invariant: the folder is checked before any work; every file in it is written atomically, and report.md only
links figures that were written.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from fpsim._files import atomic_write, check_output_path


def check_folder(path: str | os.PathLike, argument: str = "out") -> Path:
    """A folder fpsim may write a report into: an existing writable folder, or a new one whose parent exists."""
    if not isinstance(path, str | os.PathLike) or not os.fspath(path).strip():
        raise ValueError(f"{argument} must name a folder; got {path!r}")
    folder = Path(os.path.realpath(os.fspath(path)))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{argument} {os.fspath(path)!r} exists and is not a folder: name a folder")
    if not folder.exists() and not folder.parent.is_dir():
        raise ValueError(f"{argument} {os.fspath(path)!r}: its parent folder {str(folder.parent)!r} does not exist")
    probe_parent = folder if folder.exists() else folder.parent
    check_output_path(probe_parent / "report.md", argument=argument)  # can files be created there?
    return folder


def markdown_table(rows: list[dict]) -> str:
    """A markdown table with one column per key of the first row."""
    if not rows:
        return "_(no rows)_"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(row[h]) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def cell(value: object) -> str:
    """A table cell: floats to 4 significant digits (scientific beyond 10^4), booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 or not math.isfinite(value) else f"{value:.3e}"
    return "–" if value is None else str(value)


class Report:
    """Collects sections, figures and data, then writes `report.md` and `report.json` into `folder`."""

    def __init__(self, folder: str | os.PathLike, title: str, argument: str = "out") -> None:
        self.folder, self.title, self.argument = check_folder(folder, argument), title, argument
        self.parts: list[str] = []
        self.data: dict = {}

    def section(self, heading: str, text: str = "") -> None:
        self.parts.append(f"## {heading}\n\n{text}".rstrip() + "\n")

    def text(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def figure(self, name: str, figure, caption: str) -> Path:
        """Save a matplotlib Figure as NAME.png in the folder and link it with its caption."""
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f"{name}.png"
        atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110), binary=True)
        self.parts.append(f"![{caption}]({path.name})\n\n*{caption}*\n")
        return path

    def write(self) -> Path:
        """Write report.md and report.json; return the report.md path."""
        self.folder.mkdir(exist_ok=True)
        markdown = f"# {self.title}\n\n" + "\n".join(self.parts)
        atomic_write(self.folder / "report.json", lambda f: json.dump(self.data, f, indent=1, default=_jsonable))
        return atomic_write(self.folder / "report.md", lambda f: f.write(markdown))


def _jsonable(value: object) -> object:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a report's JSON")
