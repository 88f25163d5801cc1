"""fpsim: bit-exact floating-point formats, rounding and IEEE exception counts for mixed precision training."""

from fpsim.arithmetic import abs, add, div, fma, mul, neg, sqrt, sub
from fpsim.codec import classify, decode, encode, fields, next_down, next_up, round
from fpsim.explanation import Explanation, explain
from fpsim.flags import Flags, track_flags
from fpsim.formats import (
    BF16,
    FP4_E2M1,
    FP6_E2M3,
    FP6_E3M2,
    FP8_E4M3,
    FP8_E5M2,
    FP16,
    FP32,
    FP64,
    PRESETS,
    TF32,
    Format,
    get_format,
)
from fpsim.rounding import ROUNDING_MODES

__version__ = "0.1.0"

__all__ = [
    "BF16",
    "FP4_E2M1",
    "FP6_E2M3",
    "FP6_E3M2",
    "FP8_E4M3",
    "FP8_E5M2",
    "FP16",
    "FP32",
    "FP64",
    "PRESETS",
    "ROUNDING_MODES",
    "TF32",
    "Explanation",
    "Flags",
    "Format",
    "abs",
    "add",
    "classify",
    "decode",
    "div",
    "encode",
    "explain",
    "fields",
    "fma",
    "get_format",
    "mul",
    "neg",
    "next_down",
    "next_up",
    "round",
    "sqrt",
    "sub",
    "track_flags",
]
