"""One look for every figure: a colour and line style per format, a colour, line style and marker per policy,
safe for print and colour blindness.

Invariant: a format keeps the same style in every figure (presets fixed, custom formats by a stable hash).
"""

from __future__ import annotations

import zlib

from fpsim.formats import Format, get_format

# Okabe–Ito: distinguishable with the common colour-vision deficiencies; line styles and markers carry the
# same distinction in greyscale print.
# Okabe–Ito without its pale yellow, plus Tol's wine and teal: ten colours for the ten presets.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#882255", "#999999",
           "#44AA99")  # fmt: skip
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1)), (0, (5, 5)), (0, (3, 5, 1, 5)),
              (0, (8, 2, 2, 2)))  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")  # sparse marks keep coinciding lines apart
_PRESET_ORDER = ("fp64", "fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "tf32", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1",
                 "e8m0")  # fmt: skip
FIELD_COLORS = {"sign": "#CC79A7", "exponent": "#0072B2", "mantissa": "#E69F00"}  # as in explain's HTML view
FIELD_TEXT_COLORS = {"sign": "black", "exponent": "white", "mantissa": "black"}  # contrast of 5:1 or more
REGION_COLORS = {"flush": "#D55E00", "subnormal": "#E69F00", "normal": "#009E73", "overflow": "#000000"}


def _index(fmt: Format) -> int:
    if fmt.name in _PRESET_ORDER:
        return _PRESET_ORDER.index(fmt.name)
    return zlib.crc32(fmt.name.encode()) % len(PALETTE)  # stable across runs, unlike hash()


def _fnuz_sibling(fmt: Format) -> str | None:
    """The preset a fnuz format varies (fp8_e4m3fnuz: fp8_e4m3), whose colour it shares; None for other formats."""
    sibling = fmt.name.removesuffix("fnuz")
    return sibling if fmt.nan == "negative_zero" and sibling != fmt.name and sibling in _PRESET_ORDER else None


def style(fmt: Format | str) -> dict:
    """Matplotlib keyword arguments (color, linestyle) for a format's lines; past the palette, and for the fnuz
    siblings, the colour comes round again with another line style."""
    fmt = get_format(fmt)
    sibling = _fnuz_sibling(fmt)
    if sibling:
        i = _PRESET_ORDER.index(sibling)
        return {"color": PALETTE[i], "linestyle": LINESTYLES[(i + 5) % len(LINESTYLES)]}
    i = _index(fmt)
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[(i + i // len(PALETTE)) % len(LINESTYLES)]}


_POLICY_ORDER = ("fp32", "fp16", "amp", "bf16", "fp8", "fp16-static", "fp16-dynamic")


def policy_style(name: str) -> dict:
    """Colour, line style and marker of a training policy: fixed for the presets, a stable hash for custom ones."""
    i = _POLICY_ORDER.index(name) if name in _POLICY_ORDER else zlib.crc32(name.encode()) % len(PALETTE)
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)]}  # fmt: skip
