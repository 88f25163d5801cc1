"""fpsim: bit-exact floating-point formats, rounding and IEEE exception counts for mixed precision training."""

from fpsim.accumulation import MODELS, AccumulationModel, dot, matmul, sum
from fpsim.arithmetic import abs, add, div, fma, mul, neg, sqrt, sub
from fpsim.array import FPArray, array
from fpsim.calc import calc
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
    "MODELS",
    "PRESETS",
    "ROUNDING_MODES",
    "TF32",
    "AccumulationModel",
    "Explanation",
    "FPArray",
    "Flags",
    "Format",
    "abs",
    "add",
    "array",
    "calc",
    "classify",
    "decode",
    "div",
    "dot",
    "encode",
    "explain",
    "fields",
    "fma",
    "get_format",
    "matmul",
    "mul",
    "neg",
    "next_down",
    "next_up",
    "round",
    "sqrt",
    "sub",
    "sum",
    "track_flags",
]
