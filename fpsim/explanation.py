"""What one number becomes in a format: bits, class, stored value and exact rounding error, for terminals and notebooks.

Invariant: every decimal shown is the exact expansion of a dyadic rational, never a repr.
"""

from __future__ import annotations

import html
import io
import math
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from rich.console import Console, ConsoleOptions, Group
from rich.table import Table
from rich.text import Text

from fpsim._decimal import Exact, exact_float64, float64_neighbours, parse_real, round_exact, to_float
from fpsim._inputs import as_float64
from fpsim.codec import classify, encode, next_down, next_up
from fpsim.flags import Flags, suspended
from fpsim.formats import Format, get_format

_STYLES = {"sign": "magenta", "exponent": "blue", "mantissa": "yellow"}  # safe for colour blindness
_HTML_COLORS = {"sign": "#cc79a7", "exponent": "#0072b2", "mantissa": "#e69f00"}  # Okabe-Ito palette
_PIPE_WIDTH = 120  # the width of a view that is not on a terminal: stable for files and tests
_NARROWEST_COLUMN = 20  # a format's column in the side-by-side view; narrower terminals get one table per format


def exact_decimal(value: Fraction | float) -> str:
    """The exact decimal expansion of a rational whose denominator has no prime factors but 2 and 5
    (every finite float, every decimal typed in).

    Plain notation between 1e-4 and 1e16 ('0.1000000000000000055511151231257827021181583404541015625'),
    exact scientific notation outside it ('5.9604644775390625e-8'). Past MAX_SHOWN_DIGITS significant digits
    (more than anyone can type, or any format's value has) the middle digits are elided and their count said.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float) and value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    fraction = Fraction(value)
    twos = _twos(fraction.denominator)
    fives = _multiplicity(fraction.denominator >> twos, 5)
    if fraction.denominator != 2**twos * 5**fives:
        raise ValueError(
            f"value must have a finite decimal expansion (a denominator of 2s and 5s), got {_short(fraction)}"
        )
    if fraction == 0:
        return "0"
    places = max(twos, fives)
    sign = "-" if fraction < 0 else ""
    scaled = abs(fraction.numerator) * 2 ** (places - twos) * 5 ** (places - fives)  # = |value| * 10^places
    zeros = _multiplicity(scaled, 10, at_most=_twos(scaled))  # 10^k divides it only if 2^k does
    significand = scaled // 10**zeros  # |value| = significand * 10^(zeros - places), no trailing zeros
    count = _digit_count(significand)
    exponent = count - 1 + zeros - places  # of the leading digit
    if count > MAX_SHOWN_DIGITS:
        lead = _digits(significand // 10 ** (count - _LEAD))
        tail = _digits(significand % 10**_TAIL).zfill(_TAIL)
        omitted = count - _LEAD - _TAIL
        return f"{sign}{lead[0]}.{lead[1:]}…({omitted} digits omitted)…{tail}e{exponent}"
    digits = _digits(significand)
    if -4 <= exponent < 16:
        padded = digits.rjust(len(digits) - exponent, "0") if exponent < 0 else digits.ljust(exponent + 1, "0")
        point = max(exponent, 0) + 1
        whole, decimals = padded[:point], padded[point:]
        return f"{sign}{whole}.{decimals}" if decimals else f"{sign}{whole}"
    mantissa = f"{digits[0]}.{digits[1:]}" if len(digits) > 1 else digits
    return f"{sign}{mantissa}e{exponent}"


MAX_SHOWN_DIGITS = 4000  # as many as a value typed in may have (fpsim._decimal.MAX_CHARACTERS); fp64's longest: 767
_LEAD, _TAIL = 40, 20  # digits kept either side of an elision
_CHUNK = 600  # digits per str(int): below the smallest int-to-str limit Python allows (640), so never refused


def _digits(n: int) -> str:
    """The decimal digits of n >= 0, in chunks: str() of an int past ~4300 digits raises ValueError."""
    if n < 10**_CHUNK:
        return str(n)
    half = _digit_count(n) // 2
    high, low = divmod(n, 10**half)
    return _digits(high) + _digits(low).zfill(half)


def _digit_count(n: int) -> int:
    """How many decimal digits n > 0 has, without converting it."""
    estimate = max(1, (n.bit_length() - 1) * 30103 // 100000)  # floor(log10(2^(b-1))) or one less
    while 10**estimate <= n:
        estimate += 1
    return estimate


def _twos(n: int) -> int:
    return (n & -n).bit_length() - 1


def _short(fraction: Fraction) -> str:
    """A fraction for an error message; a huge one by its size only."""
    sizes = (fraction.numerator.bit_length(), fraction.denominator.bit_length())
    return (
        str(fraction) if max(sizes) < 1000 else f"a fraction of {sizes[0]}-bit numerator and {sizes[1]}-bit denominator"
    )


def _multiplicity(n: int, prime: int, at_most: int | None = None) -> int:
    """How often prime (or 10) divides n, by bisection: 1e-99999 has 99999 fives, too many to divide out one by
    one. `at_most`: a known upper bound."""
    low, high = 0, n.bit_length() if at_most is None else at_most
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if n % prime**middle == 0 else (low, middle - 1)
    return low


@dataclass(frozen=True)
class Explanation:
    """One value rounded to one format, with everything a learner needs to see why it became what it did."""

    fmt: Format
    rounding: str
    input: Exact  # a float64, or the exact value of a decimal typed as text
    value: float
    code: int
    category: str
    below: float | None  # None where the format has no value below (fp4 at -max, e8m0 at 2^-127)
    above: float | None
    ulp: float
    flags: Flags

    @property
    def bit_fields(self) -> dict[str, str]:
        """The code's fields as bit strings; an unsigned format (e8m0) has no sign, one without mantissa bits none."""
        fmt = self.fmt
        bits = format(self.code, f"0{fmt.bits}b")
        sign, rest = (bits[0], bits[1:]) if fmt.signed else ("", bits)
        fields = {"sign": sign, "exponent": rest[: fmt.nexp], "mantissa": rest[fmt.nexp :]}
        return {name: field for name, field in fields.items() if field}

    @property
    def biased_exponent(self) -> int:
        return (self.code >> self.fmt.nmant) & (2**self.fmt.nexp - 1)

    @property
    def exponent(self) -> int | None:
        """The unbiased exponent; emin for zeros and subnormals, None for inf and NaN."""
        if self.category in ("inf", "nan"):
            return None
        return max(self.biased_exponent, self.fmt.lowest_normal_field) - self.fmt.bias

    @property
    def exact_input(self) -> str:
        return exact_decimal(self.input)

    @property
    def exact_value(self) -> str:
        return exact_decimal(self.value)

    @property
    def abs_error(self) -> Fraction | float:
        """stored − input, exact; NaN or inf where either side is not finite."""
        if isinstance(self.input, Fraction):  # finite; float(input) might not even exist
            return Fraction(self.value) - self.input if math.isfinite(self.value) else self.value
        if not (math.isfinite(self.value) and math.isfinite(self.input)):
            return 0.0 if self.value == self.input else self.value - self.input  # inf - inf is NaN
        return Fraction(self.value) - Fraction(self.input)

    @property
    def rel_error(self) -> float:
        error = self.abs_error
        if isinstance(error, float) or self.input == 0:
            return error if isinstance(error, float) else (0.0 if error == 0 else math.inf)
        return to_float(error / Fraction(self.input))

    def rows(self) -> dict[str, str]:
        """The labelled lines of the view, plain text, every decimal exact and in full."""
        error = self.abs_error
        error_text = exact_decimal(error) if isinstance(error, Fraction) else str(error)
        if isinstance(error, Fraction) and math.isfinite(self.ulp):
            error_text += f" ({to_float(error / Fraction(self.ulp)):+.4g} ulp)"
        exponent = "—" if self.exponent is None else f"{self.exponent:+d} (biased {self.biased_exponent})"
        return {
            "bits": " ".join(self.bit_fields.values()),
            "hex": f"0x{self.code:0{(self.fmt.bits + 3) // 4}x}",
            "class": self.category,
            "exponent": exponent,
            "stored value": self.exact_value,
            "abs error": error_text,
            "rel error": f"{self.rel_error:.4g}",
            "ulp": exact_decimal(self.ulp),
            "below": "none" if self.below is None else exact_decimal(self.below),
            "above": "none" if self.above is None else exact_decimal(self.above),
            "flags": ", ".join(n for n, c in self.flags.as_dict().items() if c and n != "total") or "exact",
        }

    def render(self, color: bool = False, width: int = _PIPE_WIDTH) -> str:
        return render_table([self], color, width)

    def __str__(self) -> str:
        return self.render(_stdout_has_color(), _stdout_width())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[object]:
        yield _view([self], options.max_width)

    def _repr_html_(self) -> str:
        return render_html([self])


class ExplanationGroup(tuple):
    """Explanations of one value in several formats, shown side by side where the width allows."""

    def render(self, color: bool = False, width: int = _PIPE_WIDTH) -> str:
        return render_table(list(self), color, width)

    def __str__(self) -> str:
        return self.render(_stdout_has_color(), _stdout_width())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[object]:
        yield _view(list(self), options.max_width)

    def _repr_html_(self) -> str:
        return render_html(list(self))


def explain(value: object, fmt: Format | str | Sequence[Format | str], rounding: str = "nearest_even", **options):
    """Explain how `value` is stored in `fmt` (or in each of a list of formats, side by side).

    `value` is a number, read as the float64 it is (Python's 0.1 is already rounded once: the view shows
    that float64's exact expansion); or text such as "0.1", read exactly as the command line reads it (see
    `fpsim._decimal.VALUE_SYNTAX`), or a Fraction with a finite decimal expansion, both rounded once.
    `options` are those of `fpsim.round` (overflow, rng, on_nan).
    """
    if isinstance(fmt, (list, tuple)):
        if not fmt:
            raise ValueError("fmt must name at least one format")
        exact = _read(value)
        return ExplanationGroup(explain(exact, f, rounding, **options) for f in fmt)
    fmt = get_format(fmt)
    exact = _read(value)
    with suspended():  # explaining is a query: the caller's flag counts must not see its roundings
        stored, flags = round_exact(exact, fmt, rounding, **options)
        below, above = _neighbours(exact, fmt)
        return Explanation(
            fmt=fmt,
            rounding=rounding,
            input=exact,
            value=stored,
            code=int(encode(stored, fmt)),  # exact: stored is a value of fmt
            category=classify(stored, fmt),
            below=below,
            above=above,
            ulp=float(fmt.ulp(stored)),
            flags=flags,
        )


def _read(value: object) -> Exact:
    """A float64 for numbers (refusing what float64 cannot hold exactly), the exact value for text."""
    if isinstance(value, Fraction):  # an exact value, such as the command line reads: kept exact
        exact_decimal(value)  # refuses 1/3, which no decimal view could show exactly
        return value if value != 0 else 0.0
    if isinstance(value, str):
        return parse_real(value, "value")
    array, scalar = as_float64(value, "value")
    if not scalar:
        raise TypeError(f"value must be one real number, got {type(value).__name__}; explain one element at a time")
    return float(array)


def _neighbours(value: Exact, fmt: Format) -> tuple[float | None, float | None]:
    """fmt's values just below and above value; None where fmt has none there (fp4 past ±max, or NaN)."""
    as_float = exact_float64(value)
    low, high = (as_float, as_float) if as_float is not None else float64_neighbours(value)
    if not fmt.has_inf:  # its neighbours of ±inf are refused; of the largest float64s, they are ±max too
        low, high = max(low, -sys.float_info.max), min(high, sys.float_info.max)
    return _query(next_down, high, fmt), _query(next_up, low, fmt)  # fmt's values are float64s: none in (low, high)


def _query(neighbour, x: float, fmt: Format) -> float | None:
    try:
        found = float(neighbour(x, fmt))
    except ValueError:  # a format with neither infinity nor NaN has no value past ±max
        return None
    below_unsigned = not fmt.signed and math.isnan(found) and neighbour is next_down
    return None if below_unsigned else found  # no value of e8m0 lies below 2^-127: no code either, unlike past max


def describe_input(value: Exact) -> str:
    """The input as the first line of a view shows it: exact, and what float64 makes of it."""
    if isinstance(value, float):
        return f"{value!r} as float64 = {exact_decimal(value)}" if math.isfinite(value) else repr(value)
    if exact_float64(value) is not None:
        return f"{exact_decimal(value)} exactly (a float64 too)"
    low, high = float64_neighbours(value)
    if math.isinf(low) or math.isinf(high):
        return f"{exact_decimal(value)} exactly (beyond float64's range)"
    return f"{exact_decimal(value)} exactly (float64 would round it to {exact_decimal(float(value))})"


def _stdout_has_color() -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(os.environ.get("FORCE_COLOR")) or _stdout_is_terminal()


def _stdout_is_terminal() -> bool:
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


def _stdout_width() -> int:
    return shutil.get_terminal_size().columns if _stdout_is_terminal() else _PIPE_WIDTH


def _bits(explanation: Explanation) -> Text:
    fields = [Text(bits, style=_STYLES[name]) for name, bits in explanation.bit_fields.items()]
    return Text(" ").join(fields)


def _cells(explanation: Explanation) -> dict[str, Text]:
    rows = explanation.rows()
    return {label: _bits(explanation) if label == "bits" else Text(text) for label, text in rows.items()}


def _minimum_widths(explanations: list[Explanation]) -> list[int]:
    """Each format column keeps its bits on one line; decimals fold inside whatever width is left."""
    return [max(len(e.fmt.name), len(e.rows()["bits"]), _NARROWEST_COLUMN) for e in explanations]


def _fits_side_by_side(explanations: list[Explanation], width: int) -> bool:
    label_width = max(map(len, explanations[0].rows()))
    return label_width + sum(column + 2 for column in _minimum_widths(explanations)) <= width


def _column_widths(explanations: list[Explanation], width: int) -> list[int]:
    """The minimum widths, then the spare width shared out evenly to columns whose text is still folded."""
    widths = _minimum_widths(explanations)
    naturals = [max(map(len, e.rows().values())) for e in explanations]
    spare = width - max(map(len, explanations[0].rows())) - sum(w + 2 for w in widths)
    while spare > 0 and (hungry := [i for i, w in enumerate(widths) if w < naturals[i]]):
        share = max(1, spare // len(hungry))
        for i in hungry:
            extra = min(share, naturals[i] - widths[i], spare)
            widths[i] += extra
            spare -= extra
    return widths


def _view(explanations: list[Explanation], width: int) -> Group:
    """The headline, then one table with a column per format where the width allows, else a table per format.

    Long exact decimals fold inside their cell: every digit stays on screen.
    """
    first = explanations[0]
    headline = Text(f"{describe_input(first.input)}, rounding {first.rounding}", overflow="fold")
    if len(explanations) > 1 and _fits_side_by_side(explanations, width):
        table = _table("", [e.fmt.name for e in explanations], _column_widths(explanations, width))
        columns = [_cells(e) for e in explanations]
        for label in columns[0]:
            table.add_row(label, *(column[label] for column in columns))
        return Group(headline, table)
    parts: list[object] = [headline]
    label_width = max(map(len, first.rows()))
    for e in explanations:
        table = _table(e.fmt.name, [""], [max(width - label_width - 2, 1)])
        for label, cell in _cells(e).items():
            table.add_row(label, cell)
        parts += [Text(""), table] if len(explanations) > 1 else [table]  # a blank line between formats
    return Group(*parts)


def _table(corner: str, headers: list[str], widths: list[int]) -> Table:
    """Labels, then a column of a fixed width per header, in which long decimals fold."""
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), header_style="bold", collapse_padding=True)
    table.add_column(corner, no_wrap=True, style="bold" if corner else "")
    for header, width in zip(headers, widths):
        table.add_column(header, overflow="fold", width=width)
    return table


def render_table(explanations: list[Explanation], color: bool = False, width: int = _PIPE_WIDTH) -> str:
    """The terminal view as text, `width` columns wide, plain or with ANSI colours; no trailing spaces."""
    return render_text(_view(explanations, width), color, width)


def render_text(renderable: object, color: bool = False, width: int = _PIPE_WIDTH) -> str:
    """Any rich renderable as text, `width` columns wide, plain or with ANSI colours; no trailing spaces."""
    buffer = io.StringIO()
    Console(
        file=buffer,
        width=width,
        color_system="standard" if color else None,
        force_terminal=color,
        highlight=False,
        soft_wrap=False,
    ).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").split("\n"))


def render_html(explanations: list[Explanation]) -> str:
    """An HTML table with the bit fields coloured, for Jupyter."""
    columns = [e.rows() for e in explanations]
    head = "".join(f"<th>{html.escape(e.fmt.name)}</th>" for e in explanations)
    body = []
    for label in columns[0]:
        cells = []
        for e, c in zip(explanations, columns):
            if label == "bits":
                spans = (f'<span style="color:{_HTML_COLORS[n]}">{b}</span>' for n, b in e.bit_fields.items())
                cells.append(f"<td><code>{' '.join(spans)}</code></td>")
            else:
                cells.append(f"<td><code>{html.escape(c[label])}</code></td>")
        body.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    caption = html.escape(describe_input(explanations[0].input))
    return f"<table><caption>{caption}</caption><tr><th></th>{head}</tr>{''.join(body)}</table>"
