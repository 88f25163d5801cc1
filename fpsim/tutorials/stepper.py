"""Stepping through a tutorial in the terminal: each cell shown, code run in one namespace, figures saved.

Invariant: every code cell runs at most once, in file order, in one shared namespace; going back (`b`) shows a
cell and the output it gave again without running anything, so the namespace always matches the cells run.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.markdown import Markdown
from rich.rule import Rule
from rich.syntax import Syntax
from rich.text import Text

from fpsim._files import atomic_write
from fpsim._terminal import console as make_console
from fpsim._terminal import print_unpadded
from fpsim.tutorials.source import Cell, Tutorial

__all__ = ["OUT_VARIABLE", "CellError", "step_through"]

OUT_VARIABLE = "FPSIM_TUTORIAL_OUT"  # the folder a tutorial saves its figures in (its `OUT`)
KEYS = "Enter: next · b: back · q: quit"


class CellError(Exception):
    """A code cell raised: `cell` is its 1-based position, `report` the readable traceback (the cell's frames)."""

    def __init__(self, cell: int, report: str) -> None:
        super().__init__(report)
        self.cell, self.report = cell, report


@dataclass
class _Shown:
    """What a cell printed, and the figure files written while it ran."""

    output: str = ""
    figures: list[Path] = field(default_factory=list)


def step_through(
    tutorial: Tutorial,
    out: Path,
    *,
    pause: bool,
    keys: IO[str] | None = None,
    file: IO[str] | None = None,
) -> bool:
    """Show and run the cells of `tutorial`, saving figures in `out` (an existing folder). With `pause`, wait after
    each cell for a line from `keys` (default stdin): empty to go on, `b` to go back one cell, `q` to quit; the
    end of input quits. True when the last cell was reached; CellError when a cell raised."""
    keys = keys if keys is not None else sys.stdin
    screen = make_console(file)
    namespace: dict[str, object] = {"__name__": "__main__"}
    shown: list[_Shown] = []  # one per cell run so far
    position, count = 0, len(tutorial.cells)
    minutes = f"about {tutorial.minutes} minute{'s' if tutorial.minutes != 1 else ''}"
    print_unpadded(screen, Rule(f"Tutorial {tutorial.number}. {tutorial.title} · {minutes}"))
    with _figures_to(out):
        while position < count:
            cell = tutorial.cells[position]
            _show_cell(screen, cell, position, count)
            if position < len(shown):  # run before: show what it gave, run nothing
                screen.print(Text("(shown again, not run again)", style="dim"))
                _replay(screen, shown[position])
            elif cell.kind == "code":
                shown.append(_run(cell, position, tutorial, namespace, out, screen))
            else:
                shown.append(_Shown())
            if not pause:
                position += 1
                continue
            key = _ask(screen, keys, position, count)
            if key == "q":
                screen.print(
                    f"Stopped at cell {position + 1} of {count}: `fpsim tutorial {tutorial.number}` starts again."
                )
                return False
            if key == "b" and position == 0:
                screen.print(Text("This is the first cell.", style="dim"))
            position = max(position - 1, 0) if key == "b" else position + 1
    screen.print(Rule(f"End of tutorial {tutorial.number}: every cell ran and every check passed"))
    return True


def _ask(screen: Console, keys: IO[str], position: int, count: int) -> str:
    """The next valid key: '' (Enter), 'b' or 'q'; 'q' at the end of input."""
    while True:
        screen.print(Text(f"[{position + 1}/{count}] {KEYS} › ", style="bold"), end="")
        screen.file.flush()
        line = keys.readline()
        if not line:  # the end of input (Ctrl-D, or piped input that ran out)
            screen.print()
            return "q"
        key = line.strip().lower()
        if not (hasattr(keys, "isatty") and keys.isatty()):  # piped keys are not echoed: show what was read
            screen.print(Text(key or "(Enter)", style="dim"))
        if key in ("", "b", "q"):
            return key
        screen.print(f"Unknown key {key!r}: press {KEYS}")


def _show_cell(screen: Console, cell: Cell, position: int, count: int) -> None:
    label = "solution" if cell.is_solution else cell.kind
    screen.print()
    screen.print(Rule(f"cell {position + 1}/{count} · {label} · line {cell.line}", align="left", style="dim"))
    if cell.kind == "markdown":
        print_unpadded(screen, Markdown(cell.source) if _styled(screen) else Text(cell.source))
    else:
        print_unpadded(
            screen,
            Syntax(
                cell.source,
                "python",
                line_numbers=True,
                start_line=cell.line,
                word_wrap=True,
                background_color="default",
            ),
        )


def _styled(screen: Console) -> bool:
    """Whether the screen shows styles. Without them (piped, NO_COLOR) rendered markdown would lose what marks a
    heading or `code`, so the markdown is shown as written: `#` headings, backticks and asterisks stay visible."""
    return screen.color_system is not None and not screen.no_color


def _replay(screen: Console, shown: _Shown) -> None:
    screen.file.write(shown.output)
    _list_figures(screen, shown.figures)


def _list_figures(screen: Console, figures: list[Path]) -> None:
    for path in figures:
        screen.print(Text(f"figure saved: {path}", style="green"))


def _run(cell: Cell, position: int, tutorial: Tutorial, namespace: dict, out: Path, screen: Console) -> _Shown:
    """Run one code cell; its output goes to the screen as it is printed and is also kept for `b`."""
    before = _files_in(out)
    screen.file.flush()
    with _tee(screen.file) as record:
        try:
            body, last = _compile(cell, tutorial.path)
            exec(body, namespace)
            value = eval(last, namespace) if last is not None else None
        except Exception as error:
            raise CellError(position + 1, _report(error, tutorial.path, position + 1)) from None
        if value is not None:
            _display(value)
    figures = sorted(path for path, stamp in _files_in(out).items() if before.get(path) != stamp)
    if not figures:
        figures = _save_unsaved(value, out, f"{tutorial.number:02d}-cell{position + 1}")
    _close_pyplot_figures()  # as Jupyter's inline backend does after each cell: none spills into the next one
    _list_figures(screen, figures)
    return _Shown(record.getvalue(), figures)


def _compile(cell: Cell, path: Path) -> tuple[object, object | None]:
    """The cell's statements, and its last bare expression apart (shown like a notebook's Out); compiled with the
    file's name and line numbers, so tracebacks quote the tutorial."""
    tree = ast.parse("\n" * (cell.line - 1) + cell.source, filename=str(path))  # the cell's lines where they are
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), str(path), "eval")
    return compile(tree, str(path), "exec"), last


def _display(value: object) -> None:
    """A cell's value as a notebook shows it, onto the cell's (kept) output: rich renderables rendered, figures
    left to the figure list, anything else by its repr."""
    from matplotlib.figure import Figure

    if isinstance(value, Figure):
        return
    shown = value if hasattr(value, "__rich_console__") or hasattr(value, "__rich__") else Text(repr(value))
    make_console(sys.stdout).print(shown)


def _save_unsaved(value: object, out: Path, stem: str) -> list[Path]:
    """Figures a notebook would show but the cell did not save: its Figure value, and pyplot figures it left
    open (Jupyter's inline backend shows those); saved as STEM[-k].png."""
    from matplotlib.figure import Figure

    figures = _pyplot_figures()
    if isinstance(value, Figure) and value not in figures:
        figures.append(value)
    names = [f"{stem}.png"] if len(figures) == 1 else [f"{stem}-{k}.png" for k in range(1, len(figures) + 1)]
    return [
        atomic_write(out / name, lambda file, figure=figure: figure.savefig(file, format="png"), binary=True)
        for figure, name in zip(figures, names)
    ]


def _pyplot_figures() -> list:
    """The figures pyplot holds open; none when the tutorial never imported pyplot (nor is it imported here)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    return [pyplot.figure(number) for number in pyplot.get_fignums()] if pyplot else []


def _close_pyplot_figures() -> None:
    if pyplot := sys.modules.get("matplotlib.pyplot"):
        pyplot.close("all")


def _files_in(out: Path) -> dict[Path, int]:
    """Each file under `out` and its modification time, to see which ones a cell wrote."""
    return {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}


def _report(error: Exception, path: Path, cell: int) -> str:
    """The traceback from the cell's own frame on (the stepper's frames are not the learner's business)."""
    trace = error.__traceback__
    while trace is not None and trace.tb_frame.f_code.co_filename != str(path):
        trace = trace.tb_next
    lines = traceback.format_exception(type(error), error, trace)
    report = f"Cell {cell} failed ({type(error).__name__}):\n" + "".join(lines).rstrip()
    if isinstance(error, ModuleNotFoundError) and error.name:  # e.g. torch, for tutorials 5, 8, 9 and 10
        top = error.name.split(".")[0]
        install = "pip install 'fpsim[torch]'" if top == "torch" else f"pip install {top}"
        report += f"\nThis tutorial needs {top}: {install}, then run it again."
    return report


@contextlib.contextmanager
def _figures_to(out: Path) -> Iterator[None]:
    """Matplotlib switched to Agg (figures go to files, no window opens), and the tutorial's OUT set to `out`
    until the end (then restored)."""
    import matplotlib

    saved_out = os.environ.get(OUT_VARIABLE)
    matplotlib.use("Agg")
    os.environ[OUT_VARIABLE] = str(out)
    try:
        yield
    finally:
        if saved_out is None:
            os.environ.pop(OUT_VARIABLE, None)
        else:
            os.environ[OUT_VARIABLE] = saved_out
        _close_pyplot_figures()


class _Tee(io.TextIOBase):
    """Writes go to `target` at once and are also kept in `kept` (shared by a cell's stdout and stderr)."""

    def __init__(self, target: IO[str], kept: io.StringIO) -> None:
        self.target, self.kept = target, kept

    def write(self, text: str) -> int:
        self.kept.write(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:  # rich sizes and colours what a cell prints as it would on the screen
        return self.target.isatty()

    @property
    def encoding(self) -> str:
        return getattr(self.target, "encoding", None) or "utf-8"

    def fileno(self) -> int:  # for code that hands sys.stdout to a subprocess: its output is shown, not kept
        return self.target.fileno()


@contextlib.contextmanager
def _tee(screen_file: IO[str]) -> Iterator[io.StringIO]:
    """A cell's stdout onto the screen, its stderr onto stderr, both kept (in the order written) for `b`."""
    kept = io.StringIO()
    out, err = _Tee(screen_file, kept), _Tee(sys.stderr, kept)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield kept
    out.flush()
    err.flush()
