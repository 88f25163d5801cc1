"""The README tells the truth: its Python snippets run and their value comments hold, and every command it shows
with output prints exactly that output.

Conventions, so that a README author knows what is checked:

* **Python blocks** (```python). Each block runs on its own, in a fresh namespace that already holds
  `import numpy as np, fpsim`, one top-level statement at a time. An expression statement, or an assignment to one
  name, is *checked* when its trailing comment starts with a value. The value is the longest start of the comment,
  ending at the comment's end or just before ": ", " (" or " — ", that parses as a value: numbers, `inf`, `nan`,
  `True`, `False`, `None`, strings, lists, tuples, `-x`, `a**b` and `a*b` of numbers, `≈x`, and numpy's reprs
  `array(...)` and `FPArray(...)`. A comment starting with a digit, a sign, a bracket, a quote, `≈` or one of those
  names must parse (so a mistyped value fails); any other comment is prose and is not checked.
  `print(...)  # text` is checked too: what it prints must equal the comment's text.
* **Comparison.** A number matches when it is the same float, sign of zero included: `0.10009765625` and
  `1.0000001192092896` (a repr) both name one float exactly, and `0.1` does not match 0.0999755859375. `≈x` matches
  a value that rounds to x at the significant digits x shows (`≈0.04711` for 0.0471140…). `nan` matches NaN. Tuples
  and lists match element by element, with the same length; `array(...)` and `FPArray(...)` must equal the result's
  repr (spacing aside), and a numpy array of strings its `str` (`['zero' 'normal']`).
* **Command blocks** (```text, ```console). A line `$ fpsim ARGS` is run through `fpsim.cli.main` with NO_COLOR
  set and stdout piped (120 columns); the lines after it, up to the next `$ ` line or the block's end, are its
  stdout, compared line by line (trailing spaces ignored). `…` in a shown line stands for any text within that
  line: use it for timings. Exit code 0 is expected.
* **Commands without output** (```bash lines and the gallery table's `fpsim ...` spans) must parse with the
  current options; they are not run.
* **Training tables.** Each markdown table under "Measured" whose caption names `--scenario S` is the result of
  `fpsim train --scenario S --steps 300` for its policies; one row per table is rerun in the default suite, every
  row with `-m heavy`.
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import fpsim
from fpsim.cli import build_parser, main

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_VALUE_START = re.compile(r"""[-+\d\[('"≈]|(inf|nan|True|False|None|array|FPArray)\b""")
_APPROX = re.compile(r"≈\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)")
_VALUE_END = re.compile(r": | \(| — ")
_VALUE_SYNTAX = (ast.Constant, ast.List, ast.Tuple, ast.UnaryOp, ast.BinOp, ast.Call, ast.Name, ast.keyword, ast.USub)
_VALUE_SYNTAX += (ast.UAdd, ast.Pow, ast.Mult, ast.Load)
_VALUE_NAMES = {"inf": math.inf, "nan": math.nan, "True": True, "False": False, "None": None}


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # README line of the block's first line of code

    @property
    def id(self) -> str:
        return f"README line {self.line}"


def _blocks(*languages: str) -> list[Block]:
    source = README.read_text(encoding="utf-8")
    return [
        Block(match[1], match[2], source.count("\n", 0, match.start(2)) + 1)
        for match in _FENCE.finditer(source)
        if match[1] in languages
    ]


# ---- Python blocks ------------------------------------------------------------------------------------------------


class ExpectedValue:
    """A comment's value, kept as syntax so that each decimal remembers the digits it shows."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.source = _APPROX.sub(r"approx(\1)", text)
        self.node = ast.parse(self.source, mode="eval").body
        _check_value_syntax(self.node)

    def matches(self, actual: object) -> bool:
        if isinstance(actual, np.ndarray) and self.text == str(actual):
            return True  # an array of strings, as numpy prints it
        return _matches(self.node, actual, self.source)


def _check_value_syntax(node: ast.AST) -> None:
    for child in ast.walk(node):
        if not isinstance(child, _VALUE_SYNTAX):
            raise SyntaxError(f"{type(child).__name__} is not part of a value")
        if isinstance(child, ast.Call) and not (isinstance(child.func, ast.Name) and child.func.id in _CALLS):
            raise SyntaxError("only array(...), FPArray(...) and ≈x are values")


def _comment_value(comment: str) -> ExpectedValue | None:
    """The value a comment starts with; None for prose. A comment that looks like a value but is not one fails."""
    if not _VALUE_START.match(comment):
        return None
    ends = [match.start() for match in _VALUE_END.finditer(comment)] + [len(comment)]
    for end in sorted(ends, reverse=True):
        with contextlib.suppress(SyntaxError):
            return ExpectedValue(comment[:end].strip())
    raise ValueError(f"the comment {comment!r} starts like a value, but no start of it parses as one")


def _matches(node: ast.AST, actual: object, text: str) -> bool:
    if isinstance(node, ast.Tuple):
        return (
            isinstance(actual, tuple)
            and len(actual) == len(node.elts)
            and all(map(_matches_in(text), node.elts, actual))
        )
    if isinstance(node, ast.List):
        values = np.asarray(actual)
        if values.ndim == 0 or len(values) != len(node.elts):
            return False
        return all(map(_matches_in(text), node.elts, values.tolist()))
    if isinstance(node, ast.Call) and node.func.id in _REPRS:
        return _REPRS[node.func.id](node, actual, text)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return actual == node.value
    return _number_matches(node, actual, text)


def _matches_in(text: str):
    return lambda node, actual: _matches(node, actual, text)


def _number_matches(node: ast.AST, actual: object, text: str) -> bool:
    if isinstance(actual, np.ndarray) and actual.ndim == 0:
        actual = actual.item()
    if not isinstance(actual, int | float | np.integer | np.floating | bool | type(None)):
        return False
    if isinstance(node, ast.Name) and node.id in ("True", "False", "None"):
        return actual is _VALUE_NAMES[node.id] or (isinstance(actual, np.bool_) and actual == _VALUE_NAMES[node.id])
    if isinstance(node, ast.Call):  # ≈x, written approx(x) after parsing: x is rounded to the digits it shows
        literal = ast.get_source_segment(text, node.args[0])
        return _rounded_to_digits_of(float(actual), literal) == float(literal)
    expected = eval(compile(ast.Expression(node), "<comment>", "eval"), {"__builtins__": {}}, dict(_VALUE_NAMES))
    if actual is None or expected is None:  # `# None` parses as a constant, not a Name
        return actual is expected
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(actual)
    return actual == expected and math.copysign(1, actual) == math.copysign(1, expected)


def _rounded_to_digits_of(value: float, literal: str) -> float:
    """`value` rounded to as many significant digits as the decimal `literal` shows."""
    mantissa = re.sub(r"[eE].*", "", literal).lstrip("+-").replace(".", "")
    digits = len(mantissa.lstrip("0")) or 1
    return float(f"{value:.{digits - 1}e}") if math.isfinite(value) else value


def _numpy_repr(node: ast.Call, actual: object, text: str) -> bool:
    """array(...) or FPArray(...): the result's repr, as numpy prints it (spacing aside)."""
    return isinstance(actual, np.ndarray | fpsim.FPArray) and _spaced(repr(actual)) == _spaced(
        ast.get_source_segment(text, node)
    )


def _spaced(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"([(\[])\s+|\s+([)\]])", r"\1\2", text))


_REPRS = {"array": _numpy_repr, "FPArray": _numpy_repr}
_CALLS = {*_REPRS, "approx"}


@dataclass(frozen=True)
class Check:
    line: int  # README line
    source: str
    comment: str


def _comment_of(block: Block, statement: ast.stmt) -> str | None:
    last_line = block.text.splitlines()[statement.end_lineno - 1]
    code_end = ast.get_source_segment(block.text, statement).splitlines()[-1]
    rest = last_line[last_line.index(code_end) + len(code_end) :].strip()
    return rest[1:].strip() if rest.startswith("#") else None


def _run_block(block: Block) -> list[str]:
    """Run a Python block statement by statement; return one message per comment that does not hold."""
    namespace = {"np": np, "fpsim": fpsim}
    failures = []
    for statement in ast.parse(block.text).body:
        where = f"README line {block.line + statement.lineno - 1}: {ast.get_source_segment(block.text, statement)}"
        comment = _comment_of(block, statement)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                value = _execute(statement, namespace)
        except Exception as err:  # a snippet that does not run is a failure to report, then the block goes on
            failures.append(f"{where}\n    raised {type(err).__name__}: {err}")
            continue
        failure = _check(statement, comment, value, printed.getvalue())
        if failure:
            failures.append(f"{where}\n    {failure}")
    return failures


def _execute(statement: ast.stmt, namespace: dict) -> object:
    if isinstance(statement, ast.Expr):
        return eval(compile(ast.Expression(statement.value), README.name, "eval"), namespace)
    exec(compile(ast.Module([statement], type_ignores=[]), README.name, "exec"), namespace)
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return namespace[statement.targets[0].id]
    return None


def _check(statement: ast.stmt, comment: str | None, value: object, printed: str) -> str | None:
    if comment is None:
        return None
    is_print = (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Call)
        and isinstance(statement.value.func, ast.Name)
        and statement.value.func.id == "print"
    )
    if is_print:
        return (
            None if printed.rstrip("\n") == comment else f"printed {printed.rstrip()!r}, the comment says {comment!r}"
        )
    if not isinstance(statement, ast.Expr | ast.Assign):
        return None
    try:
        expected = _comment_value(comment)
    except ValueError as err:
        return str(err)
    if expected is None or expected.matches(value):
        return None
    return f"the comment says {expected.text}, the value is {value!r}"


@pytest.mark.parametrize("block", _blocks("python"), ids=lambda block: block.id)
def test_python_block_comments_hold(block: Block) -> None:
    failures = _run_block(block)
    assert not failures, "\n".join(failures)


# The checker itself must be able to fail: each of these comments is wrong, and must be reported.
@pytest.mark.parametrize(
    ("code", "comment"),
    [
        ('fpsim.round(0.1, "bf16")', "0.1000976562"),  # a shortened value is not the value
        ('fpsim.round(0.1, "bf16")', "0.10009765626"),
        ('fpsim.round(0.1, "fp16")', "0.1: the stored value"),
        ('fpsim.round(0.1, "bf16")', "≈0.1002"),
        ("fpsim.FP16.max, fpsim.FP16.eps", "65504.0, 2**-11"),
        ("fpsim.FP16.max, fpsim.FP16.eps", "65504.0"),
        ('fpsim.round([1e9, 1.0], "fp16")', "[inf, 1.5]"),
        ('fpsim.round([1e9, 1.0], "fp16")', "[inf]"),
        ('fpsim.round([1e9, 1.0], "fp16")', "[inf, 1.0, 1.0]"),
        ('fpsim.encode([1.0], "fp16")', "array([15360], dtype=uint32)"),
        ('fpsim.decode(0x7C00, "fp16")', "nan"),
        ('fpsim.round(-0.0, "fp16")', "0.0"),
        ('fpsim.classify([0, 1], "fp16")', "['zero' 'subnormal']"),
        ('fpsim.array([0.1], "fp16")', "FPArray([0.09997559], format='bf16')"),
        ('fpsim.array([0.1], "fp16")', "FPArray([0.1], format='fp16')"),
        ('print(fpsim.round(0.1, "fp16"))', "0.1"),
        ("fpsim.FP16.max", "(65504: a tuple that is not closed"),
        ("fpsim.FP16.max", "65504 and more prose that does not parse"),
    ],
)
def test_a_wrong_comment_is_reported(code: str, comment: str) -> None:
    assert _run_block(Block("python", f"{code}  # {comment}\n", 1)), f"{code}  # {comment} was accepted"


@pytest.mark.parametrize(
    ("code", "comment"),
    [
        ('fpsim.round(0.1, "bf16")', "0.10009765625 (a scalar in, a scalar out)"),
        ("fpsim.FP16.max, fpsim.FP16.eps", "65504.0, 2**-10"),
        ("fpsim.FP16.decimal_digits", "≈3.31: rounded to the digits shown"),
        ('fpsim.round([1e9, 1.0], "fp16")', "[inf, 1.]: overflow"),
        ('fpsim.encode([1.0], "fp16")', "array([15360], dtype=uint16)"),
        ('fpsim.decode(0x7E00, "fp16")', "nan"),
        ('fpsim.classify([0, 1], "fp16")', "['zero' 'normal']"),
        ('fpsim.array([0.1], "fp16")', "FPArray([0.09997559], format='fp16')"),
        ('print(fpsim.round(0.1, "fp16"))', "0.0999755859375"),
        ('fpsim.round(0.1, "fp16")', "spacing and other prose is not checked"),
    ],
)
def test_a_right_comment_is_accepted(code: str, comment: str) -> None:
    assert not _run_block(Block("python", f"{code}  # {comment}\n", 1))


# ---- Commands shown with their output ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShownCommand:
    line: int  # README line of the `$ ` line
    argv: tuple[str, ...]
    output: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"README line {self.line}: fpsim {' '.join(self.argv)}"[:100]


def _shown_commands() -> list[ShownCommand]:
    shown = []
    for block in _blocks("text", "console"):
        lines = block.text.splitlines()
        starts = [index for index, line in enumerate(lines) if line.startswith("$ ")]
        for start, end in zip(starts, [*starts[1:], len(lines)]):
            words = shlex.split(lines[start][2:])
            assert words[0] == "fpsim", f"README line {block.line + start}: only `$ fpsim ...` lines can be checked"
            shown.append(ShownCommand(block.line + start, tuple(words[1:]), tuple(lines[start + 1 : end])))
    return shown


def _line_pattern(shown: str) -> re.Pattern[str]:
    """A shown output line as a pattern: literal text, `…` for any text within the line."""
    return re.compile(".*?".join(map(re.escape, shown.rstrip().split("…"))))


@pytest.mark.parametrize("command", _shown_commands(), ids=lambda command: command.id)
def test_shown_command_prints_what_the_readme_shows(command, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(tmp_path)  # a command that writes a file writes it here
    assert main(list(command.argv)) == 0, capsys.readouterr().err
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    shown = "\n".join(command.output)
    assert len(printed) == len(command.output), f"README shows:\n{shown}\nfpsim prints:\n" + "\n".join(printed)
    for number, (actual, expected) in enumerate(zip(printed, command.output), start=1):
        assert _line_pattern(expected).fullmatch(actual), (
            f"output line {number}:\n  README {expected}\n  fpsim  {actual}"
        )


def test_an_output_line_pattern_matches_only_its_line():
    pattern = _line_pattern("fp32  0.01762  …  ")
    assert pattern.fullmatch("fp32  0.01762  2.502")
    assert not pattern.fullmatch("fp32  0.01763  2.502")
    assert not _line_pattern("fp16  0.0999755859375").fullmatch("fp16  0.09997558593750")


# ---- Commands shown without output: they must still parse --------------------------------------------------------


def _commands_to_parse() -> list[tuple[int, tuple[str, ...]]]:
    """Every `fpsim ...` command in a ```bash block, or in an inline code span without placeholders."""
    source = README.read_text(encoding="utf-8")
    found = []
    for block in _blocks("bash"):
        for offset, line in enumerate(block.text.splitlines()):
            found += [(block.line + offset, part) for part in line.split("&&")]
    for match in re.finditer(r"`(fpsim [^`]*)`", source):
        if not re.search(r"\b[A-Z][A-Z_]*\b|…|\.\.\.", match[1]):  # COMMAND, FILE, VALUE...: a synopsis, not a command
            found += [(source.count("\n", 0, match.start()) + 1, part) for part in match[1].split("&&")]
    commands = [(line, tuple(shlex.split(part, comments=True))) for line, part in found]
    return [(line, tuple(words[1:])) for line, words in commands if words and words[0] == "fpsim"]


@pytest.mark.parametrize(("line", "argv"), _commands_to_parse(), ids=lambda item: str(item))
def test_readme_command_parses(line, argv):
    build_parser().parse_args(list(argv))  # an unknown option or choice raises UsageError


# ---- The measured training tables --------------------------------------------------------------------------------

_TRAINING_COLUMNS = ("final loss", "test accuracy", "skipped steps", "flushed %", "lost updates %")


def _training_rows() -> list:
    """(scenario, policy, shown cells) for each row of a table captioned with (`--scenario S`...)."""
    source = README.read_text(encoding="utf-8")
    rows = []
    for caption in re.finditer(r"\(`--scenario ([\w-]+)`[^\n]*\n(?:[^\n|][^\n]*\n)*\n((?:\|[^\n]*\n)+)", source):
        header, _, *body = caption[2].strip().splitlines()
        columns = [cell.strip() for cell in header.strip("|").split("|")]
        assert columns == ["policy", *_TRAINING_COLUMNS], f"the {caption[1]} table's columns changed: {columns}"
        policies = [[cell.strip() for cell in row.strip("|").split("|")] for row in body]
        key = "amp" if any(cells[0] == "amp" for cells in policies) else policies[0][0]
        for cells in policies:
            marks = () if cells[0] == key else (pytest.mark.heavy,)
            rows.append(pytest.param(caption[1], cells[0], cells[1:], marks=marks, id=f"{caption[1]}-{cells[0]}"))
    return rows


def test_readme_shows_the_three_training_tables():
    assert sorted({row.values[0] for row in _training_rows()}) == ["lost-updates", "overflow", "underflow"]


@pytest.mark.parametrize(("scenario", "policy", "cells"), _training_rows())
def test_training_table_row_is_what_fpsim_train_prints(scenario, policy, cells):
    """The README's row is `fpsim train --scenario S --policy P` (300 steps, seed 0), to the 4 digits it prints."""
    from fpsim import train
    from fpsim.cli.train import _cell

    summary = train.run(train.scenario(scenario, policy=policy)).summary()
    assert [_cell(summary[column]) for column in _TRAINING_COLUMNS] == cells


# ---- docs/ARCHITECTURE.md names every module, and only modules that exist ------------------------------------------

ARCHITECTURE = README.parent / "docs" / "ARCHITECTURE.md"
PACKAGE = README.parent / "fpsim"


def _architecture_names() -> set[str]:
    """Module paths the architecture names: `fpsim/x.py`, `cli/x.py`, and `name`s in the row of a `fpsim/pkg/`."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    names = set(re.findall(r"`(fpsim/[\w/]+(?:\.py|/))`", text))
    names |= {f"fpsim/{path}" for path in re.findall(r"`((?:cli|plots|torch)/\w+\.py)`", text)}
    for line in text.splitlines():
        for package in re.findall(r"`fpsim/(\w+)/`", line):
            names |= {f"fpsim/{package}/{word}.py" for word in re.findall(r"`(\w+)`", line)}
    return names


def test_architecture_names_every_module():
    modules = {
        path.relative_to(README.parent).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }
    missing = sorted(modules - _architecture_names())
    assert not missing, f"docs/ARCHITECTURE.md does not describe {', '.join(missing)}"


def test_architecture_names_only_modules_that_exist():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    paths = set(re.findall(r"`(fpsim/[\w/]+(?:\.py|/))`", text))
    paths |= {f"fpsim/{path}" for path in re.findall(r"`((?:cli|plots|torch)/\w+\.py)`", text)}
    gone = sorted(path for path in paths if not (README.parent / path).exists())
    assert not gone, f"docs/ARCHITECTURE.md describes modules that do not exist: {', '.join(gone)}"
