"""Figures of single values: every value of a small format on number lines, and the bits of one value.

Invariant: values and bit fields come from the codec (`decode`, `explain`); nothing is rounded here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from fpsim.codec import decode
from fpsim.explanation import Explanation, explain
from fpsim.formats import Format
from fpsim.plots.layout import formats_list, panel_grid, power_label
from fpsim.plots.style import FIELD_COLORS, FIELD_TEXT_COLORS, REGION_COLORS

MAX_NUMBER_LINE_BITS = 10  # 512 non-negative codes: beyond that the points merge into a smear
NUMBER_LINE_PANELS = 3  # linear over the whole range, linear near zero, log2


def number_line(formats: Sequence[Format | str] | Format | str, ax: object = None):
    """Every non-negative finite value of each small format, on three number lines (one group per format):
    linear over the whole range, linear near zero (the subnormals), and log2."""
    fmts = formats_list(formats)
    for fmt in fmts:
        if fmt.bits > MAX_NUMBER_LINE_BITS:
            raise ValueError(
                f"number_line draws every value; {fmt.name} has {fmt.max_code + 1} non-negative codes, too many to "
                f"see apart: use a format of at most {MAX_NUMBER_LINE_BITS} bits (fp8, fp6, fp4 or a custom eXmY)"
            )
    figure, grid = panel_grid(ax, NUMBER_LINE_PANELS * len(fmts), 1, (10, 4.8 * len(fmts)))
    for i, fmt in enumerate(fmts):
        _number_lines(fmt, *grid[NUMBER_LINE_PANELS * i : NUMBER_LINE_PANELS * (i + 1), 0])
    return figure, grid[:, 0]


def _number_lines(fmt: Format, whole: Axes, near_zero: Axes, logarithmic: Axes) -> None:
    values = np.unique(decode(np.arange(fmt.max_code + 1), fmt))  # flush-to-zero codes collapse onto 0
    subnormal = (values > 0) & (values < fmt.smallest_normal)
    zoom = values[values <= 2 * fmt.smallest_normal]
    panels = ((whole, values), (near_zero, zoom), (logarithmic, values[values > 0]))
    for k, (axis, shown) in enumerate(panels):
        sub = (shown > 0) & (shown < fmt.smallest_normal)
        axis.plot(shown[~sub], np.zeros((~sub).sum()), "|", markersize=16, color=REGION_COLORS["normal"],
                  label="normal" + (" (and zero)" if shown[0] == 0 else ""), gid="normal")  # fmt: skip
        if sub.any():
            axis.plot(shown[sub], np.zeros(sub.sum()), "|", markersize=16, color=REGION_COLORS["subnormal"],
                      label="subnormal", gid="subnormal")  # fmt: skip
        axis.set_yticks([])
        if k == 0:
            axis.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8)
    whole.set_xlabel("x (linear): each binade $[2^e, 2^{e+1})$ holds as many values as the last, twice as far apart")
    whole.set_title(f"{fmt.name}: all {len(values)} non-negative values — linear, the whole range up to max "
                    f"{fmt.max:g}", fontsize=10)  # fmt: skip
    ticks = [0.0, *values[subnormal][:1], fmt.smallest_normal, 2 * fmt.smallest_normal]
    near_zero.set_xticks(ticks, [power_label(t) if t else "0" for t in ticks])
    if subnormal.any():
        spacing = power_label(fmt.smallest_subnormal)
        near_zero.set_xlabel(f"x (linear) from 0 to twice the least normal: subnormals {spacing} apart, as in the "
                             "first normal binade")  # fmt: skip
    else:
        near_zero.set_xlabel("x (linear) from 0 to twice the least normal: no subnormals, a gap below the least normal")
    near_zero.set_title(f"{fmt.name}, linear near zero: " + ("subnormals fill the gap below the least normal evenly"
                        if subnormal.any() else "nothing between 0 and the least normal"), fontsize=10)  # fmt: skip
    logarithmic.set_xscale("log", base=2)
    least = values[values > 0][0]
    step = 1 if fmt.emax - np.log2(least) <= 20 else 2
    ticks = [least] + [t for t in np.ldexp(1.0, np.arange(-100, 100, step)) if least * 1.5 < t <= fmt.max]
    logarithmic.set_xticks(ticks, [power_label(t) for t in ticks])
    logarithmic.set_xlabel(f"x (log2 axis); the least positive value is {power_label(least)}")
    logarithmic.set_title(f"{fmt.name}, log2 axis: every normal binade is as wide and as full"
                          + ("; subnormals thin out toward 0" if subnormal.any() else ""), fontsize=10)  # fmt: skip


def bit_layout(value: float, formats: Sequence[Format | str] | Format | str, rounding: str = "nearest_even",
               ax: object = None):  # fmt: skip
    """The bits of `value` stored in each format as boxes coloured by field, indexed from the top bit, with
    the exponent arithmetic and the decoded value written below."""
    explanations = [explain(value, fmt, rounding) for fmt in formats_list(formats)]
    widest = max(e.fmt.bits for e in explanations)  # one box size for every format in the figure
    figure, grid = panel_grid(ax, len(explanations), 1, (max(7.0, 0.45 * widest + 1), 3.0 * len(explanations)))
    for e, axis in zip(explanations, grid[:, 0]):
        _bit_boxes(axis, e, widest)
    return figure, grid[0, 0] if len(explanations) == 1 else grid[:, 0]


def _bit_boxes(ax: Axes, e: Explanation, widest: int) -> None:
    fmt, position = e.fmt, 0
    for field_name, bits in e.bit_fields.items():
        for bit in bits:
            ax.add_patch(Rectangle((position, 0), 1, 1, facecolor=FIELD_COLORS[field_name], edgecolor="white",
                                   gid=field_name))  # fmt: skip
            ax.text(position + 0.5, 0.5, bit, ha="center", va="center", fontsize=12,
                    color=FIELD_TEXT_COLORS[field_name], weight="bold")  # fmt: skip
            ax.text(position + 0.5, 1.08, str(fmt.bits - 1 - position), ha="center", va="bottom", fontsize=7,
                    color="#555555")  # fmt: skip
            position += 1
        if bits:
            ax.text(position - len(bits) / 2, 1.45, field_name, ha="center", fontsize=9)
    lines = _field_meanings(e)
    for row, (field_name, text) in enumerate(lines):
        ax.add_patch(Rectangle((0, -0.62 - 0.42 * row), 0.3, 0.3, facecolor=FIELD_COLORS.get(field_name, "white"),
                               edgecolor="none"))  # fmt: skip
        ax.text(0.45, -0.47 - 0.42 * row, text, fontsize=9, va="center")
    raised = ", ".join(n for n, c in e.flags.as_dict().items() if c and n != "total") or "exact"
    ax.text(0, -0.55 - 0.42 * len(lines), f"input {e.input!r} → hex 0x{e.code:0{(fmt.bits + 3) // 4}x}, error "
            f"{float(e.abs_error):+.3g}, rounding {e.rounding}: {raised}", fontsize=8, color="#444444")  # fmt: skip
    ax.set_xlim(-0.2, max(widest, 7) + 0.2)  # text lines need room even beside a 4-bit format
    ax.set_ylim(-0.85 - 0.42 * len(lines), 1.8)
    ax.set_axis_off()
    ax.set_title(f"{e.input!r} stored in {fmt.name} (bit {fmt.bits - 1} on the left, bit 0 on the right)", loc="left")


def _field_meanings(e: Explanation) -> list[tuple[str, str]]:
    """(field, sentence) lines: what each field contributes, then the value they make."""
    fields, fmt = {"sign": "", "mantissa": "", **e.bit_fields}, e.fmt  # e8m0 has neither sign nor mantissa bits
    sign = "−" if fields["sign"] == "1" else "+"
    lines = [("sign", f"sign {fields['sign']}: {sign}" if fmt.signed else "no sign bit: every value is positive")]
    if e.category in ("inf", "nan", "zero"):
        code = f"exponent {fields['exponent']}₂ with mantissa {fields['mantissa'] or '(no bits)'}"
        if fmt.nan == "negative_zero" and e.category == "nan":
            lines = [("sign", "sign 1 over a zero field: the code −0 would have, fnuz's one NaN")]
        value = f"{sign}0" if e.category == "zero" else f"{sign}inf" if e.category == "inf" else "nan"
        return [*lines, ("exponent", f"{code}: the code of {e.category} in {fmt.name}"), ("value", f"value = {value}")]
    if e.category == "normal":
        arithmetic = f"biased {e.biased_exponent} − {fmt.bias} = {_minus(e.exponent)}"
        lead = "1."
    else:  # subnormal: biased 0 stands for the least normal exponent, without the implicit leading 1
        arithmetic = f"biased 0 means subnormal: 1 − {fmt.bias} = {_minus(e.exponent)}"
        lead = "0."
    significand = f"{lead}{fields['mantissa']}₂" if fields["mantissa"] else lead.rstrip(".")
    implicit = "implicit leading 1" if lead == "1." else "no implicit leading 1"
    stored = e.exact_value if len(e.exact_value) < 40 else repr(float(e.value))
    return [
        *lines,
        ("exponent", f"exponent {fields['exponent']}₂: {arithmetic}"),
        ("mantissa", f"mantissa {fields['mantissa'] or '(no bits)'}: significand {significand} ({implicit})"),
        ("value", f"value = {sign}$2^{{{e.exponent}}}$ × {significand} = {stored}"),
    ]


def _minus(number: int) -> str:
    return str(number).replace("-", "−")  # the typographic minus, as in the arithmetic beside it
