"""fpsim.torch.matmul: bit for bit fpsim.matmul for every matrix unit and accumulation preset on CPU tensors
(subnormals, cancellations, wide exponent spreads, inf and NaN, K of one group and several, promote_every, row
chunks), the H200's measured probes, dtypes and shapes, and bad input."""

import importlib

import numpy as np
import pytest
import torch
from oracle import same_bits

import fpsim
import fpsim.torch as ft
from fpsim.formats import get_format
from fpsim.matrix_unit import MATRIX_UNITS

UNITS = sorted(MATRIX_UNITS)
KERNEL = importlib.import_module("fpsim.torch.matmul")  # the module: fpsim.torch.matmul is the function
M, N = 6, 5


def spread(fmt_name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values of both signs from below the format's least subnormal to its largest binade, with zeros."""
    fmt = get_format(fmt_name)
    exponents = rng.integers(fmt.emin - fmt.nmant - 1, fmt.emax, shape)
    values = rng.choice([-1.0, 1.0], shape) * (1 + rng.random(shape)) * 2.0 ** exponents.astype(np.float64)
    return np.where(rng.random(shape) < 0.1, 0.0, values)


def operands(fmt_name: str, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Wide spreads, with columns whose products cancel exactly and a narrow-range block that carries."""
    rng = np.random.default_rng(seed)
    a, b = spread(fmt_name, (M, k), rng), spread(fmt_name, (k, N), rng)
    if k >= 2:  # a_0·b_0 + a_1·b_1 = 0 exactly: cancellation below the largest exponent
        a[:, 1], b[1] = a[:, 0], -b[0]
    a[0], b[:, 0] = rng.random(k) + 1, rng.random(k) + 1  # similar magnitudes: carries out of the top bit
    return a, b


def assert_same(ours: torch.Tensor, reference: np.ndarray) -> None:
    got = ours.numpy()
    assert got.shape == reference.shape
    assert same_bits(got, reference).all(), f"{np.count_nonzero(~same_bits(got, reference))} results differ"


@pytest.mark.parametrize("name", UNITS)
@pytest.mark.parametrize("groups", [1, 3.5])  # K of one group, and of several with a partial last one
def test_matrix_units_equal_numpy(name, groups):
    unit = MATRIX_UNITS[name]
    k = int(unit.group * groups)
    a, b = operands(unit.inputs[0], k, seed=k + len(name))
    for out in ("fp32", "fp16", "bf16"):
        reference = fpsim.matmul(a, b, model=name, out=out)
        assert_same(ft.matmul(torch.from_numpy(a), torch.from_numpy(b), name, out=out), reference)


@pytest.mark.parametrize("name", ["h100_fp8_e4m3", "h100_fp16", "a100_tf32", "ada_fp8_e5m2"])
@pytest.mark.parametrize("promote_every", [1, 20, 64])  # inside a group, across groups' edges, whole groups
def test_promote_every_equals_numpy(name, promote_every):
    a, b = operands(MATRIX_UNITS[name].inputs[0], 150, seed=promote_every)
    for out in ("fp32", "bf16"):
        reference = fpsim.matmul(a, b, model=name, out=out, promote_every=promote_every)
        got = ft.matmul(torch.from_numpy(a), torch.from_numpy(b), name, out=out, promote_every=promote_every)
        assert_same(got, reference)


def test_special_values_equal_numpy():
    """inf - inf and 0·inf are NaN (+NaN), inf survives, a finite fp32 result past fp16's max is inf in fp16."""
    a = np.array([[np.inf, 1, 2, 3, 0], [np.nan, 1, 1, 1, 1], [6e4, 6e4, 6e4, 1, 1], [0, 1, 1, 1, np.inf]] * 2)
    a = np.vstack([a, [6e4, 0, 6e4, 6e4, 0]])  # 0·(-inf): NaN
    b = np.array([[1.0], [-np.inf], [3], [4], [1]]) * np.array([[1.0, -1.0]])
    for name in ["v100_fp16", "h100_fp16", "fp16_fp32acc", "fp32"]:
        for out in ("fp32", "fp16"):
            reference = fpsim.matmul(a, b, model=name, out=out)
            assert_same(ft.matmul(torch.from_numpy(a), torch.from_numpy(b), name, out=out), reference)
    big = np.full((1, 20), 6e4)  # 20·6e4·3750 = 4.5e9: finite in the fp32 chain, inf once rounded to fp16
    assert_same(
        ft.matmul(torch.from_numpy(big), torch.from_numpy(big.T / 16), "h100_fp16", out="fp16"), np.array([[np.inf]])
    )
    assert fpsim.matmul(big, big.T / 16, model="h100_fp16", out="fp16")[0, 0] == np.inf


@pytest.mark.parametrize("name", sorted(fpsim.MODELS))
def test_accumulation_models_equal_numpy(name):
    rng = np.random.default_rng(len(name))
    a, b = spread("fp16", (M, 40), rng), spread("bf16", (40, N), rng)
    a[:, 1], b[1] = a[:, 0], -b[0]
    assert_same(ft.matmul(torch.from_numpy(a), torch.from_numpy(b), name), fpsim.matmul(a, b, model=name))
    fp16 = get_format("fp16")
    rounded = fpsim.AccumulationModel("rounded_products", fp16, fp16, fp16, products="rounded")
    assert_same(ft.matmul(torch.from_numpy(a), torch.from_numpy(b), rounded), fpsim.matmul(a, b, model=rounded))


def test_accumulation_rounds_once_per_addition():
    """(2^24 + 2) + (1 + 2^-23)(1 - 2^-23) = 2^24 + 3 - 2^-46 lies below the fp32 midpoint 2^24 + 3: it rounds to
    2^24 + 2. A float64 sum first would land on the midpoint and tie to even, 2^24 + 4 (double rounding)."""
    a = torch.tensor([2.0**24 + 2, 1 + 2.0**-23], dtype=torch.float64)
    b = torch.tensor([1.0, 1 - 2.0**-23], dtype=torch.float64)
    assert float(ft.matmul(a, b, "fp32")) == 2.0**24 + 2 == fpsim.dot(a.numpy(), b.numpy(), model="fp32")


def test_row_chunks_equal_one_pass(monkeypatch):
    a, b = operands("fp8_e4m3", 70, seed=3)
    whole = ft.matmul(torch.from_numpy(a), torch.from_numpy(b), "h100_fp8_e4m3", promote_every=64)
    monkeypatch.setattr(KERNEL, "_ELEMENTS_PER_STEP", 1)  # one row per step
    assert_same(ft.matmul(torch.from_numpy(a), torch.from_numpy(b), "h100_fp8_e4m3", promote_every=64), whole.numpy())


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "shape"), [((3, 40), (40, 2), (3, 2)), ((40,), (40, 2), (2,)), ((3, 40), (40,), (3,))]
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_shapes_and_dtypes(a_shape, b_shape, shape, dtype):
    """numpy.matmul's 1-D rules; float64 operands give float64 results, the others float32."""
    rng = np.random.default_rng(0)
    a, b = torch.from_numpy(rng.standard_normal(a_shape)).to(dtype), torch.from_numpy(rng.standard_normal(b_shape))
    ours = ft.matmul(a, b.to(dtype), "h100_fp16")
    assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert ours.shape == shape
    assert_same(ours.double(), fpsim.matmul(a.double().numpy(), b.to(dtype).double().numpy(), model="h100_fp16"))


def test_vectors_give_a_scalar_tensor():
    a = torch.tensor([1.0, 2.0**-24, -1.0])
    assert ft.matmul(a, torch.ones(3)).shape == ()


def test_bad_input():
    x = torch.ones(4, 4)
    with pytest.raises(ValueError, match=r"unknown model 'h900_fp16'.*h100_fp8_e4m3.*fp16_fp32acc"):
        ft.matmul(x, x, "h900_fp16")
    with pytest.raises(TypeError, match="model must be"):
        ft.matmul(x, x, 3)
    with pytest.raises(ValueError, match=r"a's last axis \(4\) must match b's first \(3\)"):
        ft.matmul(x, torch.ones(3, 4))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        ft.matmul(torch.ones(2, 4, 4), x)
    with pytest.raises(ValueError, match="K = 0"):
        ft.matmul(torch.ones(2, 0), torch.ones(0, 2))
    with pytest.raises(TypeError, match="a must be a floating tensor"):
        ft.matmul(torch.ones(4, 4, dtype=torch.int32), x)
    with pytest.raises(TypeError, match="b must be a torch tensor"):
        ft.matmul(x, np.ones((4, 4)))
    with pytest.raises(ValueError, match="out must be one of fp32, fp16, bf16"):
        ft.matmul(x, x, "h100_fp16", out="fp8_e4m3")
    with pytest.raises(ValueError, match="promote_every needs a matrix-unit model"):
        ft.matmul(x, x, "fp32", promote_every=128)
    with pytest.raises(ValueError, match="promote_every must be an int between 1 and"):
        ft.matmul(x, x, "h100_fp8_e4m3", promote_every=0)
    pairwise = fpsim.AccumulationModel("pairwise_fp32", *(get_format("fp32"),) * 3, order="pairwise")
    with pytest.raises(ValueError, match=r"order='sequential' only.*use fpsim\.matmul"):
        ft.matmul(x, x, pairwise)


def test_no_rows_give_an_empty_result_and_numpy_ints_count_as_in_numpy():
    assert tuple(ft.matmul(torch.ones(0, 3), torch.ones(3, 2), "h100_fp16").shape) == (0, 2)
    ones = torch.ones(2, 64)
    assert bool((ft.matmul(ones, ones.T, "h100_fp16", promote_every=np.int64(32)) == 64).all())
