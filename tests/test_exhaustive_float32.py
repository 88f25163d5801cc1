"""Opt-in: every one of the 2^32 float32 bit patterns, rounded by fpsim and by the reference casts.

Run with `python -m pytest -m heavy` (about 12 minutes on 2 cores); the default suite deselects it.
"""

import numpy as np
import pytest
from oracle import ML_DTYPES_CASTS, same_bits

import fpsim

BLOCK = 1 << 24
CASES = [("fp16", np.float16, {})] + [
    (name, dtype, {"on_nan": "ml_dtypes"} if fpsim.get_format(name).nan == "none" else {})
    for name, dtype in ML_DTYPES_CASTS.items()
]


@pytest.mark.heavy
@pytest.mark.parametrize(("name", "reference", "options"), CASES, ids=[c[0] for c in CASES])
def test_every_float32_rounds_like_the_reference(name, reference, options):
    fmt = fpsim.get_format(name)
    for start in range(0, 1 << 32, BLOCK):
        x = np.arange(start, start + BLOCK, dtype=np.uint64).astype(np.uint32).view(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # numpy warns on overflow, ml_dtypes on NaN widening
            expected = x.astype(reference).astype(np.float64)
        ours = fpsim.round(x, fmt, **options)
        mismatches = np.count_nonzero(~same_bits(ours, expected))
        assert mismatches == 0, f"{mismatches} mismatches among float32 patterns {start:#x}..{start + BLOCK - 1:#x}"
