"""A tutorial as a Jupyter notebook (nbformat v4): its markdown and code cells, validated before it is written.

Invariant: the notebook holds the tutorial's cells in order, unexecuted, and is written atomically only after
nbformat has validated it; solution cells start collapsed (`source_hidden`), as the exercises ask.
"""

from __future__ import annotations

import os
from pathlib import Path

from fpsim._extras import MissingExtraError
from fpsim._files import atomic_write, check_output_path, make_folder
from fpsim.tutorials.source import Tutorial

__all__ = ["notebook", "notebook_path", "write_notebook"]

_KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}
# Tutorials draw on matplotlib Figures without pyplot; Jupyter shows a cell's Figure value as an image only once
# the inline backend is on (importing pyplot would switch it on, but is not something a tutorial needs).
_INLINE = "%matplotlib inline"


def _nbformat():
    try:
        import nbformat
    except ImportError:
        raise MissingExtraError(
            "writing a notebook needs nbformat: pip install 'fpsim[notebook]' (or pip install nbformat)",
            name="nbformat",
        ) from None
    return nbformat


def notebook(tutorial: Tutorial):
    """The tutorial as a validated nbformat v4 NotebookNode: its cells, with `%matplotlib inline` after the title
    so that figures show under the cells that return them."""
    nbformat = _nbformat()
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell(cell.source)
        if cell.kind == "markdown"
        else v4.new_code_cell(cell.source, metadata=_solution_metadata() if cell.is_solution else {})
        for cell in tutorial.cells
    ]
    cells.insert(1, v4.new_code_cell(_INLINE, metadata={"tags": ["setup"]}))  # after the title cell
    book = v4.new_notebook(cells=cells, metadata={"kernelspec": _KERNEL, "language_info": {"name": "python"}})
    nbformat.validate(book)
    return book


def _solution_metadata() -> dict:
    return {"jupyter": {"source_hidden": True}, "tags": ["solution"]}


def notebook_path(tutorial: Tutorial, where: str | os.PathLike, *, argument: str = "where") -> Path:
    """Where the notebook goes: `where` itself when it ends in .ipynb; NN_slug.ipynb inside `where` when that is an
    existing folder or a name without a suffix (a folder to create). Anything else (empty, or another suffix such
    as x.txt, which would be neither) is a ValueError naming `argument`."""
    if not str(where).strip():
        raise ValueError(f"{argument} must name a folder or a path ending in .ipynb; got an empty path")
    where = Path(where)
    if where.suffix.lower() == ".ipynb":
        return where
    if where.suffix and not where.is_dir():
        raise ValueError(
            f"{argument} {str(where)!r}: a notebook file must end in .ipynb; name a path ending in .ipynb, or a "
            "folder (an existing one, or a name without a suffix)"
        )
    return where / f"{tutorial.path.stem}.ipynb"


def write_notebook(tutorial: Tutorial, where: str | os.PathLike, *, argument: str = "where") -> Path:
    """Write the tutorial's notebook to `where` (see notebook_path), atomically; the path. nbformat and the path
    are checked before anything is created."""
    nbformat = _nbformat()
    path = notebook_path(tutorial, where, argument=argument)
    if path != Path(where):  # a folder: made if missing
        make_folder(where, argument, advice="name a folder, or a path ending in .ipynb")
    check_output_path(path, suffixes=(".ipynb",), argument=argument)
    book = notebook(tutorial)
    return atomic_write(path, lambda file: nbformat.write(book, file), suffixes=(".ipynb",), argument=argument)
