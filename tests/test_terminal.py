"""Terminal output: plain tables and progress lines when piped, rich bars with k/n, rate and ETA on a terminal,
no colour under NO_COLOR, nothing at all when quiet."""

import io
import re

from fpsim._terminal import StepProgress, console, table


class Terminal(io.StringIO):
    def isatty(self):
        return True


def printed(renderable, file=None):
    stream = file or io.StringIO()
    console(stream).print(renderable)
    return stream.getvalue()


def test_a_table_is_a_header_line_then_one_line_per_row_first_column_left():
    lines = printed(table(["policy", "final loss"], [["fp32", "0.25"], ["fp16-dynamic", "nan"]])).splitlines()
    assert lines == ["policy        final loss", "fp32                0.25", "fp16-dynamic         nan"]


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
