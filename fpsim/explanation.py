"""What one number becomes in a format: bits, class, stored value and exact rounding error, for terminals and notebooks.

Invariant: every decimal shown is the exact expansion of a dyadic rational, never a repr.
"""

from __future__ import annotations

import html
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from fpsim._inputs import as_float64
from fpsim.codec import classify, decode, encode, next_down, next_up
from fpsim.flags import Flags, suspended
from fpsim.formats import Format, get_format

_COLORS = {"sign": "35", "exponent": "34", "mantissa": "33"}  # magenta | blue | yellow: safe for colour blindness
_HTML_COLORS = {"sign": "#cc79a7", "exponent": "#0072b2", "mantissa": "#e69f00"}  # Okabe-Ito palette
_LONG = 60  # significant digits shown before an exact decimal is elided in tables


def exact_decimal(value: Fraction | float) -> str:
    """The exact decimal expansion of a dyadic rational (every finite float is one).

    Plain notation between 1e-4 and 1e16 ('0.1000000000000000055511151231257827021181583404541015625'),
    exact scientific notation outside it ('5.9604644775390625e-8').
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float) and value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    fraction = Fraction(value)
    twos = fraction.denominator.bit_length() - 1
    if fraction.denominator != 1 << twos:
        raise ValueError(f"value must be a dyadic rational, got {fraction}")
    sign = "-" if fraction < 0 else ""
    digits = str(abs(fraction.numerator) * 5**twos)  # n/2^k = n·5^k / 10^k exactly
    exponent = len(digits) - 1 - twos  # of the leading digit
    digits = digits.rstrip("0") or "0"
    if fraction == 0 or -4 <= exponent < 16:
        padded = digits.rjust(twos + 1, "0") if exponent < 0 else digits.ljust(exponent + 1, "0")
        point = max(exponent, 0) + 1
        whole, decimals = padded[:point], padded[point:]
        return f"{sign}{whole}.{decimals}" if decimals else f"{sign}{whole}"
    mantissa = f"{digits[0]}.{digits[1:]}" if len(digits) > 1 else digits
    return f"{sign}{mantissa}e{exponent}"


def _elide(decimal: str) -> str:
    """Shorten a long exact decimal to its first significant digits, saying how many there are."""
    mantissa, _, exponent = decimal.partition("e")
    significant = mantissa.lstrip("-0.").replace(".", "")
    if len(significant) <= _LONG:
        return decimal
    cut = len(mantissa) - len(mantissa.lstrip("-0.")) + _LONG + ("." in mantissa.lstrip("-0.")[:_LONG])
    return f"{mantissa[:cut]}…({len(significant)} digits){'e' + exponent if exponent else ''}"


@dataclass(frozen=True)
class Explanation:
    """One value rounded to one format, with everything a learner needs to see why it became what it did."""

    fmt: Format
    rounding: str
    input: float
    value: float
    code: int
    category: str
    below: float
    above: float
    ulp: float
    flags: Flags

    @property
    def bit_fields(self) -> dict[str, str]:
        bits = format(self.code, f"0{self.fmt.bits}b")
        return {"sign": bits[0], "exponent": bits[1 : 1 + self.fmt.nexp], "mantissa": bits[1 + self.fmt.nexp :]}

    @property
    def biased_exponent(self) -> int:
        return (self.code >> self.fmt.nmant) & (2**self.fmt.nexp - 1)

    @property
    def exponent(self) -> int | None:
        """The unbiased exponent; emin for zeros and subnormals, None for inf and NaN."""
        if self.category in ("inf", "nan"):
            return None
        return max(self.biased_exponent, 1) - self.fmt.bias

    @property
    def exact_input(self) -> str:
        return exact_decimal(self.input)

    @property
    def exact_value(self) -> str:
        return exact_decimal(self.value)

    @property
    def abs_error(self) -> Fraction | float:
        """stored − input, exact; NaN or inf where either side is not finite."""
        if not (math.isfinite(self.value) and math.isfinite(self.input)):
            return 0.0 if self.value == self.input else self.value - self.input  # inf - inf is NaN
        return Fraction(self.value) - Fraction(self.input)

    @property
    def rel_error(self) -> float:
        error = self.abs_error
        if isinstance(error, float) or self.input == 0:
            return error if isinstance(error, float) else (0.0 if error == 0 else math.inf)
        return float(error / Fraction(self.input))

    def rows(self) -> dict[str, str]:
        """The labelled lines of the view, plain text."""
        error = self.abs_error
        error_text = _elide(exact_decimal(error)) if isinstance(error, Fraction) else str(error)
        if isinstance(error, Fraction) and math.isfinite(self.ulp):
            error_text += f" ({float(error / Fraction(self.ulp)):+.4g} ulp)"
        exponent = "—" if self.exponent is None else f"{self.exponent:+d} (biased {self.biased_exponent})"
        return {
            "bits": " ".join(self.bit_fields.values()),
            "hex": f"0x{self.code:0{(self.fmt.bits + 3) // 4}x}",
            "class": self.category,
            "exponent": exponent,
            "stored value": _elide(self.exact_value),
            "abs error": error_text,
            "rel error": f"{self.rel_error:.4g}",
            "ulp": _elide(exact_decimal(self.ulp)),
            "below": _elide(exact_decimal(self.below)),
            "above": _elide(exact_decimal(self.above)),
            "flags": ", ".join(n for n, c in self.flags.as_dict().items() if c and n != "total") or "exact",
        }

    def render(self, color: bool = False) -> str:
        return render_table([self], color)

    def __str__(self) -> str:
        return self.render(_stdout_has_color())

    def _repr_html_(self) -> str:
        return render_html([self])


class ExplanationGroup(tuple):
    """Explanations of one value in several formats, shown side by side."""

    def render(self, color: bool = False) -> str:
        return render_table(list(self), color)

    def __str__(self) -> str:
        return self.render(_stdout_has_color())

    def _repr_html_(self) -> str:
        return render_html(list(self))


def explain(value: float, fmt: Format | str | Sequence[Format | str], rounding: str = "nearest_even", **options):
    """Explain how `value` is stored in `fmt` (or in each of a list of formats, side by side).

    `value` is read as a float64 (Python's float('0.1') is already rounded once; the view shows that
    input's exact expansion). `options` are those of `fpsim.round` (overflow, rng, on_nan).
    """
    if isinstance(fmt, (list, tuple)):
        if not fmt:
            raise ValueError("fmt must name at least one format")
        return ExplanationGroup(explain(value, f, rounding, **options) for f in fmt)
    fmt = get_format(fmt)
    array, scalar = as_float64(value, "value")  # refuses what float64 cannot hold exactly
    if not scalar:
        raise TypeError(f"value must be one real number, got {type(value).__name__}; explain one element at a time")
    x = float(array)
    with suspended():  # explaining is a query: the caller's flag counts must not see its roundings
        code, flags = encode(x, fmt, rounding, flags=True, **options)
        stored = float(decode(code, fmt))
        return Explanation(
            fmt=fmt,
            rounding=rounding,
            input=x,
            value=stored,
            code=int(code),
            category=classify(stored, fmt),
            below=float(next_down(x, fmt)),
            above=float(next_up(x, fmt)),
            ulp=float(fmt.ulp(stored)),
            flags=flags,
        )


def _stdout_has_color() -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(os.environ.get("FORCE_COLOR")) or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())


def _paint(explanation: Explanation, text: str, color: bool) -> str:
    if not color:
        return text
    parts = [f"\x1b[{_COLORS[name]}m{bits}\x1b[0m" for name, bits in explanation.bit_fields.items()]
    return " ".join(parts) + text[len(" ".join(explanation.bit_fields.values())) :]


def render_table(explanations: list[Explanation], color: bool = False) -> str:
    """A plain or ANSI-coloured table: one column per format, one row per property."""
    first = explanations[0]
    columns = [e.rows() for e in explanations]
    labels = list(columns[0])
    widths = [max(len(e.fmt.name), *(len(c[label]) for label in labels)) for e, c in zip(explanations, columns)]
    label_width = max(map(len, labels))
    lines = [
        f"{first.input!r} as float64 = {_elide(first.exact_input)}, rounding {first.rounding}",
        " " * label_width + "  " + "  ".join(e.fmt.name.ljust(w) for e, w in zip(explanations, widths)).rstrip(),
    ]
    for label in labels:
        cells = [
            _paint(e, c[label].ljust(w), color) if label == "bits" else c[label].ljust(w)
            for e, c, w in zip(explanations, columns, widths)
        ]
        lines.append(f"{label.ljust(label_width)}  {'  '.join(cells)}".rstrip())
    return "\n".join(lines)


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
    caption = html.escape(f"{explanations[0].input!r} (float64 {_elide(explanations[0].exact_input)})")
    return f"<table><caption>{caption}</caption><tr><th></th>{head}</tr>{''.join(body)}</table>"
