"""fpsim.kernels against torch's own CPU kernels, bit for bit, and its fp32 fma against exact rationals."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fpsim import kernels
from fpsim.formats import BF16, FP16, FP32

torch = pytest.importorskip("torch")

FORMATS = {torch.float32: FP32, torch.float16: FP16, torch.bfloat16: BF16}
fp32_values = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(fp32_values, fp32_values, fp32_values)
def test_fma32_rounds_once_from_the_exact_value(a, b, c):
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    assume(abs(exact) <= Fraction(float(np.finfo(np.float32).max)))  # overflow is inf, checked elsewhere
    result = float(kernels.fma32(np.array([a]), np.array([b]), np.array([c]))[0])
    below = np.float32(float(exact))  # near the answer; the answer is checked against its neighbours too
    with np.errstate(over="ignore"):  # the neighbour of fp32's max is inf, and left out
        candidates = [float(np.nextafter(below, -np.inf)), float(below), float(np.nextafter(below, np.inf))]
    distances = [abs(Fraction(v) - exact) for v in candidates if np.isfinite(v)]
    best = min(distances)
    assert abs(Fraction(result) - exact) == best  # nearest; ties: the even one
    if distances.count(best) > 1:
        assert int(np.float32(result).view(np.int32)) % 2 == 0


def test_fma32_hard_case_where_float64_double_rounding_fails():
    """a·b + c lands just off a tie of fp32 by less than a float64 ulp: a plain float64 sum rounds it onto
    the tie and then to even, the wrong way; one rounding goes up."""
    a = b = 1 + 2.0**-12  # a·b = 1 + 2^-11 + 2^-24: exact in float64
    c = 2.0**-60
    result = kernels.fma32(np.array([a]), np.array([b]), np.array([c]))[0]
    assert result == 1 + 2.0**-11 + 2.0**-23  # 2^-24 + 2^-60 is past the midpoint: up


def batch(dtype, seed=0, n=64, c=64):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=generator) * 3 + 1).to(dtype)
    dy = (torch.randn(n, c, generator=generator) * 1e-2).to(dtype)
    gamma = torch.randn(c, generator=generator) * 0.1 + 1
    beta = torch.randn(c, generator=generator) * 0.1
    return x, dy, gamma, beta


@pytest.mark.parametrize(
    ("dtype", "param_dtype"),
    [(torch.float32, torch.float32), (torch.float16, torch.float32), (torch.bfloat16, torch.float32),
     (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16)],
)  # fmt: skip
@pytest.mark.parametrize("seed", [0, 1])
def test_batch_norm_matches_torchs_cpu_kernel(dtype, param_dtype, seed):
    x, dy, gamma, beta = batch(dtype, seed)
    norm = torch.nn.BatchNorm1d(x.shape[1]).to(param_dtype)
    with torch.no_grad():
        norm.weight.copy_(gamma), norm.bias.copy_(beta)
    inputs = x.clone().requires_grad_()
    out = norm(inputs)
    out.backward(dy)
    as64 = lambda t: t.detach().double().numpy()  # noqa: E731
    fmt, stats = FORMATS[dtype], FORMATS[param_dtype] if param_dtype == dtype else FP32
    threads = torch.get_num_threads()
    g, b = as64(norm.weight), as64(norm.bias)
    result, mean, inv_std = kernels.batch_norm_forward(as64(x), g, b, dtype == torch.float32, stats, threads)
    assert np.array_equal(kernels.to_format(result, fmt), as64(out))
    dx, dgamma, dbeta = kernels.batch_norm_backward(as64(dy), as64(x), mean, inv_std, g, dtype == torch.float32,
                                                    threads)  # fmt: skip
    assert np.array_equal(kernels.to_format(dx, fmt), as64(inputs.grad))
    assert np.array_equal(kernels.to_format(dgamma, stats), as64(norm.weight.grad))
    assert np.array_equal(kernels.to_format(dbeta, stats), as64(norm.bias.grad))


@pytest.mark.parametrize("dtype", FORMATS)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_step_matches_torchs_single_tensor_sgd(dtype, momentum):
    generator = torch.Generator().manual_seed(3)
    param = torch.nn.Parameter((torch.randn(4096, generator=generator) * 0.3).to(dtype))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=momentum, foreach=False)
    weight, buffer = param.detach().double().numpy().copy(), None
    for _ in range(3):
        param.grad = (torch.randn(4096, generator=generator) * 1e-2).to(dtype)
        grad = param.grad.double().numpy()
        optimizer.step()
        weight, buffer = kernels.sgd_step(weight, grad, buffer, 0.1, momentum, FORMATS[dtype])
        assert np.array_equal(weight, param.detach().double().numpy())
