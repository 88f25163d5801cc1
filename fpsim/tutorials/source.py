"""Tutorial files: Jupytext percent scripts read into a title, a goal, a time and a list of cells.

Invariant: a tutorial is accepted only with the contract's header (the jupytext block, then a first markdown cell
`# N. Title`, `*Goal:* ...`, `*Time:* about M minutes`, N equal to its file's number); each cell remembers the
file line its source starts on, so tracebacks and listings point into the file.
"""

from __future__ import annotations

import ast
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["FOLDER_VARIABLE", "Cell", "Tutorial", "discover", "folder", "get", "load"]

FOLDER_VARIABLE = "FPSIM_TUTORIALS_DIR"  # read tutorials from this folder instead of the bundled ones
HEADER = (
    "# ---",
    "# jupyter:",
    "#   jupytext:",
    "#     text_representation:",
    "#       extension: .py",
    "#       format_name: percent",
)
_FILE_NAME = re.compile(r"(\d\d)_(\w+)\.py")
_MARKER = re.compile(r"# %%(?P<title>[^\[]*)(?:\[(?P<kind>\w+)\])?(?P<options>.*)")
_TITLE = re.compile(r"# (?P<number>\d+)\. (?P<title>\S.*)")
_GOAL = re.compile(r"\*Goal:\* *(?P<goal>\S.*)")
_TIME = re.compile(r"\*Time:\* *about (?P<minutes>\d+) minutes?")
_MARKDOWN_KINDS = ("markdown", "md")


@dataclass(frozen=True)
class Cell:
    """One cell: its kind, its source (markdown without the comment prefix), and the file line it starts on."""

    kind: Literal["markdown", "code"]
    source: str
    line: int

    @property
    def is_solution(self) -> bool:
        """A code cell holding an exercise's solution (it opens with `# Solution`)."""
        return self.kind == "code" and self.source.startswith("# Solution")


@dataclass(frozen=True)
class Tutorial:
    """A tutorial file: its number, slug, title, one-line goal, time in minutes and cells."""

    number: int
    slug: str
    title: str
    goal: str
    minutes: int
    path: Path
    cells: tuple[Cell, ...]

    @property
    def needs_torch(self) -> bool:
        """Whether a code cell imports torch (or fpsim.torch, which needs it): the tutorial cannot run without it."""
        return any(_imports_torch(cell.source) for cell in self.cells if cell.kind == "code")


def _imports_torch(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a broken cell imports nothing; running it shows the error where it is
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        if any(name == "torch" or name.startswith(("torch.", "fpsim.torch")) for name in names):
            return True
    return False


def folder() -> Path:
    """Where the tutorials are: $FPSIM_TUTORIALS_DIR if set, else the installed copy (fpsim/_tutorials in a
    wheel), else the checkout's top-level tutorials/ (an editable install)."""
    chosen = os.environ.get(FOLDER_VARIABLE)
    if chosen is not None:
        if not Path(chosen).is_dir():
            raise ValueError(f"{FOLDER_VARIABLE}={chosen!r} is not a folder: unset it, or name a folder of tutorials")
        return Path(chosen)
    package = Path(__file__).resolve().parent.parent
    installed = package / "_tutorials"
    return installed if installed.is_dir() else package.parent / "tutorials"


def discover(where: str | os.PathLike | None = None) -> list[Tutorial]:
    """Every tutorial file (NN_slug.py) in `where` (default: `folder()`), by number."""
    base = Path(where) if where is not None else folder()
    found = sorted((load(path) for path in base.glob("[0-9][0-9]_*.py")), key=lambda t: t.number)
    for before, after in itertools.pairwise(found):
        if before.number == after.number:
            raise ValueError(f"two tutorials are number {after.number}: {before.path.name} and {after.path.name}")
    return found


def get(number: int, where: str | os.PathLike | None = None) -> Tutorial:
    """Tutorial `number`; ValueError listing the numbers there are."""
    found = discover(where)
    for tutorial in found:
        if tutorial.number == number:
            return tutorial
    numbers = ", ".join(str(t.number) for t in found) or "none: the tutorials folder is empty"
    raise ValueError(f"there is no tutorial {number}; the tutorials are {numbers} (`fpsim tutorial list`)")


def load(path: str | os.PathLike) -> Tutorial:
    """Read one tutorial file; ValueError naming the file and the part of the contract it breaks."""
    path = Path(path)
    name = _FILE_NAME.fullmatch(path.name)
    if name is None:
        raise ValueError(f"tutorial file {path.name!r} must be named NN_slug.py (two digits, e.g. 03_rounding.py)")
    lines = path.read_text(encoding="utf-8").splitlines()
    cells = tuple(parse_cells(lines, path))
    title, goal, minutes = _header(cells, path)
    if int(title["number"]) != int(name[1]):
        raise ValueError(f"{path.name}: its title says tutorial {title['number']}, its file name {int(name[1])}")
    return Tutorial(int(name[1]), name[2], title["title"].strip(), goal, minutes, path, cells)


def parse_cells(lines: list[str], path: Path) -> list[Cell]:
    """The cells of a percent script after its jupytext header: `# %%` opens a code cell, `# %% [markdown]` a
    markdown cell whose lines lose their `# ` prefix. Text before the first marker is a code cell."""
    start = _after_header(lines, path)
    cells: list[Cell] = []
    kind, first, body = "code", start, []
    for number, line in enumerate(lines[start:], start + 1):
        marker = _MARKER.fullmatch(line.rstrip())
        if marker is None:
            body.append(line)
            continue
        cells.extend(_cell(kind, first, body))
        kind, first, body = ("markdown" if marker["kind"] in _MARKDOWN_KINDS else "code"), number, []
    cells.extend(_cell(kind, first, body))
    return cells


def _after_header(lines: list[str], path: Path) -> int:
    """The index of the first line after the jupytext header block, which must open the file."""
    if tuple(line.rstrip() for line in lines[: len(HEADER)]) != HEADER:
        raise ValueError(
            f"{path.name} must start with the jupytext header block ({' / '.join(HEADER)} ... # ---): "
            "`jupytext --set-formats py:percent` writes it"
        )
    end = next((i for i in range(len(HEADER), len(lines)) if lines[i].rstrip() == "# ---"), None)
    if end is None:
        raise ValueError(f"{path.name}: the jupytext header block has no closing '# ---' line")
    return end + 1


def _cell(kind: str, marker_line: int, body: list[str]) -> list[Cell]:
    """The cell of a marker (the file's line number `marker_line`) and its body; none when the body is blank."""
    if kind == "markdown":
        body = [_uncomment(line) for line in body]
    leading = next((i for i, line in enumerate(body) if line.strip()), None)
    if leading is None:
        return []
    trailing = max(i for i, line in enumerate(body) if line.strip())
    return [Cell(kind, "\n".join(body[leading : trailing + 1]), marker_line + leading + 1)]


def _uncomment(line: str) -> str:
    """A markdown line as written in the notebook: without its `# ` (or a lone `#`)."""
    if line.startswith("# "):
        return line[2:]
    return "" if line.rstrip() == "#" else line


def _header(cells: tuple[Cell, ...], path: Path) -> tuple[re.Match, str, int]:
    """The title match, goal and minutes of the first cell, which must be markdown."""
    if not cells or cells[0].kind != "markdown":
        raise ValueError(f"{path.name}: the first cell must be markdown: '# N. Title', '*Goal:* ...', '*Time:* ...'")
    lines = [line.strip() for line in cells[0].source.splitlines()]
    title = _TITLE.fullmatch(lines[0])
    if title is None:
        raise ValueError(f"{path.name}: the first markdown line must be '# N. Title'; got {lines[0]!r}")
    goal = _goal(lines)
    minutes = next((int(m["minutes"]) for m in map(_TIME.fullmatch, lines) if m), None)
    if goal is None or minutes is None:
        raise ValueError(f"{path.name}: the first cell needs a line '*Goal:* ...' and a line '*Time:* about M minutes'")
    return title, goal, minutes


def _goal(lines: list[str]) -> str | None:
    """The `*Goal:*` paragraph, its lines joined: it runs to a blank line or the `*Time:*` line."""
    start = next((i for i, line in enumerate(lines) if _GOAL.fullmatch(line)), None)
    if start is None:
        return None
    paragraph = [_GOAL.fullmatch(lines[start])["goal"]]
    for line in lines[start + 1 :]:
        if not line or _TIME.fullmatch(line):
            break
        paragraph.append(line)
    return " ".join(paragraph)
