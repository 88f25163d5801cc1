"""`fpsim tutorial`: the list, stepping (Enter, b, q from piped keys), running straight through, failed checks,
notebook export (validated, executed), bad input, and the tutorials inside a built wheel.

The stepping tests drive two small fixture tutorials (tests/tutorial_fixtures) whose cells print what they did,
so each key's effect shows in the output; the packaging tests use the real tutorials/ folder.
"""

import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from fpsim import tutorials
from fpsim.cli import main

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "tutorial_fixtures"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fixtures(monkeypatch):
    """The fixture tutorials in place of the real ones."""
    monkeypatch.setenv(tutorials.FOLDER_VARIABLE, str(FIXTURES))


def run(capsys, *argv, keys=None, monkeypatch=None):
    if keys is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(keys))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def shown_cells(out: str) -> list[int]:
    """The cells in the order the stepper showed them (from their 'cell k/n' rules)."""
    return [int(k) for k in re.findall(r"^cell (\d+)/\d+ ·", out, re.MULTILINE)]


# ---- the list --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [(), ("list",)])
def test_list_shows_each_tutorial_with_its_goal_and_time(capsys, fixtures, argv):
    code, out, err = run(capsys, "tutorial", *argv)
    assert code == 0 and not err
    assert " 1. Counting cells (about 1 min)\n    See that each code cell runs once, in one namespace." in out
    assert " 2. A failing check (about 2 min)\n    Show how a failed assert stops a tutorial." in out


TORCH_IMPORT = re.compile(r"^(import|from) (fpsim\.)?torch\b|^from fpsim import .*\btorch\b", re.MULTILINE)


def test_list_names_every_real_tutorial_and_marks_those_that_need_torch(capsys):
    """Titles, times and torch imports read from the files by regexes of this test's own, not by fpsim's parser."""
    code, out, _ = run(capsys, "tutorial", "list")
    files = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py"))
    assert code == 0 and files
    marked = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        number, title = re.search(r"^# # (\d+)\. (.+)$", text, re.MULTILINE).groups()
        minutes = re.search(r"^# \*Time:\* about (\d+) minutes", text, re.MULTILINE)[1]
        needs = " [needs torch]" if TORCH_IMPORT.search(text) else ""
        marked += bool(needs)
        assert f"\n{int(number):>2}. {title} (about {minutes} min){needs}\n" in f"\n{out}", path.name
    assert 0 < marked < len(files)  # both kinds are there: the marker tells them apart
    assert "Tutorials marked [needs torch] import torch: pip install 'fpsim[torch]' first." in out


def test_no_marker_and_no_hint_without_torch_imports(capsys, fixtures):
    _, out, _ = run(capsys, "tutorial", "list")
    assert "needs torch" not in out


def test_the_checkout_tutorials_are_found_without_any_setting(monkeypatch):
    monkeypatch.delenv(tutorials.FOLDER_VARIABLE, raising=False)
    assert tutorials.folder() == REPO / "tutorials"


def test_plain_fpsim_lists_the_tutorial_command(capsys):
    code, out, _ = run(capsys)
    assert code == 0 and re.search(r"^  tutorial +step through a tutorial", out, re.MULTILINE)


# ---- running straight through ----------------------------------------------------------------------------------


def test_no_pause_runs_every_cell_once_and_saves_figures(capsys, fixtures, tmp_path, monkeypatch):
    monkeypatch.delenv("FPSIM_TUTORIAL_OUT", raising=False)
    code, out, err = run(capsys, "tutorial", "1", "--no-pause", "--out", str(tmp_path / "figs"))
    assert code == 0 and not err
    assert shown_cells(out) == list(range(1, 11))
    assert out.count("counter is 1") == 1 and "counter is 2" not in out
    assert "\n10\n" in out  # the value of the bare expression `counter * 10`, shown like a notebook's Out
    assert "checked" in out and "End of tutorial 1" in out
    figs = tmp_path / "figs"
    saved = figs / "line.png"  # saved by the tutorial itself, into FPSIM_TUTORIAL_OUT
    unsaved = [figs / "01-cell6.png", figs / "01-cell7.png"]  # a Figure value, a pyplot figure: saved for it
    assert [line for line in out.splitlines() if line.startswith("figure saved")] == [
        f"figure saved: {path}" for path in (saved, *unsaved)
    ]  # cell 8 saves nothing: cell 7's pyplot figure was closed after cell 7, as Jupyter closes it
    assert all(path.read_bytes()[:8] == PNG for path in (saved, *unsaved))
    assert sorted(p.name for p in figs.iterdir()) == ["01-cell6.png", "01-cell7.png", "line.png"]
    assert "FPSIM_TUTORIAL_OUT" not in os.environ  # restored after the run


@pytest.mark.parametrize(("number", "figure"), [(1, "01_bits_of_0.1.png"), (4, "04_swamping.png")])
def test_a_real_tutorial_runs_through_the_stepper_and_saves_its_figure(capsys, tmp_path, monkeypatch, number, figure):
    """Two of the real (and fastest) tutorials, in this process, through `fpsim tutorial N --no-pause`."""
    monkeypatch.delenv(tutorials.FOLDER_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "tutorial", str(number), "--no-pause", "--out", str(tmp_path / "figs"))
    assert code == 0 and f"End of tutorial {number}: every cell ran and every check passed" in out
    saved = tmp_path / "figs" / figure
    assert f"figure saved: {saved}" in out and saved.read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs"]  # nothing written beside it


def test_piped_markdown_keeps_its_marks(capsys, fixtures, tmp_path):
    """Without colour a rendered heading would look like a paragraph: the markdown is shown as written."""
    _, out, _ = run(capsys, "tutorial", "1", "--no-pause", "--out", str(tmp_path))
    assert "\n## Counting\n" in out and "The next cell adds **one** to `counter`." in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("no_color", [False, True])
def test_a_terminal_renders_markdown_unless_no_color(fixtures, tmp_path, monkeypatch, no_color):
    monkeypatch.setenv("TERM", "xterm-256color")
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    screen = _Terminal()
    assert tutorials.step_through(tutorials.get(1), tmp_path, pause=False, file=screen)
    out = screen.getvalue()
    assert ("## Counting" in out) == no_color and ("**one**" in out) == no_color
    assert "\x1b[" in out  # a terminal gets styles (bold, dim) either way; NO_COLOR only drops colour


def test_without_a_terminal_on_stdin_it_never_waits_for_a_key(tmp_path):
    """stdin is a pipe that stays open and empty: a stepper waiting for a key would hang until the timeout."""
    env = {**os.environ, tutorials.FOLDER_VARIABLE: str(FIXTURES), "MPLBACKEND": "Agg"}
    output = tmp_path / "stdout.txt"
    with output.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "fpsim", "tutorial", "1", "--out", str(tmp_path / "figs")],
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
        )
        try:
            code = process.wait(timeout=60)
        finally:
            process.kill()
            process.stdin.close()
    text = output.read_text()
    assert code == 0, text
    assert shown_cells(text) == list(range(1, 11)) and "Enter: next" not in text


def test_a_failed_check_shows_the_cell_and_its_traceback_and_exits_1(capsys, fixtures, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main(["tutorial", "2", "--no-pause", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert stopped.value.code == 1
    assert "before the check" in out and "never printed" not in out and shown_cells(out) == [1, 2, 3]
    assert "Cell 3 failed (AssertionError)" in err and "AssertionError: half is not a quarter" in err
    assert f'File "{FIXTURES / "02_failing.py"}", line 19' in err  # the tutorial's own file and line
    assert "stepper.py" not in err  # the stepper's frames are not the learner's business
    assert err.rstrip().splitlines()[-1] == "fpsim: tutorial 2 stopped at cell 3: the error above"


def test_a_cell_that_does_not_parse_is_shown_with_its_file_and_line(capsys, tmp_path, monkeypatch):
    text = (FIXTURES / "01_counting.py").read_text(encoding="utf-8").replace("counter += 1", "counter += ")
    (tmp_path / "tutorials").mkdir()
    (tmp_path / "tutorials" / "01_counting.py").write_text(text)
    monkeypatch.setenv(tutorials.FOLDER_VARIABLE, str(tmp_path / "tutorials"))
    with pytest.raises(SystemExit) as stopped:
        main(["tutorial", "1", "--no-pause", "--out", str(tmp_path / "figs")])
    out, err = capsys.readouterr()
    assert stopped.value.code == 1 and shown_cells(out) == [1, 2, 3, 4]
    assert "Cell 4 failed (SyntaxError)" in err and f'"{tmp_path / "tutorials" / "01_counting.py"}", line 30' in err


def test_a_missing_module_says_what_to_install(capsys, tmp_path, monkeypatch):
    text = (FIXTURES / "01_counting.py").read_text(encoding="utf-8").replace("import os\n", "import os\nimport torch\n")
    (tmp_path / "tutorials").mkdir()
    (tmp_path / "tutorials" / "01_counting.py").write_text(text)
    monkeypatch.setenv(tutorials.FOLDER_VARIABLE, str(tmp_path / "tutorials"))
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails as if torch were not installed
    with pytest.raises(SystemExit) as stopped:
        main(["tutorial", "1", "--no-pause", "--out", str(tmp_path / "figs")])
    _, err = capsys.readouterr()
    assert (
        stopped.value.code == 1 and "This tutorial needs torch: pip install 'fpsim[torch]', then run it again." in err
    )


# ---- stepping with piped keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "cells", "stopped_at"),
    [
        ("\n\n\n\nb\n\nq\n", [1, 2, 3, 4, 5, 4, 5], 5),  # back from 5 to 4, forward to 5 again, quit
        ("\n\n\n\nb\nb\n\n\nq\n", [1, 2, 3, 4, 5, 4, 3, 4, 5], 5),  # back twice
        ("q\n", [1], 1),
        ("\n\n", [1, 2, 3], 3),  # the end of input quits
        ("b\nq\n", [1, 1], 1),  # b on the first cell shows it again
    ],
)
def test_step_keys_move_through_the_cells(capsys, fixtures, tmp_path, monkeypatch, keys, cells, stopped_at):
    code, out, err = run(capsys, "tutorial", "1", "--step", "--out", str(tmp_path), keys=keys, monkeypatch=monkeypatch)
    assert code == 0 and not err
    assert shown_cells(out) == cells
    assert f"Stopped at cell {stopped_at} of 10" in out and "End of tutorial" not in out


def test_going_back_shows_a_cell_again_without_running_it_again(capsys, fixtures, tmp_path, monkeypatch):
    keys = "\n" * 4 + "b\n" + "\n" * 7  # to cell 5, back to 4, then on to the end (the last cell checks counter == 1)
    code, out, _ = run(capsys, "tutorial", "1", "--step", "--out", str(tmp_path), keys=keys, monkeypatch=monkeypatch)
    assert code == 0 and "End of tutorial 1" in out
    assert shown_cells(out) == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10]
    assert out.count("counter is 1") == 2 and "counter is 2" not in out  # cell 4's output, shown twice, run once
    assert out.count("(shown again, not run again)") == 2  # cells 4 and 5 the second time
    assert out.count(f"figure saved: {tmp_path / 'line.png'}") == 2


def test_step_prompts_after_every_cell_and_refuses_unknown_keys(capsys, fixtures, tmp_path, monkeypatch):
    code, out, _ = run(capsys, "tutorial", "1", "--step", "-o", str(tmp_path), keys="x\nq\n", monkeypatch=monkeypatch)
    assert code == 0
    assert out.count("[1/10] Enter: next · b: back · q: quit ›") == 2
    assert "Unknown key 'x': press Enter: next · b: back · q: quit" in out


# ---- notebooks -------------------------------------------------------------------------------------------------


def test_notebook_is_valid_nbformat_4_with_the_tutorials_cells(capsys, fixtures, tmp_path):
    code, out, _ = run(capsys, "tutorial", "1", "--notebook", str(tmp_path / "nb"))
    path = tmp_path / "nb" / "01_counting.ipynb"
    assert code == 0 and str(path) in out
    book = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(book)
    assert book.nbformat == 4
    source = (FIXTURES / "01_counting.py").read_text(encoding="utf-8")
    markers = re.findall(r"^# %%( \[markdown\])?$", source, re.MULTILINE)
    kinds = ["markdown" if marker else "code" for marker in markers]
    assert [cell.cell_type for cell in book.cells] == [kinds[0], "code", *kinds[1:]]  # + %matplotlib inline
    assert book.cells[0].source.startswith("# 1. Counting cells\n\n*Goal:*")  # markdown without its '# '
    assert book.cells[1].source == "%matplotlib inline"
    assert book.cells[4].source == 'counter += 1\nprint(f"counter is {counter}")'
    solution = book.cells[-1]
    assert solution.source.startswith("# Solution") and solution.metadata.jupyter.source_hidden is True
    assert all(not cell.get("outputs") for cell in book.cells if cell.cell_type == "code")


def test_an_exported_notebook_runs_in_jupyter_with_inline_figures(capsys, fixtures, tmp_path, monkeypatch):
    """Executed by a real ipykernel through nbclient (a few seconds: the kernel's start)."""
    from nbclient import NotebookClient  # the notebook extras: imported by the test that needs them

    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own deprecation notice otherwise
    monkeypatch.setenv("FPSIM_TUTORIAL_OUT", str(tmp_path / "figs"))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    run(capsys, "tutorial", "1", "--notebook", str(tmp_path))
    book = nbformat.read(tmp_path / "01_counting.ipynb", as_version=4)
    NotebookClient(book, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {cell.source.splitlines()[-1]: cell.outputs for cell in book.cells if cell.cell_type == "code"}
    assert outputs['print(f"counter is {counter}")'][0].text == "counter is 1\n"
    assert "image/png" in outputs["fig"][0].data and "image/png" in outputs["unsaved"][0].data
    pyplot_cell = outputs["(line,) = axes.plot([0, 1], [0.5, 0.5])"]  # no value: shown by the inline backend
    assert [output.output_type for output in pyplot_cell] == ["display_data"] and "image/png" in pyplot_cell[0].data
    assert outputs["counter * 10"][0].data["text/plain"] == "10"
    assert (tmp_path / "figs" / "line.png").read_bytes()[:8] == PNG


def test_notebook_to_a_named_file_and_refusals(capsys, fixtures, tmp_path):
    code, _, _ = run(capsys, "tutorial", "2", "--notebook", str(tmp_path / "mine.ipynb"))
    assert code == 0
    nbformat.validate(nbformat.read(tmp_path / "mine.ipynb", as_version=4))
    (tmp_path / "file").write_text("keep")
    code, _, err = run(capsys, "tutorial", "2", "--notebook", str(tmp_path / "file"))
    assert code == 2 and "is a file: name a folder, or a path ending in .ipynb" in err
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.parametrize("name", ["x.txt", "notes.md"])
def test_notebook_with_another_suffix_is_refused_and_nothing_is_created(capsys, fixtures, tmp_path, name):
    code, out, err = run(capsys, "tutorial", "1", "--notebook", str(tmp_path / name))
    assert code == 2 and not out and err.count("\n") == 1
    assert f"--notebook {str(tmp_path / name)!r}: a notebook file must end in .ipynb" in err
    assert not list(tmp_path.iterdir())


def test_notebook_into_an_existing_folder_with_a_dot_in_its_name(capsys, fixtures, tmp_path):
    (tmp_path / "v1.2").mkdir()
    code, _, _ = run(capsys, "tutorial", "1", "--notebook", str(tmp_path / "v1.2"))
    assert code == 0 and (tmp_path / "v1.2" / "01_counting.ipynb").is_file()


def test_notebook_without_nbformat_names_the_extra(capsys, fixtures, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nbformat", None)  # import nbformat now raises ImportError
    code, out, err = run(capsys, "tutorial", "1", "--notebook", str(tmp_path / "new" / "folder"))
    assert code == 2 and not out and not list(tmp_path.iterdir())  # checked before the folder is made
    assert (
        err
        == "fpsim: error: writing a notebook needs nbformat: pip install 'fpsim[notebook]' (or pip install nbformat)\n"
    )


# ---- bad input: one line, exit code 2, nothing run ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("3",), "there is no tutorial 3; the tutorials are 1, 2 (`fpsim tutorial list`)"),
        (("0",), "there is no tutorial 0; the tutorials are 1, 2"),
        (("two",), "TUTORIAL must be a tutorial's number or 'list'; got 'two'"),
        (("-1",), "TUTORIAL must be a tutorial's number or 'list'; got '-1'"),
        (("list", "--step"), "--step does not apply here: `fpsim tutorial list` takes no options"),
        (
            ("1", "--notebook", "--no-pause"),
            "--no-pause does not apply here: --notebook writes a file and runs nothing",
        ),
        (("1", "--step", "--no-pause"), "argument --no-pause: not allowed with argument --step"),
        (("1", "--out", ""), "--out must name a folder for the figures; got an empty path"),
        (("1", "--notebook", ""), "--notebook must name a folder or a path ending in .ipynb; got an empty path"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, fixtures, argv, message):
    code, out, err = run(capsys, "tutorial", *argv)
    assert code == 2 and not out and err.count("\n") == 1 and message in err


def test_out_that_is_a_file_is_refused_before_any_cell_runs(capsys, fixtures, tmp_path):
    (tmp_path / "figs").write_text("keep")
    code, out, err = run(capsys, "tutorial", "1", "--no-pause", "--out", str(tmp_path / "figs"))
    assert code == 2 and not out and "is a file: name a folder for the figures" in err
    assert (tmp_path / "figs").read_text() == "keep"


def test_a_tutorials_folder_that_does_not_exist_is_named(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(tutorials.FOLDER_VARIABLE, str(tmp_path / "missing"))
    code, _, err = run(capsys, "tutorial", "list")
    assert code == 2 and "FPSIM_TUTORIALS_DIR=" in err and "is not a folder" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda text: text.replace("#       format_name: percent\n", ""), "must start with the jupytext header"),
        (lambda text: text.replace("# # 1. Counting", "# # 4. Counting"), "its title says tutorial 4, its file name 1"),
        (lambda text: text.replace("# *Time:* about 1 minute", "# Time: 1 minute"), "'*Time:* about M minutes'"),
        (lambda text: text.replace("# # 1. Counting cells", "# Counting cells"), "must be '# N. Title'"),
    ],
)
def test_a_tutorial_that_breaks_the_contract_is_refused_by_name(tmp_path, change, message):
    (tmp_path / "01_counting.py").write_text(change((FIXTURES / "01_counting.py").read_text(encoding="utf-8")))
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        tutorials.discover(tmp_path)
    assert "01_counting.py" in str(refused.value)


# ---- packaging: the tutorials inside the wheel -------------------------------------------------------------------


def test_a_built_wheel_holds_every_tutorial_and_lists_them_when_installed(tmp_path):
    """Build the wheel from a copy of the project (setuptools as installed, no network), unpack it as pip would
    install it, and run `fpsim tutorial list` from it."""
    source = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("fpsim", "tutorials"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=120)
    (wheel,) = (tmp_path / "dist").glob("fpsim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "fpsim").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set()  # pyproject lists the packages by name (for the tutorials' package-dir)
    expected = sorted(path.name for path in (REPO / "tutorials").glob("[0-9][0-9]_*.py"))
    assert expected and sorted(n.split("/")[-1] for n in names if n.startswith("fpsim/_tutorials/")) == expected
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    script = "import fpsim.tutorials as t; print(t.folder()); import fpsim.cli as c; c.main(['tutorial'])"
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=True
    ).stdout
    assert shown.splitlines()[0] == str(tmp_path / "site" / "fpsim" / "_tutorials")
    for name in expected:
        assert re.search(rf"^ *{int(name[:2])}\. .+ \(about \d+ min\)( \[needs torch\])?$", shown, re.MULTILINE), name
