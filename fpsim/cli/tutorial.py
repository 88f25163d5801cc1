"""`fpsim tutorial`: list the tutorials, step through one in the terminal, or write one as a Jupyter notebook.

Invariant: the tutorial number, the options and the output folder are checked before the first cell runs; a cell
that raises (a failed check) is shown with its traceback and ends the command with exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from rich.text import Text

from fpsim import _terminal
from fpsim._files import check_output_path, make_folder
from fpsim.cli._common import LineFormatter, UsageError, show

DEFAULT_OUT = "tutorial_figures"


def cmd_tutorial(args: argparse.Namespace) -> None:
    from fpsim import tutorials

    if args.which == "list":
        _refuse(args, ("no_pause", "step", "out", "notebook"), "`fpsim tutorial list` takes no options")
        _list(tutorials.discover())
        return
    tutorial = tutorials.get(_number(args.which))
    if args.notebook is not None:
        _refuse(args, ("no_pause", "step", "out"), "--notebook writes a file and runs nothing")
        path = tutorials.write_notebook(tutorial, args.notebook, argument="--notebook")
        print(f"wrote {path}: open it with `jupyter lab {path}` (or VS Code, or any Jupyter)")
        return
    out = _out_folder(args.out if args.out is not None else f"{DEFAULT_OUT}/{tutorial.path.stem}")
    pause = args.step or (not args.no_pause and sys.stdin is not None and sys.stdin.isatty())
    try:
        finished = tutorials.step_through(tutorial, out, pause=pause)
    except tutorials.CellError as error:
        _terminal.console(sys.stderr).print(Text(error.report, style="red"))
        print(f"fpsim: tutorial {tutorial.number} stopped at cell {error.cell}: the error above", file=sys.stderr)
        raise SystemExit(1) from None
    if finished:
        print(f"Figures are in {out}")


def _refuse(args: argparse.Namespace, options: tuple[str, ...], why: str) -> None:
    given = [f"--{name.replace('_', '-')}" for name in options if getattr(args, name) not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)} does not apply here: {why}")


def _number(text: str) -> int:
    if not text.strip().isdigit():
        raise UsageError(
            f"TUTORIAL must be a tutorial's number or 'list'; got {text.strip()!r} (`fpsim tutorial list`)"
        )
    return int(text)


def _out_folder(text: str) -> Path:
    """The figure folder, created if needed, checked writable before any cell runs."""
    if not text.strip():
        raise UsageError("--out must name a folder for the figures; got an empty path")
    out = make_folder(text, "--out", advice="name a folder for the figures").resolve()
    check_output_path(out / "figure.png", argument="--out")
    return out


NEEDS_TORCH = "[needs torch]"


def _list(found: list) -> None:
    """One block per tutorial: number, title, time and [needs torch] where its code imports torch, then its goal
    indented under the title."""
    width = _terminal.console().width
    lines = []
    for tutorial in found:
        marker = f" {NEEDS_TORCH}" if tutorial.needs_torch else ""
        heading = f"{tutorial.number:>2}. {tutorial.title} (about {tutorial.minutes} min){marker}"
        lines.append(Text(heading, style="bold"))
        goal = tutorial.goal[:1].upper() + tutorial.goal[1:]
        lines.extend(
            Text(line)
            for line in textwrap.wrap(
                goal, width - 4, initial_indent=" " * 4, subsequent_indent=" " * 4, break_on_hyphens=False
            )
        )
    hints = ["`fpsim tutorial N` steps through tutorial N; `fpsim tutorial N --notebook` writes it for Jupyter."]
    if any(tutorial.needs_torch for tutorial in found):
        hints.append(f"Tutorials marked {NEEDS_TORCH} import torch: pip install 'fpsim[torch]' first.")
    show(*lines, Text(""), *map(Text, hints))
    print()


def register(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "tutorial",
        help="step through a tutorial in the terminal, or write it as a Jupyter notebook",
        description="Without TUTORIAL (or with 'list'): the tutorials, with their goal and time. With a number: "
        "step through that tutorial cell by cell: text rendered, each code cell shown and run, its output and "
        "figures shown (figures saved in --out). Enter goes on, b goes back one cell (shown again, not run "
        "again), q quits. Without a terminal on stdin it runs straight through; --step pauses anyway (reading "
        "the keys from stdin). A failed check in a cell stops the tutorial with exit code 1.",
        epilog="Tutorials come with fpsim; FPSIM_TUTORIALS_DIR=FOLDER reads them from FOLDER instead.",
        formatter_class=LineFormatter,
    )
    command.add_argument("which", nargs="?", default="list", metavar="TUTORIAL", help="a number, or list (default)")
    pacing = command.add_mutually_exclusive_group()
    pacing.add_argument("--no-pause", action="store_true", help="run every cell without waiting for a key")
    pacing.add_argument("--step", action="store_true", help="wait for a key after each cell even without a terminal")
    command.add_argument(
        "--out", "-o", metavar="DIR", help=f"folder for the figures (default: {DEFAULT_OUT}/NN_name, created if needed)"
    )
    command.add_argument(
        "--notebook",
        nargs="?",
        const=".",
        metavar="DIR",
        help="write the tutorial as a Jupyter notebook NN_name.ipynb into DIR (default: here; an existing folder, or "
        "a name without a suffix, created if needed), or to DIR itself when it ends in .ipynb",
    )
    command.set_defaults(run=cmd_tutorial)
