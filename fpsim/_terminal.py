"""Terminal output through rich: one console, tables and progress for the CLI, demo and tutorials.

Invariant: colour and live bars only on a terminal and never colour under NO_COLOR; piped output is plain text
at a fixed width, and piped progress is a plain line every tenth of the work.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import IO

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

_PIPE_WIDTH = 120  # piped or redirected output: wide enough for the tables, stable for tests and files


def console(file: IO[str] | None = None) -> Console:
    """A rich Console writing to `file` (default: the current sys.stdout), sized to the terminal when there is one."""
    stream = file if file is not None else sys.stdout
    interactive = _is_terminal(stream)
    return Console(
        file=stream,
        width=None if interactive else _PIPE_WIDTH,
        no_color="NO_COLOR" in os.environ,
        color_system="auto" if interactive else None,
        highlight=False,
        soft_wrap=False,
    )


def print_unpadded(screen: Console, *renderables: RenderableType) -> None:
    """Print the renderables one after another to `screen`, without the trailing spaces rich pads table cells,
    markdown and code to the full width with."""
    with screen.capture() as captured:
        screen.print(Group(*renderables))
    screen.file.write("\n".join(line.rstrip() for line in captured.get().split("\n")))


def percent(value: float, spec: str, least: float) -> str:
    """`value` (a percentage) as f"{value:{spec}}%", but a value in (0, least) as "<least%" (least written with
    `spec`): a share the format would round to 0 never reads as none."""
    return f"<{least:{spec}}%" if 0 < value < least else f"{value:{spec}}%"


def _is_terminal(stream: IO[str]) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def table(
    columns: Sequence[str], rows: Iterable[Sequence[object]], justify: Sequence[str] | None = None
) -> FittedTable:
    """A plain table: a bold header line, then one line per row; the first column left-aligned, the rest right
    (or as `justify` says, "left" or "right" per column).

    Cells are shown with `str`: format numbers before. Print it with `console().print(table(...))`. It fits the
    width it is printed at without hiding a character: see FittedTable.
    """
    return FittedTable(columns, rows, justify)


class FittedTable:
    """Rows under headers, fitted to the width at print time, never cutting a cell.

    Side by side where every word of every cell and header fits unbroken (they wrap at their spaces), the
    spare width going to the columns cheapest to put on one line; else one block per row (header, then value),
    values folding where even that is too wide.
    """

    _GAP = 2  # columns between two columns of a table without padding at its edges

    def __init__(
        self, columns: Sequence[str], rows: Iterable[Sequence[object]], justify: Sequence[str] | None = None
    ) -> None:
        self.columns = list(columns)
        self.rows = [[str(cell) for cell in row] for row in rows]
        self.justify = list(justify) if justify else ["left"] + ["right"] * (len(self.columns) - 1)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        texts = [[name, *(row[i] for row in self.rows)] for i, name in enumerate(self.columns)]
        widths = [max(len(word) for text in column for word in text.split() or [""]) for column in texts]
        spare = options.max_width - sum(widths) - self._GAP * (len(widths) - 1)
        if spare >= 0:
            yield self._side_by_side(self._widen(widths, [max(map(len, column)) for column in texts], spare))
        else:
            yield from self._stacked()

    @staticmethod
    def _widen(widths: list[int], naturals: list[int], spare: int) -> list[int]:
        """Spare width to the columns that wrap, the cheapest to put on one line first."""
        widths = list(widths)
        for cost, i in sorted((natural - width, i) for i, (natural, width) in enumerate(zip(naturals, widths))):
            if 0 < cost <= spare:
                widths[i] += cost
                spare -= cost
        return widths

    def _side_by_side(self, widths: list[int]) -> Table:
        grid = Table(box=None, pad_edge=False, header_style="bold")
        for name, width, justify in zip(self.columns, widths, self.justify):
            grid.add_column(name, justify=justify, overflow="fold", width=width)
        for row in self.rows:
            grid.add_row(*map(Text, row))  # Text: no cell is read as rich markup
        return grid

    def _stacked(self) -> Iterator[Table]:
        for index, row in enumerate(self.rows):
            block = Table(box=None, pad_edge=False, show_header=False)
            block.add_column(style="bold", overflow="fold")
            block.add_column(overflow="fold")
            for name, cell in zip(self.columns, row):
                block.add_row(Text(name), Text(cell))
            yield block if index == len(self.rows) - 1 else Group(block, Text(""))  # a blank line between rows


class _Rate(ProgressColumn):
    """Work done per second, in the progress's unit."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.3g} {self.unit}/s" if task.speed else f"? {self.unit}/s")


class StepProgress:
    """Progress of counted work on stderr: on a terminal, a rich bar per task with k/n, rate and ETA; piped, a
    plain line every tenth of a task's work (``[label] step k/n detail``); with `quiet`, nothing.

    Use as a context manager; `task(label, total)` returns the function to call with the work done so far.
    """

    def __init__(self, file: IO[str] | None = None, *, quiet: bool = False, unit: str = "step") -> None:
        self.file = file if file is not None else sys.stderr
        self.quiet, self.unit = quiet, unit
        self.bars: Progress | None = None
        if not quiet and _is_terminal(self.file):
            self.bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _Rate(unit),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
                console=console(self.file),
            )

    def __enter__(self) -> StepProgress:
        if self.bars:
            self.bars.start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.bars:
            self.bars.stop()

    def task(self, label: str, total: int) -> Callable[[int, str], None]:
        """The update function of one task of `total` units: call it as `update(done, detail)`."""
        if self.quiet:
            return lambda done, detail="": None
        if self.bars:
            bars, task_id = self.bars, self.bars.add_task(label, total=total, detail="")
            return lambda done, detail="": bars.update(task_id, completed=done, detail=detail)
        every = max(1, total // 10)

        def print_line(done: int, detail: str = "") -> None:
            if done % every == 0 or done == total:
                print(f"[{label}] {self.unit} {done}/{total} {detail}".rstrip(), file=self.file, flush=True)

        return print_line
