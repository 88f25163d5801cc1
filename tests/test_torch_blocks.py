"""fpsim.torch.quantize_blocks is fpsim.quantize_blocks bit for bit, on every device present.

The NumPy version is checked against an exact reference in test_blocks.py; here every field of the torch result
(values, elements, scales, tensor scale, flags) must carry the very same float64 bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fpsim
import fpsim.torch
from fpsim import BLOCK_FORMATS, BlockFormat

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
MODES = ("floor", "rceil", "even")


def assert_same_bits(numpy_result, torch_result) -> None:
    for name in ("values", "elements", "scales"):
        expected = getattr(numpy_result, name)
        got = getattr(torch_result, name)
        assert got.dtype == torch.float64, name
        np.testing.assert_array_equal(got.cpu().numpy().view(np.int64), expected.view(np.int64), err_msg=name)
    for name in ("flushed", "saturated", "nan"):
        np.testing.assert_array_equal(
            getattr(torch_result.flags, name).cpu().numpy(), getattr(numpy_result.flags, name)
        )
    assert torch_result.tensor_scale == numpy_result.tensor_scale
    assert (torch_result.axis, torch_result.scale_mode, torch_result.fmt) == (
        numpy_result.axis,
        numpy_result.scale_mode,
        numpy_result.fmt,
    )


@st.composite
def cases(draw):
    """A block format and scale mode, a 1- to 3-D float64 array with wide exponents, zeros and specials, an axis."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 40 if ndim == 1 else 9), min_size=ndim, max_size=ndim)))
    size = math.prod(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spread = draw(st.integers(0, 150))  # past 2^128 only for MX: nvfp4's fp32 tensor scale refuses it (test_blocks)
    significands = rng.integers(-64, 65, size) if draw(st.booleans()) else rng.standard_normal(size)  # short: ties
    x = significands * np.exp2(rng.integers(-spread, spread + 1, size))
    nvfp4 = draw(st.booleans())
    if nvfp4:
        x = x * 2.0**-30  # keep amax / 2688 within float32's range
    # extremes: beside a block amax past 2^135 (MX) or 1e38 (nvfp4), x / scale underflows float64
    extremes = [1e38, -3e37, 5e-324, -1e-300, 3.5e-320] if nvfp4 else [2.0**900, -1e300, 5e-324, -1e-300, 3.5e-320]
    specials = [0.0, -0.0, math.nan, math.inf, -math.inf, *extremes]
    for special in draw(st.lists(st.sampled_from(specials), max_size=6)):
        x[rng.integers(size)] = special
    element = draw(st.sampled_from(["fp8_e4m3", "fp8_e4m3fnuz", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"]))
    if not nvfp4:
        fmt, mode = BlockFormat(element, "e8m0", draw(st.integers(1, 33))), draw(st.sampled_from(MODES))
    else:
        fmt, mode = BlockFormat(element, "fp8_e4m3", draw(st.integers(1, 17))), None
    return x.reshape(shape), fmt, mode, draw(st.integers(-ndim, ndim - 1))


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=100)
@given(case=cases(), rounding=st.sampled_from(["nearest_even", "nearest_away", "toward_zero", "up", "down", "odd"]))
def test_bit_identical_to_numpy(device, case, rounding):
    x, fmt, mode, axis = case
    expected = fpsim.quantize_blocks(x, fmt, axis=axis, scale_mode=mode, rounding=rounding)
    got = fpsim.torch.quantize_blocks(torch.tensor(x, device=device), fmt, axis, mode, rounding)
    assert got.values.device.type == device
    assert_same_bits(expected, got)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("element", ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"])
@pytest.mark.parametrize("mode", MODES)
def test_scale_mode_boundaries(device, element, mode):
    # m = amax / 2^floor(log2 amax) at and around where rceil (m·2^emax > max) and even (m >= 2 - 2^-(nmant+1)) move
    m = np.array(
        [1.0, 1.5, 1.5 + 2**-20, 1.625, 1.75, 1.75 + 2**-20, 1.875, 1.875 + 2**-20, 1.9375, 1.96875, 2 - 2**-20]
    )
    x = np.concatenate([m, -m]) * 2.0 ** np.arange(-20, 2)  # one exponent per value
    fmt = BlockFormat(element, "e8m0", 1)  # one block per value: each value is its block's amax
    expected = fpsim.quantize_blocks(x, fmt, scale_mode=mode)
    assert_same_bits(expected, fpsim.torch.quantize_blocks(torch.tensor(x, device=device), fmt, scale_mode=mode))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(BLOCK_FORMATS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_presets_on_narrow_dtypes(device, name, dtype):
    x = (torch.randn(7, 50, generator=torch.Generator().manual_seed(3)) * 40).to(dtype)
    mode = None if name == "nvfp4" else "rceil"
    expected = fpsim.quantize_blocks(x.float().numpy(), name, scale_mode=mode)
    assert_same_bits(expected, fpsim.torch.quantize_blocks(x.to(device), name, scale_mode=mode))


@pytest.mark.parametrize("device", DEVICES)
def test_given_tensor_scale_partial_blocks_and_empty_input(device):
    x = np.linspace(-50, 50, 45)
    for kwargs in ({"tensor_scale": 0.25}, {"partial": False}):
        fmt = "nvfp4" if "tensor_scale" in kwargs else "mxfp4"
        data = x if "tensor_scale" in kwargs else x[:32]
        expected = fpsim.quantize_blocks(data, fmt, **kwargs)
        assert_same_bits(expected, fpsim.torch.quantize_blocks(torch.tensor(data, device=device), fmt, **kwargs))
    for shape in [(0, 5), (3, 0)]:
        expected = fpsim.quantize_blocks(np.zeros(shape), "mxfp8")
        assert_same_bits(expected, fpsim.torch.quantize_blocks(torch.zeros(shape, device=device), "mxfp8"))


def test_track_flags_counts_none_of_the_kernels_roundings():
    with fpsim.track_flags() as flags:
        fpsim.torch.quantize_blocks(torch.linspace(-3, 3, 256, dtype=torch.float64), "nvfp4")
    assert flags.total == 0


def test_stochastic_rounding_draws_from_the_generator():
    x = torch.full((64,), 1.25)  # X = 2^(0 - 2): 1.25 / X = 5 lies between e2m1's 4 and 6, each draw picks one
    first = fpsim.torch.quantize_blocks(x, "mxfp4", rounding="stochastic", generator=7)
    again = fpsim.torch.quantize_blocks(x, "mxfp4", rounding="stochastic", generator=7)
    assert torch.equal(first.values, again.values)
    assert set(first.elements.tolist()) == {4.0, 6.0} and set(first.values.tolist()) == {1.0, 1.5}


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "match"),
    [
        (np.ones(3), {}, TypeError, "x must be a torch tensor"),
        (torch.ones(3, dtype=torch.int32), {}, TypeError, "floating-point tensor"),
        (torch.ones(33), {"partial": False}, ValueError, "not a multiple of the block size"),
        (torch.tensor([1.0, math.nan]), {"on_nan": "raise"}, ValueError, "NaN or ±inf in 1 block"),
        (torch.ones(3), {"scale_mode": "ceil"}, ValueError, "scale_mode must be one of"),
        (torch.ones(3), {"axis": 2}, ValueError, "out of range"),
        (torch.tensor(1.0), {}, ValueError, "at least one dimension"),
    ],
)
def test_bad_input_gets_the_numpy_versions_errors(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        fpsim.torch.quantize_blocks(x, "mxfp4", **kwargs)


def test_a_seed_gives_one_stream_for_full_and_short_blocks():
    x = torch.full((63,), 1.25)
    elements = fpsim.torch.quantize_blocks(x, "mxfp4", rounding="stochastic", generator=3).elements
    assert not torch.equal(elements[:31], elements[32:])
