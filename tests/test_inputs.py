"""Inputs: scalars give scalars, shapes are kept, numpy/ml_dtypes/torch inputs widen exactly, bad input is refused."""

from decimal import Decimal
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
import torch
from oracle import same_bits

import fpsim


@pytest.mark.parametrize(
    "scalar", [0.1, 3, np.float16(0.1), np.float32(0.1), np.float64(0.1), np.int32(7), Fraction(1, 8)]
)
def test_scalars_in_give_scalars_out(scalar):
    result = fpsim.round(scalar, "bf16")
    assert np.ndim(result) == 0 and not isinstance(result, np.ndarray)
    assert result == float(np.asarray(scalar, dtype=np.float32).astype(ml_dtypes.bfloat16))
    assert np.ndim(fpsim.encode(scalar, "bf16")) == 0 and isinstance(fpsim.encode(scalar, "bf16"), np.uint16)


def test_shapes_and_layouts_are_kept():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7
    assert fpsim.round(x, "fp16").shape == (2, 3, 4)
    assert np.array_equal(fpsim.round(x.T, "fp16"), x.T.astype(np.float16))  # non-contiguous input
    assert np.array_equal(fpsim.round(x[:, ::2, 1:], "fp16"), x[:, ::2, 1:].astype(np.float16))
    assert fpsim.round(np.empty((0, 3)), "fp16").shape == (0, 3)
    assert fpsim.round(np.asarray(1.5), "fp16").shape == ()  # a 0-d array stays an array
    assert fpsim.round([[0.1, 0.2]], "fp16").tolist() == [[0.0999755859375, 0.199951171875]]


def test_signaling_nans_are_accepted_quietly():
    x = np.uint32([0x7F800001, 0xFF800001, 0x7FC00000]).view(np.float32)
    assert fpsim.encode(x, "fp16").tolist() == [0x7E00, 0xFE00, 0x7E00]


def test_long_arrays_cross_chunk_boundaries():
    x = np.linspace(-70_000, 70_000, 100_003)
    with np.errstate(over="ignore"):
        assert same_bits(fpsim.round(x, "fp16"), x.astype(np.float16)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32])
def test_torch_cpu_tensors_widen_exactly(dtype):
    tensor = (torch.linspace(-3, 3, 101) * 1000).to(dtype)
    expected = tensor.to(torch.float16).to(torch.float64).numpy()
    assert same_bits(fpsim.round(tensor, "fp16"), expected).all()


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float4_e2m1fn])
def test_ml_dtypes_arrays_widen_exactly(dtype):
    x = np.linspace(-4, 4, 50).astype(dtype)
    assert same_bits(fpsim.round(x, "fp64"), x.astype(np.float64)).all()


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (True, TypeError, "x must be a real number, got bool"),
        (np.array([True, False]), TypeError, "x must hold real numbers"),
        (1 + 2j, TypeError, "x must hold real numbers"),
        (2**70, ValueError, "beyond 2\\^53"),
        (np.array([1 + 2j]), TypeError, "x must hold real numbers"),
        ("0.1", TypeError, "x must be a number or an array of numbers, got str"),
        (["a", "b"], TypeError, "x must hold only real numbers"),
        ([1.0, None], TypeError, "x must hold only real numbers"),
        ([1.5, 2**60 + 1], ValueError, "beyond 2\\^53"),
        (np.array([2**60]), ValueError, "beyond 2\\^53"),
        (2**60 + 1, ValueError, "beyond 2\\^53"),
        (np.array([1.0], dtype=np.longdouble), TypeError, "wider than float64"),
        (torch.tensor([True]), TypeError, "x must hold real numbers"),
        (torch.tensor([2**60 + 1]), ValueError, "beyond 2\\^53"),
        (np.int64(2**53 + 1), ValueError, "beyond 2\\^53"),
        ([np.int64(2**60 + 1)], ValueError, "beyond 2\\^53"),
        (Fraction(1, 3), ValueError, "float64 cannot hold exactly"),
        ([0.5, Fraction(1, 3)], ValueError, "float64 cannot hold exactly"),
        (Decimal("0.1"), TypeError, "got Decimal"),
        ([[1.0], [2.0, 3.0]], TypeError, "ragged"),
        (torch.tensor([1j]), TypeError, "x must hold real numbers"),
    ],
)
def test_bad_inputs_are_refused_with_the_argument_named(x, error, message):
    with pytest.raises(error, match=message):
        fpsim.round(x, "fp16")


MASKED = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: fpsim.round(MASKED, "fp16"), "x"),
        (lambda: fpsim.encode(MASKED, "fp16"), "x"),
        (lambda: fpsim.round([MASKED, MASKED], "fp16"), "x"),  # nested in a list, the mask would vanish too
        (lambda: fpsim.round(np.ma.masked, "fp16"), "x"),
        (lambda: fpsim.decode(np.ma.masked_array([0x3C00], mask=[True]), "fp16"), "bits"),
        (lambda: fpsim.add(1.0, MASKED, "fp16"), "b"),
        (lambda: fpsim.sum(MASKED, "fp16"), "x"),
        (lambda: fpsim.array(MASKED, "fp16"), "x"),
    ],
)
def test_masked_arrays_are_refused_not_unmasked(call, name):
    # np.asarray(MASKED) is [1, 2, 3]: the masked 2 would silently count as data
    with pytest.raises(
        TypeError, match=rf"^{name} is or holds a numpy masked array.*\.filled\(value\).*\.compressed\(\)"
    ):
        call()
