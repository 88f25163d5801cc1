"""A calculator for small arithmetic expressions in any format, every literal and intermediate rounded and shown.

Invariant: expressions are parsed with `ast` against a whitelist and evaluated by fpsim.arithmetic; nothing is eval'd.
Literals are read by the command line's one value reader (exact decimals and hex floats) and rounded once.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
from rich.console import Console, ConsoleOptions
from rich.table import Table
from rich.text import Text

from fpsim import arithmetic
from fpsim._decimal import UNSIGNED_NUMBER, Exact, parse_real, round_exact, to_float
from fpsim.explanation import exact_decimal, render_text
from fpsim.flags import Flags
from fpsim.formats import Format, get_format

MAX_LENGTH = 500  # characters
MAX_NODES = 200  # syntax-tree nodes: enough for any hand-written expression, too few for abuse
_OPERATORS = {ast.Add: ("add", "+"), ast.Sub: ("sub", "-"), ast.Mult: ("mul", "×"), ast.Div: ("div", "÷")}
_FUNCTIONS = {"sqrt": 1, "fma": 3}
_ALLOWED = "numbers (0.1, 1e-5, 0x1.8p-3, inf, nan), + - * /, parentheses, sqrt(x) and fma(a, b, c)"
_LITERAL = re.compile(rf"(?<![\w.])(?:{UNSIGNED_NUMBER})(?![\w.])", re.IGNORECASE | re.ASCII)
_NAME = re.compile(r"[A-Za-z_]\w*", re.ASCII)
GRAMMAR = """\
  expr    := term (("+" | "-") term)*
  term    := factor (("*" | "/") factor)*
  factor  := ("+" | "-") factor | number | "(" expr ")" | "sqrt(" expr ")" | "fma(" expr "," expr "," expr ")"
  number  := a VALUE, unsigned (0.1, 1e-5, 1_000, 0x1.8p-3, inf, nan); "-" before it is the negation step
Every number is rounded once from its exact value, then every operation once (fma: one rounding)."""


@dataclass(frozen=True)
class Step:
    """One rounding: what was computed, its exact value, the stored result and what the rounding raised."""

    text: str
    exact: Exact
    result: float
    flags: Flags

    @property
    def error(self) -> float:
        """stored − exact, as a float (exact to 60 digits for sqrt); inf on overflow, NaN for invalid steps."""
        if isinstance(self.exact, Fraction) and math.isfinite(self.result):
            return to_float(Fraction(self.result) - self.exact)  # 6 - 1e400 is beyond float64
        if isinstance(self.exact, Fraction):  # an overflow to ±inf
            return self.result
        return self.result - self.exact if self.result != self.exact else 0.0


@dataclass(frozen=True)
class Calculation:
    expression: str
    fmt: Format
    rounding: str
    steps: tuple[Step, ...]

    @property
    def result(self) -> float:
        return self.steps[-1].result

    @property
    def flags(self) -> Flags:
        total = Flags()
        for step in self.steps:
            total += step.flags
        return total

    def __str__(self) -> str:
        return render_text(self)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[object]:
        """The expression, one line per rounding (long decimals fold in their column), and the result."""
        yield Text(f"{self.expression}  in {self.fmt.name}, rounding {self.rounding}", overflow="fold")
        table = Table(box=None, show_header=False, padding=(0, 1, 0, 0), pad_edge=False)
        table.add_column(overflow="fold")  # the indent
        table.add_column(overflow="fold")
        table.add_column()
        table.add_column(overflow="fold")
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        for step in self.steps:
            raised = ", ".join(n for n, c in step.flags.as_dict().items() if c and n != "total") or "exact"
            cells = ("", step.text, "=", exact_decimal(step.result), f"  error {step.error:+.4g}", f"  [{raised}]")
            table.add_row(*map(Text, cells))  # Text: "[inexact]" is no markup
        yield table
        yield Text(f"result: {exact_decimal(self.result)}  ({self.flags})", overflow="fold")


def calc(expression: str, fmt: Format | str, rounding: str = "nearest_even") -> Calculation:
    """Evaluate `expression` (GRAMMAR: numbers, + - * /, parentheses, sqrt(x), fma(a, b, c)) rounding every step."""
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a str, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"expression is {len(expression)} characters long; the limit is {MAX_LENGTH}")
    source = expression.strip()
    if not source.isascii():
        odd = next(c for c in source if not c.isascii())
        raise ValueError(f"expression must be written in ASCII; it contains {odd!r} (U+{ord(odd):04X})")
    lifted, literals = _lift_literals(source)
    try:
        tree = ast.parse(lifted, mode="eval")
    except SyntaxError as err:
        column = _original_column(source, err.offset or 0)
        raise ValueError(f"expression is not valid arithmetic: {err.msg} (at column {column})") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ValueError(f"expression has more than {MAX_NODES} parts; split it up")
    fmt = get_format(fmt)
    arithmetic.check_arithmetic_format(fmt)
    steps: list[Step] = []
    _Evaluator(lifted, literals, fmt, rounding, steps).visit(tree.body)
    return Calculation(source, fmt, rounding, tuple(steps))


def _lift_literals(source: str) -> tuple[str, dict[str, str]]:
    """Replace each number by a name _0, _1, … that `ast` accepts (a hex float is no Python literal).

    No name of the user's may begin with _, so the names cannot collide.
    """
    for name in _NAME.findall(_LITERAL.sub(" ", source)):
        if name.startswith("_"):
            raise ValueError(f"expression may only contain {_ALLOWED}; found {name!r}")
    literals: dict[str, str] = {}

    def lift(match: re.Match) -> str:
        name = f"_{len(literals)}"
        literals[name] = match.group()
        return name

    return _LITERAL.sub(lift, source), literals


def _original_column(source: str, column: int) -> int:
    """Map a column of the lifted text back to the expression as typed."""
    shift = 0
    for index, match in enumerate(_LITERAL.finditer(source)):
        if match.start() - shift >= column:
            break
        shift += len(match.group()) - len(f"_{index}")
    return column + shift


class _Evaluator:
    """Walks the whitelisted syntax tree; each node returns (stored value, exact value of what it denotes)."""

    def __init__(self, lifted: str, literals: dict[str, str], fmt: Format, rounding: str, steps: list[Step]) -> None:
        self.lifted, self.literals, self.fmt, self.rounding, self.steps = lifted, literals, fmt, rounding, steps

    def visit(self, node: ast.AST) -> float:
        if isinstance(node, ast.Name) and node.id in self.literals:
            return self._literal(self.literals[node.id])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.visit(node.operand)
            if isinstance(node.op, ast.UAdd):
                return value
            return self._operation("neg", f"-{_show(value)}", value)  # exact: only the sign changes
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            name, symbol = _OPERATORS[type(node.op)]
            left, right = self.visit(node.left), self.visit(node.right)
            return self._operation(name, f"{_show(left)} {symbol} {_show(right)}", left, right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
            arity = _FUNCTIONS[node.func.id]
            if len(node.args) != arity or node.keywords:
                raise ValueError(f"{node.func.id} takes {arity} argument{'s' * (arity > 1)}")
            args = [self.visit(arg) for arg in node.args]
            return self._operation(node.func.id, f"{node.func.id}({', '.join(map(_show, args))})", *args)
        shown = re.sub(r"\b_\d+\b", lambda m: self.literals[m.group()], ast.get_source_segment(self.lifted, node) or "")
        raise ValueError(f"expression may only contain {_ALLOWED}; found {shown!r}")

    def _literal(self, text: str) -> float:
        exact = parse_real(text, "a number in the expression")  # exact: Python's float would round it first
        stored, flags = round_exact(exact, self.fmt, self.rounding)
        self.steps.append(Step(text, exact, stored, flags))
        return stored

    def _operation(self, name: str, text: str, *operands: float) -> float:
        stored, flags = getattr(arithmetic, name)(*operands, self.fmt, self.rounding, flags=True)
        self.steps.append(Step(text, _exact(name, operands), float(stored), flags))
        return float(stored)


def _exact(name: str, operands: tuple[float, ...]) -> Fraction | float:
    """The exact result of one operation on format values (sqrt to 60 digits); float where not finite."""
    if not all(math.isfinite(x) for x in operands):  # IEEE float64 arithmetic is exact on infinities
        with np.errstate(all="ignore"):
            x = [np.float64(v) for v in operands]
            return float({"add": lambda: x[0] + x[1], "sub": lambda: x[0] - x[1], "mul": lambda: x[0] * x[1],
                          "div": lambda: x[0] / x[1], "fma": lambda: x[0] * x[1] + x[2], "neg": lambda: -x[0],
                          "sqrt": lambda: np.sqrt(x[0])}[name]())  # fmt: skip
    x = [Fraction(v) for v in operands]
    if name == "sqrt":
        if x[0] < 0:
            return math.nan
        with localcontext() as context:
            context.prec = 60
            return Fraction(Decimal(operands[0]).sqrt())
    if name == "div" and x[1] == 0:
        return math.nan if x[0] == 0 else math.copysign(math.inf, operands[0]) * math.copysign(1, operands[1])
    return {"add": lambda: x[0] + x[1], "sub": lambda: x[0] - x[1], "mul": lambda: x[0] * x[1],
            "div": lambda: x[0] / x[1], "fma": lambda: x[0] * x[1] + x[2], "neg": lambda: -x[0]}[name]()  # fmt: skip


def _show(value: float) -> str:
    return exact_decimal(value)
