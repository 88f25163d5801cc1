"""torch's own casts to narrow dtypes, and the overflow policy each applies on this install and device.

Invariant: `fpsim.torch.round(x, fmt, overflow=native_overflow(dtype))` equals `x.to(dtype)` bit for bit on float32 x,
for every (fmt, dtype) in NATIVE_CASTS (NaN payloads aside).
"""

from __future__ import annotations

import math

import torch

from fpsim.formats import get_format

__all__ = ["NATIVE_CASTS", "native_overflow"]

NATIVE_CASTS = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e5m2": torch.float8_e5m2,
    "fp8_e4m3": torch.float8_e4m3fn,
}


def native_overflow(dtype: torch.dtype, device: str | torch.device = "cpu") -> str:
    """What torch's float32 -> `dtype` cast gives past the format's max, detected: 'inf', 'saturate' or 'nan'.

    Detected, not assumed: torch 2.13 saturates float8_e4m3fn to ±448, older releases give NaN.
    """
    if dtype not in NATIVE_CASTS.values():
        names = ", ".join(str(d) for d in NATIVE_CASTS.values())
        raise ValueError(f"dtype must be one of {names}; got {dtype}")
    fmt = get_format(dtype)
    past_max = torch.tensor([2 * fmt.max], dtype=torch.float32, device=device).to(dtype).float().item()
    if math.isnan(past_max):
        return "nan"
    return "inf" if math.isinf(past_max) else "saturate"
