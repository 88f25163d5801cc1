"""Terminal output: plain tables and progress lines when piped, rich bars with k/n, rate and ETA on a terminal,
no colour under NO_COLOR, nothing at all when quiet."""

import io
import re

import pytest

from fpsim._terminal import StepProgress, console, table


class Terminal(io.StringIO):
    def isatty(self):
        return True


def printed(renderable, file=None, width=None):
    stream = file or io.StringIO()
    out = console(stream)
    if width is not None:
        out.width = width
    out.print(renderable)
    return stream.getvalue()


def test_a_table_is_a_header_line_then_one_line_per_row_first_column_left():
    lines = printed(table(["policy", "final loss"], [["fp32", "0.25"], ["fp16-dynamic", "nan"]])).splitlines()
    assert lines == ["policy        final loss", "fp32                0.25", "fp16-dynamic         nan"]


TRAIN_COLUMNS = ["policy", "final loss", "best loss", "test accuracy", "skipped steps", "flushed %",
                 "lost updates %", "seconds"]  # fmt: skip
TRAIN_ROWS = [["fp32", "2.113", "2.113", "0.2207", "0", "0", "0.006147", "0.011234"],
              ["fp16-dynamic", "2.113", "2.113", "0.2207", "0", "0", "5.387", "0.009321"]]  # fmt: skip


@pytest.mark.parametrize("width", [28, 30, 40, 60, 61, 74, 75, 80, 90, 100, 120])
def test_a_table_fits_any_width_without_hiding_a_character(width):
    lines = printed(table(TRAIN_COLUMNS, TRAIN_ROWS), width=width).splitlines()
    assert max(map(len, lines)) <= width and not any("…" in line for line in lines)
    words = [word for line in lines for word in line.split()]
    for cell in {cell for row in TRAIN_ROWS for cell in row} | {w for name in TRAIN_COLUMNS for w in name.split()}:
        assert cell in words, (width, cell)  # every number and every header word whole, on one line


def test_a_table_too_wide_for_the_width_is_one_block_per_row():
    # 12 + 5 + 5 + 8 + 7 + 7 + 8 + 8 = 60 characters of longest words, 7 gaps of 2: 74 columns side by side
    assert printed(table(TRAIN_COLUMNS, TRAIN_ROWS), width=74).splitlines()[-1].split() == TRAIN_ROWS[1]
    lines = printed(table(TRAIN_COLUMNS, TRAIN_ROWS), width=73).splitlines()
    expected = [f"{name:<14}  {cell}" for name, cell in zip(TRAIN_COLUMNS, TRAIN_ROWS[0])]
    assert [line.rstrip() for line in lines[: len(TRAIN_COLUMNS)]] == expected
    assert lines[len(TRAIN_COLUMNS)].strip() == "" and lines[-1].split() == ["seconds", "0.009321"]


@pytest.mark.parametrize("width", [8, 12, 16, 20])
def test_a_table_narrower_than_its_words_folds_them_but_shows_every_character(width):
    lines = printed(table(TRAIN_COLUMNS, TRAIN_ROWS), width=width).splitlines()
    assert max(map(len, lines)) <= width and not any("…" in line for line in lines)
    shown = sum(len(line.replace(" ", "")) for line in lines)
    assert shown == sum(
        len(name.replace(" ", "")) + len(cell) for row in TRAIN_ROWS for name, cell in zip(TRAIN_COLUMNS, row)
    )


def test_colour_only_on_a_terminal_and_never_under_no_color(monkeypatch):
    colour = re.compile(r"\x1b\[[0-9;]*(3|9)[0-7]m")  # a foreground colour; bold is not a colour

    def bar(stream):
        with StepProgress(stream) as progress:
            progress.task("fp16", 4)(2, "")
        return stream.getvalue()

    grid = table(["policy"], [["fp32"]])
    assert "\x1b[" not in printed(grid) and "\x1b[1mpolicy" in printed(grid, Terminal())
    assert colour.search(bar(Terminal()))
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour.search(bar(Terminal())) and "2/4" in bar(Terminal())


def test_piped_progress_is_a_plain_line_every_tenth_and_at_the_end():
    stream = io.StringIO()
    with StepProgress(stream) as progress:
        update = progress.task("amp", 25)
        for done in range(1, 26):
            update(done, f"loss {done}")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[amp] step 2/25 loss 2" and lines[-1] == "[amp] step 25/25 loss 25"
    assert len(lines) == 13  # steps 2, 4, ..., 24 and 25


def test_terminal_progress_is_a_bar_with_k_of_n_rate_and_eta():
    stream = Terminal()
    with StepProgress(stream, unit="run") as progress:
        update = progress.task("fp16", 10)
        for done in range(1, 11):
            update(done, "detail text")
    shown = stream.getvalue()
    assert "━" in shown and "10/10" in shown and " run/s" in shown and "0:00:00" in shown and "detail text" in shown


def test_quiet_progress_prints_nothing():
    for stream in (io.StringIO(), Terminal()):
        with StepProgress(stream, quiet=True) as progress:
            progress.task("fp32", 3)(3, "done")
        assert stream.getvalue() == ""
