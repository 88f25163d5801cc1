"""Every tutorial in tutorials/ runs end to end as a script (Agg, no network, 60 s) with its asserts passing, and
keeps the file contract of the tutorial runner (header, title, goal, time, checks, exercises, recap).

No network: a sitecustomize.py on PYTHONPATH refuses every socket connection in the tutorial's process and in
every Python process it starts (tutorial 1 runs the fpsim CLI in a subprocess), since they inherit PYTHONPATH.

The contract is read here with this test's own regular expressions, not with fpsim.tutorials' parser. Each
tutorial also runs as an exported notebook in a real Jupyter kernel, with its figures inline: a slower test,
marked `notebook`, that CI runs (`python -m pytest -m notebook`).
"""

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from fpsim import tutorials

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
FILES = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
HEADER = """# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---
"""
CPU_LIMIT_S = 60  # the limit per tutorial on a 2-core CPU, as the run's CPU time (below)
HANG_S = 300  # a tutorial still running after this long (even on a machine shared by other jobs) hangs
OFFLINE_MESSAGE = "the tutorial tests run without a network"
# Imported at the start of every Python process whose PYTHONPATH holds its folder: a connection attempt fails loudly
_SITECUSTOMIZE = f"""
import socket

def _refuse(*args, **kwargs):
    raise OSError({OFFLINE_MESSAGE!r})

socket.socket.connect = socket.socket.connect_ex = _refuse
"""


@pytest.fixture
def offline_env(tmp_path):
    """os.environ plus a PYTHONPATH whose sitecustomize refuses sockets, for a process and all its children."""
    site = tmp_path / "offline_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"}
    env.pop("FPSIM_TUTORIALS_DIR", None)
    return env


def test_the_network_block_reaches_the_grandchildren(offline_env, tmp_path):
    """A process started by the tutorial's process cannot connect either (the block is not only in the parent)."""
    grandchild = "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)"
    child = f"import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', {grandchild!r}]).returncode)"
    done = subprocess.run(
        [sys.executable, "-c", child], env=offline_env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and OFFLINE_MESSAGE in done.stderr, done.stderr


def test_the_ten_tutorials_are_there():
    """The parametrized tests below pass vacuously on no files: this one fails instead."""
    assert [int(path.name[:2]) for path in FILES] == list(range(1, 11)), [path.name for path in FILES]


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_tutorial_runs_as_a_script_with_its_asserts_passing(path, tmp_path, offline_env):
    """The time limit is checked on the run's CPU time (user + system, from the kernel's accounting of the child):
    on an idle machine that is its wall time, and unlike wall time it does not grow when other jobs share the
    cores (no wall-clock asserts)."""
    out = tmp_path / "figures"
    env = {**offline_env, "FPSIM_TUTORIAL_OUT": str(out)}
    work = tmp_path / "cwd"
    work.mkdir()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            [sys.executable, str(path)],  # as __main__, as `python tutorials/NN_slug.py` runs it
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name} still ran after {HANG_S} s")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, f"{path.name} failed:\n{done.stderr[-4000:]}"
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu <= CPU_LIMIT_S, f"{path.name} took {cpu:.1f} s of CPU time; the limit is {CPU_LIMIT_S} s"
    assert not list(work.iterdir()), f"{path.name} wrote into the working folder: save figures under OUT"
    for figure in out.rglob("*.png") if out.exists() else ():
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure.name


def _first_cell(text: str) -> list[str]:
    """The lines of the first cell, without their '# ' (it must be a markdown cell right after the header)."""
    body = text[len(HEADER) :].lstrip("\n")
    assert body.startswith("# %% [markdown]\n"), "the first cell must be a markdown cell"
    lines = body.split("\n# %%", 1)[0].splitlines()[1:]
    return [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_tutorial_keeps_the_file_contract(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER), "the file must open with the jupytext header block"
    first = _first_cell(text)
    prefix = f"# {int(path.name[:2])}. "
    assert first[0].startswith(prefix) and first[0][len(prefix) :].strip(), first[0]  # '# N. Title'
    assert any(line.startswith("*Goal:* ") for line in first), "a '*Goal:* ...' line"
    minutes = [int(m[1]) for line in first if (m := re.fullmatch(r"\*Time:\* about (\d+) minutes", line))]
    assert minutes and 5 <= minutes[0] <= 15, "a '*Time:* about M minutes' line, M from 5 to 15"
    assert re.search(r"^\s*assert ", text, re.MULTILINE), "assert checkpoints for the claims"
    assert re.search(r"^# \*\*Try it\.\*\*", text, re.MULTILINE), "a '**Try it.**' exercise"
    assert re.search(r"^# %%\n# Solution", text, re.MULTILINE), "a code cell that opens with '# Solution'"
    assert re.search(r"^# ## Recap", text, re.MULTILINE), "a '## Recap' at the end"
    assert 'OUT = Path(os.environ.get("FPSIM_TUTORIAL_OUT", "tutorial_figures"))' in text
    assert "plt.show(" not in text, "figures are saved to OUT and shown as a cell's last expression"


@pytest.mark.notebook
@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_tutorial_runs_as_a_notebook_with_its_figures_inline(path, tmp_path, monkeypatch):
    import nbformat  # the notebook extras: only this test needs them, the script tests collect without them
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own deprecation notice otherwise
    monkeypatch.setenv("FPSIM_TUTORIAL_OUT", str(tmp_path / "figures"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend
    book = tutorials.notebook(tutorials.load(path))
    nbformat.validate(book)
    client = NotebookClient(
        book, timeout=HANG_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a cell that raises (a failed assert) raises CellExecutionError here
    for cell in book.cells:
        if cell.cell_type == "code" and re.fullmatch(r"fig\w*", cell.source.splitlines()[-1]):
            images = sum("image/png" in output.get("data", {}) for output in cell.outputs)
            assert images == 1, (
                f"a figure cell shows {images} images (pyplot figures show twice: use Figure()):\n{cell.source}"
            )
