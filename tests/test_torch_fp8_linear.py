"""fp8 linear layers: each GEMM is the product of the dequantized operands, checked against fpsim's NumPy codec
(e4m3/e5m2 rounding of x/scale in float64) and a float64 product; padding to multiples of 16 changes nothing; the
mode routes nn.Linear and direct F.linear calls. Runs on the CPU, whose torch._scaled_mm stands in for the GPU's."""

from __future__ import annotations

import numpy as np
import pytest

import fpsim

torch = pytest.importorskip("torch")

from fpsim.torch.fp8_linear import Fp8Linears, fp8_linear  # noqa: E402

MAX = {"fp8_e4m3": 448.0, "fp8_e5m2": 57344.0}


def dequantized(t: torch.Tensor, fmt: str) -> np.ndarray:
    """t's fp8 value times its scale, from fpsim's codec: scale = fl32(amax) / max in float32, codes rounded
    from t / scale (float32 division, as the GPU does) to nearest even."""
    values = t.detach().float().numpy()
    scale = np.float32(np.abs(values).max()) / np.float32(MAX[fmt])
    return fpsim.round((values / scale).astype(np.float64), fmt) * np.float64(scale)


def bf16(values: np.ndarray) -> np.ndarray:
    return fpsim.round(values, "bf16")


@pytest.mark.parametrize(("n", "k", "m"), [(10, 20, 7), (32, 64, 16), (3, 1, 5)])
def test_forward_and_backward_are_products_of_the_dequantized_operands(n, k, m):
    generator = torch.Generator().manual_seed(n * k * m)
    x = (torch.randn(n, k, generator=generator) * 3).requires_grad_()
    w = torch.randn(m, k, generator=generator).requires_grad_()
    grad = torch.randn(n, m, generator=generator)
    out = fp8_linear(x, w)
    out.backward(grad)
    arriving = grad.to(torch.bfloat16)  # autograd hands backward the gradient in the output's dtype
    xq, wq, gq = dequantized(x, "fp8_e4m3"), dequantized(w, "fp8_e4m3"), dequantized(arriving, "fp8_e5m2")
    # forward: fp32 sums of exact fp8 products, rounded once to bf16 (the fp32 sum's error is far below bf16's)
    reference = xq @ wq.T
    assert out.dtype == torch.bfloat16
    close = np.isclose(out.float().detach().numpy(), bf16(reference), rtol=2.0**-8, atol=1e-30)
    assert close.all()
    # backward: fp32 outputs, within a few fp32 ulps of the float64 products
    np.testing.assert_allclose(x.grad.numpy(), gq @ wq, rtol=2.0**-20, atol=1e-6 * np.abs(gq @ wq).max())
    np.testing.assert_allclose(w.grad.numpy(), gq.T @ xq, rtol=2.0**-20, atol=1e-6 * np.abs(gq.T @ xq).max())
    assert x.grad.dtype == w.grad.dtype == torch.float32


def test_a_batch_of_sequences_is_flattened_and_the_fp32_bias_added_in_bf16():
    """As autocast's linear: an fp32 bias does not promote the bf16 output to fp32."""
    x = torch.randn(4, 12, 32)
    w, b = torch.randn(16, 32), torch.randn(16, requires_grad=True)
    out = fp8_linear(x, w, b)
    assert out.shape == (4, 12, 16) and out.dtype == torch.bfloat16
    product = fp8_linear(x.reshape(48, 32), w).reshape(4, 12, 16)
    assert torch.equal(out, product + b.detach().to(torch.bfloat16))  # one bf16 rounding of the bf16 sum
    out.float().sum().backward()
    assert b.grad.dtype == torch.float32 and torch.equal(b.grad, torch.full((16,), 48.0))


def test_an_all_zero_tensor_gives_zeros_not_nan():
    out = fp8_linear(torch.zeros(16, 16), torch.randn(16, 16))
    assert torch.equal(out, torch.zeros(16, 16, dtype=torch.bfloat16))


def test_the_mode_routes_module_and_functional_linears_and_nothing_else():
    seen = []
    layer = torch.nn.Linear(32, 16)
    x = torch.randn(8, 32)
    with Fp8Linears():
        out = layer(x)
        direct = torch.nn.functional.linear(x, layer.weight, layer.bias)
        seen.append(torch.relu(out))  # other functions pass through untouched
    expected = fp8_linear(x, layer.weight, layer.bias)
    assert torch.equal(out, expected) and torch.equal(direct, expected)
    assert not torch.equal(out, layer(x))  # outside the mode: fp32 again
    assert torch.equal(seen[0], torch.relu(expected))
